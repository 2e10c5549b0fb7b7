"""Snapshots of the player's key screens (pytest-textual-snapshot; `--snapshot-update` to renew)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from player.app import BrowserScreen, PlayerApp, Recording, ReplayScreen
from recorder.index import SessionRow
from tests.support.casts import SESSION, make_cast


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """The browser shows local times: pin the zone so the snapshots do not depend on it."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def replay_app(tmp_path: Path) -> PlayerApp:
    path = tmp_path / "session.cast"
    path.write_bytes(make_cast(SESSION))
    return PlayerApp(ReplayScreen(Recording.open(path, None)))


def test_replay_at_a_marker(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(replay_app(tmp_path), terminal_size=(100, 24),
                        press=["right_square_bracket", "right_square_bracket"])


def test_replay_in_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(replay_app(tmp_path), terminal_size=(80, 24), press=["end"])


def test_session_browser(snap_compare) -> None:  # type: ignore[no-untyped-def]
    rows = [SessionRow(id=f"s{i}", name="n", user=user, login="root", target=target, client=None,
                       kind="shell", command=None, started=1_795_000_000 + i * 3600, ended=None,
                       duration=120.0 * i, bytes_in=0, bytes_out=0, exit_status=0, exit_signal=None,
                       markers=markers, location=None, lines=None, chain=None, state="closed", error=None,
                       verification="verified")
            for i, (user, target, markers) in enumerate([("alice", "db-1", {"denied": 1}),
                                                         ("bob", "web-1", {"upload": 2}),
                                                         ("alice", "db-2", {})])]
    assert snap_compare(PlayerApp(BrowserScreen(rows, lambda row: None)), terminal_size=(100, 12))  # type: ignore[arg-type, return-value]
