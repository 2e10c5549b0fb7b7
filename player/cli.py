"""`bastion play` and `bastion review`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import click

from player.keyframes import cache_for
from recorder.asciicast import CastFormatError
from recorder.chain import session_of_path
from recorder.index import RecordingIndex, SessionRow
from recorder.signing import RecordingVerifier


class Setup(Protocol):
    """Where a bastion keeps its recordings and keys (its config is one)."""

    @property
    def recordings_dir(self) -> Path: ...
    @property
    def keys_dir(self) -> Path: ...


def _verifier(config: Setup | None) -> RecordingVerifier | None:
    if config is None:
        return None
    try:
        return RecordingVerifier.load(config.keys_dir / "recording_key.pub")
    except (OSError, ValueError):
        return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def register(main: click.Group, load: Callable[[Path], Setup]) -> None:
    config_opt = click.option(
        "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
        help="The bastion's config: finds recordings by id and verifies them.")

    @main.command()
    @config_opt
    @click.argument("ref")
    @click.option("--follow", is_flag=True, help="Keep up with a session still being recorded.")
    @click.option("--idle-cap", default=2.0, show_default=True,
                  help="Longest pause shown, in seconds (0: none).")
    def play(config_path: Path | None, ref: str, follow: bool, idle_cap: float) -> None:
        """Replay REF (a session id, or a .cast file from any asciinema) in the terminal UI."""
        from player.app import PlayerApp, Recording, ReplayScreen

        config = load(config_path) if config_path else None
        path, session = Path(ref), None
        index: RecordingIndex | None = None
        if config is not None and (config.recordings_dir / "index.db").exists():
            index = RecordingIndex(config.recordings_dir / "index.db")
        if not path.exists():
            if index is None:
                raise click.ClickException(f"{ref}: no such file (give -c CONFIG to open a session id)")
            row = index.get(ref)
            if row is None or not row.location:
                raise click.ClickException(f"no recording with id {ref!r}")
            path, session = Path(row.location), row.id
        elif config is not None:
            session = session_of_path(path.name)  # a bastion recording's name is its session id
        verifier = _verifier(config)

        cache = cache_for(path, config.recordings_dir if config else None)

        def open_recording() -> Recording:
            row = index.get(session) if index is not None and session is not None else None
            if row is not None and not (row.location and _same(Path(row.location), path)):
                row = None
            closed = row is not None and row.state == "closed"
            return Recording.open(path, verifier, idle_cap=idle_cap or None,
                                  expected_lines=row.lines if closed and row else None,
                                  expected_head=row.chain if closed and row else None,
                                  expected_session=session, live=row is not None and row.state == "live",
                                  unfinished=row.error if row is not None else None,
                                  cache=None if follow else cache)

        try:
            recording = open_recording()
        except (OSError, CastFormatError) as exc:
            raise click.ClickException(f"{path}: {exc}") from None

        def refresh() -> Recording | None:
            try:
                return open_recording()
            except (OSError, CastFormatError):
                return None

        PlayerApp(ReplayScreen(recording, follow=refresh if follow else None)).run()

    @main.command()
    @click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                  required=True, help="The bastion's config.")
    @click.option("--limit", default=1000, show_default=True)
    def review(config_path: Path, limit: int) -> None:
        """Browse recorded sessions (filter as you type; Enter replays one)."""
        from player.app import BrowserScreen, PlayerApp, Recording

        config = load(config_path)
        index_path = config.recordings_dir / "index.db"
        if not index_path.exists():
            raise click.ClickException(f"no recordings index at {index_path}")
        rows = RecordingIndex(index_path).search(limit=limit)
        verifier = _verifier(config)

        def opener(row: SessionRow) -> Recording:
            closed = row.state == "closed"
            path = Path(row.location or "")
            return Recording.open(path, verifier,
                                  expected_lines=row.lines if closed else None,
                                  expected_head=row.chain if closed else None,
                                  expected_session=row.id, live=row.state == "live", unfinished=row.error,
                                  cache=cache_for(path, config.recordings_dir) if closed else None)

        PlayerApp(BrowserScreen(rows, opener)).run()
