"""The replay screen following a recording the real recorder is writing (its thread appends to the
file on disk, the index says live, then closed), and opening a recording drawn before it is read:
the real app, driven by Textual's Pilot."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.widgets import OptionList, Static

from player.app import PlayerApp, Recording, ReplayScreen, TerminalView
from player.cli import opening
from recorder.asciicast import load_cast
from recorder.index import RecordingIndex
from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder, SessionRecording
from tests.support.lab import eventually, until

SIZE = (140, 30)


@dataclass
class Writing:
    recorder: Recorder
    index: RecordingIndex
    key: RecordingKey
    root: Path

    def open(self, session: str) -> tuple[SessionRecording, Path]:
        rec = self.recorder.open(session_id=session, width=60, height=12, term=None, command=None,
                                 metadata={"session_id": session},
                                 index_fields={"user": "alice", "login": "root", "target": "db-1"})
        row = eventually(lambda: self.index.get(session), "the index row the writer adds")
        assert row.location
        return rec, Path(row.location)


@pytest.fixture
def writing(tmp_path: Path) -> Iterator[Writing]:
    root = tmp_path / "recordings"
    root.mkdir(mode=0o700)
    store = LocalDirectoryStore(root)
    store.prepare()
    index = RecordingIndex(root / "index.db")
    key = RecordingKey.generate()
    recorder = Recorder(store, index, key, flush_interval=0.01, checkpoint_interval=0.05)
    try:
        yield Writing(recorder, index, key, root)
    finally:
        recorder.stop()
        index.close()


async def wait(probe: Callable[[], object], what: str) -> None:
    await until(probe, what, timeout=60)  # a deadline for a loaded machine, not a figure


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def banner(app: PlayerApp) -> str:
    return str(app.screen.query_one("#banner", Static).content)


def shown(app: PlayerApp) -> str:
    return str(app.screen.query_one(TerminalView).content)


async def test_following_shows_what_the_recorder_appends_then_the_end(writing: Writing) -> None:
    rec, path = writing.open("f1")
    rec.output(b"first line\r\n")
    recording = opening(writing.index, path, "f1", writing.key, follow=True)
    screen = ReplayScreen(recording, follow=True)
    app = PlayerApp(screen)
    async with app.run_test(size=SIZE):
        await wait(lambda: "first line" in shown(app) and "LIVE - session f1" in banner(app), "the live session")
        timeline = screen.timeline
        for i in range(5):
            rec.output(f"appended {i}\r\n".encode())
            rec.marker("command", f"step {i}")
            await wait(lambda i=i: f"appended {i}" in shown(app), f"line {i} followed")  # type: ignore[misc]
        await wait(lambda: screen.query_one("#markers", OptionList).option_count == 5, "the markers, as they came")
        assert screen.timeline is timeline  # taken in, not read again from the start
        assert "first line" in shown(app)
        await wait(lambda: "intact up to event 11" in banner(app), "the checkpoints checked as they come")
        rec.close(exit_status=0)
        await wait(lambda: "ENDED - f1.cast: verified, session f1" in banner(app), "the end, verified")
        whole = load_cast(path.read_bytes())
        assert len(screen.timeline.cast.events) == len(whole.events)
        assert screen.position == screen.timeline.duration
        assert screen.recording.loader is not None and screen.recording.loader.tail.offset == path.stat().st_size


async def test_a_corrupt_line_appended_is_named_and_what_was_shown_stays(writing: Writing) -> None:
    rec, path = writing.open("f2")
    rec.output(b"before the bad line\r\n")
    app = PlayerApp(ReplayScreen(opening(writing.index, path, "f2", writing.key, follow=True), follow=True))
    async with app.run_test(size=SIZE):
        await wait(lambda: "before the bad line" in shown(app), "the live session")
        lines = path.read_bytes().count(b"\n")
        append(path, b'[1.0, "o", "forged\\r\\n"\n')  # someone writes into the recording
        await wait(lambda: f"f2.cast: line {lines + 1}: not JSON" in banner(app), "the bad line named")
        assert f"showing the {lines} lines before it" in banner(app)
        rec.output(b"after the bad line\r\n")
        await wait(lambda: b"after the bad line" in path.read_bytes(), "the recorder writing on")
        assert "before the bad line" in shown(app) and "after the bad line" not in shown(app)
        rec.close(exit_status=0)
        # The index says it closed: the whole file is verified as it is, the bad line in it.
        await wait(lambda: "TAMPERED" in banner(app), "the verdict on the file")
        assert f"line {lines + 1}: not JSON" in banner(app) and "before the bad line" in shown(app)


@pytest.mark.parametrize("how", ["truncated", "replaced"])
async def test_a_recording_truncated_or_replaced_while_followed_is_said(writing: Writing, how: str) -> None:
    rec, path = writing.open(f"f3{how[0]}")
    rec.output(b"shown before\r\n")
    name = path.name
    app = PlayerApp(ReplayScreen(opening(writing.index, path, path.stem, writing.key, follow=True), follow=True))
    async with app.run_test(size=SIZE):
        await wait(lambda: "shown before" in shown(app), "the live session")
        if how == "truncated":
            os.truncate(path, 10)
            said = f"{name} was TRUNCATED while being read: it is now 10 bytes"
        else:
            other = path.with_name("other.cast")
            other.write_bytes(path.read_bytes() + b'[9.0, "o", "forged\\r\\n"]\n')
            other.replace(path)
            said = f"{name} was REPLACED by another file while being read"
        await wait(lambda: said in banner(app), "said")
        assert "shown before" in shown(app) and "forged" not in shown(app)
        assert "tampered" in app.screen.query_one("#banner", Static).classes
    rec.close(exit_status=0)


def closed_recording(writing: Writing, session: str, events: int) -> Path:
    rec, path = writing.open(session)
    for i in range(events):
        rec.output(f"\x1b[3{i % 7}mline {i} of a longer recording\x1b[0m\r\n".encode())
    rec.close(exit_status=0)
    until_closed = writing.index.get(session)
    assert until_closed is not None
    return path


async def test_opening_draws_first_and_says_verified_only_once_it_is(writing: Writing) -> None:
    path = closed_recording(writing, "o1", 3000)
    await wait(lambda: (row := writing.index.get("o1")) is not None and row.state == "closed", "closed")
    for name, data in (("o1", path.read_bytes()), ("o2", path.read_bytes().replace(b"line 2000 ", b"line 2OOO "))):
        copy = path.with_name(f"{name}.cast")
        if name != "o1":
            copy.write_bytes(data)
            copy.with_name(f"{name}.cast.sig").write_bytes(path.with_name("o1.cast.sig").read_bytes())
        recording = opening(None, copy, "o1", writing.key)
        loader = recording.loader
        assert loader is not None
        loader.chunk = 8192  # many reads: each one waits for the gate
        gate = threading.Event()
        read = loader.poll

        def gated(limit: int | None = None, read=read, gate=gate) -> object:  # type: ignore[no-untyped-def]
            gate.wait(60)
            return read(limit)

        loader.poll = gated  # type: ignore[method-assign]
        screen = ReplayScreen(recording)
        app = PlayerApp(screen)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await pilot.pause()
                # Drawn with the header and the first read only: no verdict yet, and none claimed.
                assert f"{name}.cast: checking its signatures..." in banner(app)
                assert "unverified" in app.screen.query_one("#banner", Static).classes
                assert 0 < len(screen.timeline.cast.events) < 3000  # the first read's
                assert "line 0 of a longer" not in shown(app)  # the screen at 0 s: nothing yet
                gate.set()
                expected = "verified, session o1" if name == "o1" else "TAMPERED at event"
                await wait(lambda: expected in banner(app), "the verdict")  # noqa: B023
                await wait(lambda: not screen._loading, "every event read")  # noqa: B023
                assert len(screen.timeline.cast.events) == len(load_cast(data).events)
                await pilot.press("end")
                await wait(lambda: screen.settled and "line 2999 of a longer" in shown(app),  # noqa: B023
                           "the end shown")
        finally:
            gate.set()


async def test_a_recording_opened_at_once_and_one_read_on_open_show_the_same(writing: Writing) -> None:
    path = closed_recording(writing, "o3", 400)
    await wait(lambda: (row := writing.index.get("o3")) is not None and row.state == "closed", "closed")
    frames = []
    for recording in (Recording.open(path, writing.key, expected_session="o3"),
                      opening(writing.index, path, "o3", writing.key)):
        screen = ReplayScreen(recording)
        app = PlayerApp(screen)
        async with app.run_test(size=SIZE) as pilot:
            await wait(lambda: "verified" in banner(app), "verified")  # noqa: B023
            await pilot.press("end")
            await wait(lambda: screen.settled, "at the end")  # noqa: B023
            frames.append((shown(app), banner(app), screen.timeline.times))
    assert frames[0] == frames[1]
