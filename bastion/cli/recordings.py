"""`bastion recordings ...`: list, verify and prune recordings."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg

from bastion.cli.common import failure
from bastion.config import BastionConfig
from bastion.core.durations import parse_duration
from bastion.errors import ConfigError
from recorder.asciicast import CastFormatError, load_cast
from recorder.chain import Verification, session_of_path, verify
from recorder.index import RecordingIndex, SessionRow, index_location, index_missing
from recorder.signing import RecordingVerifier
from recorder.storage import LocalDirectoryStore


def parse_when(text: str) -> float:
    """`2026-11-28`, `2026-11-28T14:30`, or a duration ago like `2h` or `7d`."""
    try:
        return time.time() - parse_duration(text)
    except ConfigError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a date (2026-11-28[T14:30]) or an age (2h, 7d)") from None


def open_index(config: BastionConfig) -> RecordingIndex:
    location = index_location(config.recordings_dir, config.state_url)
    if index_missing(location):
        raise click.ClickException(f"no recordings index at {location} (has the bastion recorded anything?)")
    return RecordingIndex(location)


def _verifier(config: BastionConfig) -> RecordingVerifier:
    path = config.keys_dir / "recording_key.pub"
    try:
        return RecordingVerifier.load(path)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the recording key {path}: {exc}") from None


def _location(config: BastionConfig, ref: str) -> Path:
    """A recording's file from its session id."""
    row = open_index(config).get(ref)
    if row is None or not row.location:
        raise click.ClickException(f"no recording with id {ref!r} in the index")
    return Path(row.location)


def verify_recording(config: BastionConfig, ref: str) -> tuple[Verification, SessionRow | None, str]:
    """Verify by session id (cross-checked against the index) or by the .cast path (whose name
    is the session id the header and the signatures must name; the index is asked too)."""
    row: SessionRow | None = None
    path = Path(ref)
    if not (path.suffix == ".cast" or path.exists()):
        index = open_index(config)
        row = index.get(ref)
        if row is None:
            raise click.ClickException(f"no recording with id {ref!r} in the index")
        path = Path(row.location or "")
        session = row.id
    else:
        session = session_of_path(path.name)
        location = index_location(config.recordings_dir, config.state_url)
        if not index_missing(location):
            found = RecordingIndex(location).get(session)
            row = found if found and found.location and _same(Path(found.location), path) else None
    try:
        cast = path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    sig_path = path.with_name(path.name + ".sig")
    signatures = sig_path.read_bytes() if sig_path.exists() else None
    closed = row is not None and row.state == "closed"
    result = verify(cast, signatures, _verifier(config),
                    expected_lines=row.lines if closed and row else None,
                    expected_head=row.chain if closed and row else None,
                    expected_session=session, live=row is not None and row.state == "live",
                    unfinished=row.error if row is not None else None)
    return result, row, str(path)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def build_keyframes(config: BastionConfig, refs: tuple[str, ...], *, everything: bool) -> None:
    from player.keyframes import cache_for
    from player.replay import Timeline

    if everything:
        refs = tuple(r.location for r in open_index(config).search(limit=1_000_000)
                     if r.state == "closed" and r.location)
    if not refs:
        raise click.ClickException("name recordings (ids or paths) or pass --all")
    built = 0
    for ref in refs:
        path = Path(ref) if Path(ref).exists() else _location(config, ref)
        cache = cache_for(path, config.recordings_dir)
        try:
            cast = load_cast(path.read_bytes())
        except (OSError, CastFormatError) as exc:
            click.echo(f"{path}: skipped ({exc})", err=True)
            continue
        if everything and cache.load(path, len(cast.events)) is not None:
            continue
        timeline = Timeline(cast)
        timeline.screen_after(len(cast.events))
        if cache.save(path, len(cast.events), timeline.keyframes) is None:
            raise click.ClickException(f"cannot write keyframes for {path} to {cache.directory}")
        built += 1
    click.echo(f"built keyframes for {built} recordings")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "live"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _markers(counts: dict[str, int]) -> str:
    return ",".join(f"{kind}={n}" for kind, n in sorted(counts.items())) or "-"


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.group()
    def recordings() -> None:
        """Session recordings: list, verify, prune."""

    @recordings.command("list")
    @config_option
    @click.option("--user", help="Only this bastion user's sessions.")
    @click.option("--target", help="Only sessions to this target.")
    @click.option("--since", help="Started at or after: 2026-11-28, 2026-11-28T14:30, or an age like 2h.")
    @click.option("--until", help="Started before (same forms as --since).")
    @click.option("--marker", help="Only sessions with at least one marker of this kind (e.g. upload).")
    @click.option("--limit", default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    def recordings_list(config_path: Path, user: str | None, target: str | None, since: str | None,
                        until: str | None, marker: str | None, limit: int, as_json: bool) -> None:
        """List recorded sessions, newest first."""
        config = load(config_path)
        rows = open_index(config).search(
            user=user, target=target, since=parse_when(since) if since else None,
            until=parse_when(until) if until else None, marker=marker, limit=limit)
        if as_json:
            for row in rows:
                click.echo(json.dumps(row.as_dict(), sort_keys=True))
            return
        click.echo(f"{'ID':<20} {'STARTED':<19} {'USER':<12} {'LOGIN@TARGET':<24} {'DUR':>6} "
                   f"{'EXIT':>5} {'STATE':<8} MARKERS")
        for row in rows:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started))
            exit_text = row.exit_signal or ("" if row.exit_status is None else str(row.exit_status))
            click.echo(f"{row.id:<20} {started:<19} {row.user:<12} {row.login + '@' + row.target:<24} "
                       f"{_age(row.duration):>6} {exit_text:>5} {row.state:<8} {_markers(row.markers)}")

    @recordings.command("verify")
    @config_option
    @click.argument("ref")
    def recordings_verify(config_path: Path, ref: str) -> None:
        """Check REF (a session id or a .cast path) against its signed hash chain.

        Prints verified, live (still being recorded), incomplete (intact up to the last
        checkpoint) or TAMPERED at event N; exits 1 when tampered or unsigned. The header and the
        signatures must name the session the file is named for."""
        config = load(config_path)
        result, row, path = verify_recording(config, ref)
        click.echo(f"{path}: {result.describe()}")
        if row is not None:
            try:
                open_index(config).session_updated(row.id, verification=result.state)
            except (sqlite3.Error, psycopg.Error) as exc:  # a full disk, say: the verdict above stands
                click.echo(f"(the result could not be noted in the index: {exc})", err=True)
        if not result.ok:
            raise SystemExit(1)

    @recordings.command("keyframes")
    @config_option
    @click.argument("refs", nargs=-1)
    @click.option("--all", "everything", is_flag=True, help="Every finished recording without keyframes yet.")
    def recordings_keyframes(config_path: Path, refs: tuple[str, ...], everything: bool) -> None:
        """Build the player's keyframes for REFS (ids or paths) now, so they open and seek at once.

        The player builds and caches them on first open anyway; this does it ahead (from cron,
        say, at low priority: `nice bastion recordings keyframes --all`)."""
        build_keyframes(load(config_path), refs, everything=everything)

    @recordings.command("prune")
    @config_option
    @click.option("--older-than", required=True, help="Age, e.g. 90d.")
    @click.option("--dry-run", is_flag=True, help="Say what would go, remove nothing.")
    def recordings_prune(config_path: Path, older_than: str, dry_run: bool) -> None:
        """Remove recordings (files and index rows together) older than an age."""
        config = load(config_path)
        try:
            cutoff = time.time() - parse_duration(older_than, where="--older-than")
        except ConfigError as exc:
            raise failure(exc) from None
        index = open_index(config)
        store = LocalDirectoryStore(config.recordings_dir)
        rows = index.older_than(cutoff)
        for row in rows:
            if not dry_run:
                store.delete(row.name)
                index.delete(row.id)
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {len(rows)} recordings older than {older_than}")
