"""`bastion play` and `bastion review`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from player.keyframes import KeyframeCache, cache_for
from recorder.asciicast import CastFormatError
from recorder.chain import session_of_path
from recorder.index import RecordingIndex, SessionRow, index_location, index_missing
from recorder.signing import RecordingVerifier

if TYPE_CHECKING:
    from player.app import BrowserScreen, LiveEntry, Recording


class Setup(Protocol):
    """Where a bastion keeps its recordings and keys (its config is one)."""

    @property
    def recordings_dir(self) -> Path: ...
    @property
    def keys_dir(self) -> Path: ...
    @property
    def state_url(self) -> str | None: ...  # the index is there when set


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


def _reporter(fd: int | None) -> Callable[[str], None]:
    """Writes each session id opened, one a line, to `fd` (whoever started the browser logs who
    watched what); nothing without one."""
    if fd is None:
        return lambda session: None
    out = os.fdopen(fd, "w", buffering=1)
    return lambda session: print(session, file=out)


class Registry(Protocol):
    """The bastion's live-session registry, as the browser reads and asks it."""

    def sessions(self, user: str | None) -> list[LiveEntry]: ...
    def kill(self, session: str, by: str, reason: str) -> str: ...  # raises LiveError; waits for the end


def opening(index: RecordingIndex | None, path: Path, session: str | None,
            verifier: RecordingVerifier | None, *, follow: bool = False, idle_cap: float | None = 2.0,
            cache: KeyframeCache | None = None) -> Recording:
    """A recording started for the replay screen: its header read now, the rest read (and
    verified as the index says it stands) once the screen is drawn; `follow`: kept up with as it
    grows, its banner going from live to ended with the index's state."""
    from player.app import Recording
    from player.follow import IndexState, Loader

    def state() -> IndexState | None:
        row = index.get(session) if index is not None and session is not None else None
        if row is None or not (row.location and _same(Path(row.location), path)):
            return None
        return IndexState(row.state, row.lines, row.chain, row.error)

    loader = Loader(path, verifier, follow=follow, state=state, expected_session=session)
    return Recording.start(loader, idle_cap=idle_cap, cache=None if follow else cache)


@dataclass
class LiveView:
    """The browser's live view: what `registry` lists (only `only_user`'s if set), each followed
    from its recording, ended as `by` when `may_kill`."""

    registry: Registry
    index: RecordingIndex
    verifier: RecordingVerifier | None
    by: str
    may_kill: bool
    only_user: str | None = None
    report: Callable[[str], None] = lambda line: None

    def sessions(self) -> list[LiveEntry]:
        return self.registry.sessions(self.only_user)

    def follow(self, session: str) -> Recording:
        from player.app import LiveError

        row = self.index.get(session)
        if row is None or not row.location or (self.only_user is not None and row.user != self.only_user):
            raise LiveError("no recording of it (yet)")
        self.report(row.id)
        return opening(self.index, Path(row.location), row.id, self.verifier, follow=True)

    def kill(self, session: str, reason: str) -> str:
        from player.app import LiveError

        if not self.may_kill:
            raise LiveError("you may not end sessions (admins only)")
        if self.only_user is not None and not any(e.id == session for e in self.sessions()):
            raise LiveError("not one of your sessions")
        said = self.registry.kill(session, self.by, reason)
        self.report(f"kill {session} {reason}")
        return said


def register(main: click.Group, load: Callable[[Path], Setup],
             registry: Callable[[Setup], Registry] | None = None) -> None:
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
        from player.app import PlayerApp, ReplayScreen

        config = load(config_path) if config_path else None
        path, session = Path(ref), None
        index: RecordingIndex | None = None
        location = index_location(config.recordings_dir, config.state_url) if config is not None else None
        if location is not None and not index_missing(location):
            index = RecordingIndex(location)
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
        try:
            recording = opening(index, path, session, verifier, follow=follow, idle_cap=idle_cap or None,
                                cache=cache)
        except (OSError, CastFormatError) as exc:
            raise click.ClickException(f"{path}: {exc}") from None

        PlayerApp(ReplayScreen(recording, follow=follow)).run()

    @main.command()
    @click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                  required=True, help="The bastion's config.")
    @click.option("--limit", default=1000, show_default=True)
    @click.option("--only-user", hidden=True, help="List only this user's sessions.")
    @click.option("--report-fd", type=int, hidden=True,
                  help="Write the id of each session opened, one a line, to this descriptor.")
    @click.option("--by", default=lambda: os.environ.get("USER", "operator"),
                  help="Who ends a live session from the live view (the user reads it).")
    @click.option("--no-kill", is_flag=True, hidden=True, help="The live view ends no session.")
    def review(config_path: Path, limit: int, only_user: str | None, report_fd: int | None, by: str,
               no_kill: bool) -> None:
        """Browse recorded sessions (filter as you type; Enter replays one). Sessions going on now
        are listed at the top: Enter follows one, k ends it with a reason."""
        from player.app import PlayerApp

        config = load(config_path)
        app = review_app(config, limit=limit, only_user=only_user, report=_reporter(report_fd),
                         registry=registry(config) if registry is not None else None, by=by,
                         may_kill=not no_kill)
        if app is None:
            raise click.ClickException(f"no recordings index at "
                                       f"{index_location(config.recordings_dir, config.state_url)}")
        PlayerApp(app).run()


def review_app(config: Setup, *, limit: int = 1000, only_user: str | None = None,
               report: Callable[[str], None] = lambda line: None, registry: Registry | None = None,
               by: str = "operator", may_kill: bool = False) -> BrowserScreen | None:
    """The browser `bastion review` shows (None without a recordings index): the recordings
    `only_user` may see and, with a registry, the live sessions on top."""
    from player.app import BrowserScreen

    location = index_location(config.recordings_dir, config.state_url)
    if index_missing(location):
        return None
    index = RecordingIndex(location)
    rows = index.search(user=only_user, limit=limit)
    verifier = _verifier(config)

    def opener(row: SessionRow) -> Recording:
        report(row.id)
        path = Path(row.location or "")
        return opening(index, path, row.id, verifier,
                       cache=cache_for(path, config.recordings_dir) if row.state == "closed" else None)

    live = (LiveView(registry, index, verifier, by=by, may_kill=may_kill, only_user=only_user, report=report)
            if registry is not None else None)
    return BrowserScreen(rows, opener, live)
