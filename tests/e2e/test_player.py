"""The player: pure replay pipeline, and the Textual app driven by its Pilot."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.widgets import Static

import player.app
import player.replay
from player.app import INLINE_COST, PlayerApp, Recording, ReplayScreen, TerminalView
from player.keyframes import KeyframeCache
from player.render import screen_text
from player.replay import Interrupted, SafeScreen, Timeline, idle_capped, plain_lines, scaled
from recorder.asciicast import CastEncoder, Event, build_header, load_cast
from recorder.printable import printable, printable_cell
from recorder.signing import RecordingKey
from recorder.writer import Recorder
from tests.support.casts import SESSION, make_cast, recordings
from tests.support.lab import eventually
from tests.support.memory import MemoryStore


def test_idle_cap_and_speed() -> None:
    events = [Event(t, "o", "x") for t in (1.0, 2.0, 30.0, 31.0)]
    assert idle_capped(events, 2.0) == [1.0, 2.0, 4.0, 5.0]
    assert idle_capped(events, None) == [1.0, 2.0, 30.0, 31.0]
    assert scaled([2.0, 4.0], 2.0) == [1.0, 2.0]


def test_timeline_markers_search_and_resize() -> None:
    timeline = Timeline(load_cast(make_cast(SESSION)))
    assert [m.label for m in timeline.markers] == ["command: ls", "denied: rm -rf /"]
    assert timeline.next_marker(0).label == "command: ls"  # type: ignore[union-attr]
    assert timeline.previous_marker(timeline.duration).label == "denied: rm -rf /"  # type: ignore[union-attr]
    hits = timeline.search("NEEDLE")
    assert timeline.cast.events[hits[0]].data.startswith("echo needle")
    screen = timeline.screen_at(timeline.duration)
    assert (screen.columns, screen.lines) == (50, 12)
    assert "done" in plain_lines(screen)[4]


@settings(max_examples=60, deadline=None)
@given(recordings(), st.floats(min_value=0, max_value=1))
def test_keyframe_seek_equals_replay_from_the_start(data: bytes, fraction: float) -> None:
    import player.replay as replay

    original = replay.KEYFRAME_BYTES
    replay.KEYFRAME_BYTES = 20  # many keyframes, so seeks really start from them
    try:
        timeline = Timeline(load_cast(data))
        timeline.screen_at(timeline.duration)  # the first pass makes the keyframes
        target = timeline.duration * fraction
        from_keyframe = plain_lines(timeline.screen_at(target))
    finally:
        replay.KEYFRAME_BYTES = original
    fresh = Timeline(load_cast(data))
    fresh._covered = len(fresh.cast.events)  # no keyframes: replay from the very start
    assert from_keyframe == plain_lines(fresh.screen_at(target))


HOSTILE = [
    "\x1b]52;c;cm0gLXJmIC8=\x07",  # OSC 52: write the clipboard
    "\x1b]0;owned title\x07\x1b]2;another\x1b\\",  # window titles
    "\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\",  # hyperlink
    "\x1bP1$r0m\x1b\\", "\x1b_apc payload\x1b\\",  # DCS, APC
    "\x1b[6n\x1b[c\x1b[>c\x1b[5n\x1b[18t",  # device queries
    "\x1bc\x1b[!p",  # resets
    "\u009b31mC1 CSI\u009d0;c1 title\u009c",  # 8-bit C1 controls
    "echo \u202e/ fr- mr\u202c; e\u200bcho\r\n",  # a right-to-left override, a zero-width space
    "visible text\r\n",
    "\x1b]0;never terminated",  # unterminated OSC at the end
]


def test_hostile_recordings_are_harmless() -> None:
    marker = (9.0, "m", "denied: \x1b]0;title\x07rm \u202e/")
    timeline = Timeline(load_cast(make_cast([(i * 0.1, "o", s) for i, s in enumerate(HOSTILE)] + [marker])))
    answered: list[str] = []
    screen = timeline.screen_at(timeline.duration)
    original = SafeScreen.write_process_input
    try:
        SafeScreen.write_process_input = lambda self, data: answered.append(data)  # type: ignore[method-assign]
        timeline.advance(timeline.screen_after(0), 0, len(timeline.cast.events))
    finally:
        SafeScreen.write_process_input = original  # type: ignore[method-assign]
    rendered = "".join(t.plain for t in screen_text(screen))
    assert "visible text" in rendered
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u202c\u200b" for c in rendered)
    assert timeline.markers[-1].label == "denied: \\x1b]0;title\\x07rm \\u202e/"  # shown, not obeyed
    # The queries did reach the answering hook, and our screen's hook is not pyte's: it drops them.
    assert answered
    assert SafeScreen.write_process_input is not pyte.Screen.write_process_input


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    hostile = "rm \x1b]0;title\x07 \u009b31m \udc9b2J \u202e/ \t\r\n é ü"
    assert printable(hostile) == "rm \\x1b]0;title\\x07 \\x9b31m \\x9b2J \\u202e/ \\t\\r\\n é ü"
    assert printable_cell("\x1b") == " " and printable_cell("\u202e") == " "
    assert printable_cell("a\u202e") == "a" and printable_cell("é") == "é" and printable_cell("") == " "


async def test_app_plays_seeks_and_searches(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_bytes(make_cast(SESSION))
    recording = Recording.open(path, None)
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        assert screen.position == 0
        await pilot.press("right")
        assert screen.position == 5
        await pilot.press("left", "left")
        assert screen.position == 0
        await pilot.press("end")
        assert screen.position == recording.timeline.duration
        await pilot.press("home", "right_square_bracket")
        assert screen.position == recording.timeline.markers[0].time
        await pilot.press("right_square_bracket")
        assert screen.position == recording.timeline.markers[1].time
        await pilot.press("left_square_bracket")
        assert screen.position == recording.timeline.markers[0].time
        await pilot.press("plus", "plus")
        assert screen.speed == 4.0
        await pilot.press("minus")
        assert screen.speed == 2.0
        await pilot.press("home", "slash")
        await pilot.press(*"needle", "enter")
        assert screen.position == recording.timeline.times[4]
        view = app.screen.query_one(TerminalView)
        assert "needle" in str(view.content)
        # From the start at the slowest speed: the end is half a minute of playing away, however
        # long a loaded machine takes between the two presses.
        await pilot.press("home", *["minus"] * 6)
        assert screen.speed == 0.25
        await pilot.press("space")
        assert screen.playing
        await pilot.press("space")
        assert not screen.playing
        await pilot.press("question_mark")
        await pilot.press("escape")
        banner = str(app.screen.query_one("#banner", Static).content)
        assert "not verified" in banner


async def test_banner_says_verified_or_tampered(tmp_path: Path) -> None:
    key = RecordingKey.generate()
    store = MemoryStore()
    recorder = Recorder(store, None, key, flush_interval=0.01)
    rec = recorder.open(session_id="good", width=40, height=10, term=None, command=None,
                        metadata={"session_id": "good"}, index_fields={})
    rec.output(b"hello\r\n")
    rec.close(exit_status=0)
    recorder.stop()
    cast, sig = store.read(rec.name)
    for name, data in (("good", cast), ("bad", cast.replace(b"hello", b"jello")), ("swapped", cast)):
        # `swapped`: the good session's files copied in under another session's name.
        (tmp_path / f"{name}.cast").write_bytes(data)
        (tmp_path / f"{name}.cast.sig").write_bytes(sig or b"")
    for name, expected in (("good", "verified, session good, signed by SHA256:"),
                           ("bad", "TAMPERED at event"),
                           ("swapped", "TAMPERED at event 0: the header names session good, the file is swapped")):
        path = tmp_path / f"{name}.cast"
        app = PlayerApp(ReplayScreen(Recording.open(path, key, expected_session=name)))
        async with app.run_test(size=(140, 30)):
            assert expected in str(app.screen.query_one("#banner", Static).content)


async def test_banner_says_live_or_why_a_recording_never_closed(tmp_path: Path) -> None:
    key = RecordingKey.generate()
    store = MemoryStore()
    recorder = Recorder(store, None, key, flush_interval=0.01, checkpoint_interval=0.01)
    rec = recorder.open(session_id="s9", width=40, height=10, term=None, command=None,
                        metadata={"session_id": "s9"}, index_fields={})
    rec.output(b"hello\r\n")
    eventually(lambda: b"hello" in store.read(rec.name)[0] and store.read(rec.name)[1], "a checkpoint")
    cast, sig = store.read(rec.name)
    path = tmp_path / "s9.cast"
    path.write_bytes(cast)
    (tmp_path / "s9.cast.sig").write_bytes(sig or b"")
    recorder.stop()
    for kwargs, expected in (({"live": True}, "LIVE - session s9 is still being recorded"),
                             ({"unfinished": "the bastion stopped before the session ended"},
                              "INCOMPLETE - session s9 was not closed (the bastion stopped before the session")):
        app = PlayerApp(ReplayScreen(Recording.open(path, key, expected_session="s9", **kwargs)))  # type: ignore[arg-type]
        async with app.run_test(size=(140, 30)):
            assert expected in str(app.screen.query_one("#banner", Static).content)


def test_plays_a_recording_made_by_the_real_asciinema(tmp_path: Path) -> None:
    if not (shutil.which("asciinema") and shutil.which("script")):
        pytest.fail("asciinema and script are needed: run scripts/test")
    path = tmp_path / "real.cast"
    subprocess.run(["script", "-qec", f"asciinema rec -q -c 'echo hello-from-asciinema' {path}", "/dev/null"],
                   check=True, capture_output=True, timeout=60)
    timeline = Timeline(load_cast(path.read_bytes()))
    assert any("hello-from-asciinema" in line for line in plain_lines(timeline.screen_at(timeline.duration)))


async def test_sftp_sessions_show_what_they_did(tmp_path: Path) -> None:
    encoder = CastEncoder()
    header = build_header(version=2, width=80, height=24, timestamp=0, command="sftp",
                          metadata={"user": "alice", "login": "root", "target": "db-1", "kind": "subsystem"})
    data = b"".join([encoder.header(header), encoder.marker(1.0, "upload: /tmp/a 10 bytes"),
                     encoder.marker(2.0, "rename: /tmp/a -> /tmp/b"), encoder.exit(3.0, 0)])
    path = tmp_path / "sftp.cast"
    path.write_bytes(data)
    app = PlayerApp(ReplayScreen(Recording.open(path, None)))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("end")
        shown = str(app.screen.query_one(TerminalView).content)
        assert "alice as root@db-1: sftp" in shown
        assert "upload: /tmp/a 10 bytes" in shown and "rename: /tmp/a -> /tmp/b" in shown


def test_browser_filter_words_fields_and_dates() -> None:
    import time as _time

    from player.app import _matches
    from recorder.index import SessionRow

    started = _time.mktime(_time.strptime("2026-11-20", "%Y-%m-%d")) + 3600
    row = SessionRow(id="s1", name="n", user="alice", login="root", target="db-1", client=None, kind="shell",
                     command=None, started=started, ended=None, duration=None, bytes_in=0, bytes_out=0,
                     exit_status=None, exit_signal=None, markers={"upload": 1}, location=None, lines=None,
                     chain=None, state="closed", error=None, verification=None)
    assert _matches(row, "alice db-1")
    assert _matches(row, "user:ali target:db marker:upl since:2026-11-20 until:2026-11-20")
    assert not _matches(row, "user:bob")
    assert not _matches(row, "marker:denied")
    assert not _matches(row, "since:2026-11-21")
    assert not _matches(row, "until:2026-11-19")


async def test_keyframes_are_built_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.cast"
    # A mode set on every line: all of it goes through the emulator, a keyframe every few lines.
    path.write_bytes(make_cast([(i * 0.5, "o", f"\x1b[?25hline {i}\r\n") for i in range(400)]))
    monkeypatch.setattr(player.replay, "KEYFRAME_BYTES", 100)
    recording = Recording.open(path, None)
    assert len(recording.timeline.keyframes) == 1  # opening replays nothing
    app = PlayerApp(ReplayScreen(recording))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(recording.timeline.keyframes) >= 30
        await pilot.press("end")
        assert "line 399" in str(app.screen.query_one(TerminalView).content)


def test_absurd_sizes_are_clamped() -> None:
    from bastion.core.linetrack import LineTracker

    timeline = Timeline(load_cast(b'{"version": 2, "width": 1000000000, "height": 1000000000}\n[0.1, "o", "x"]\n'))
    assert (timeline.width, timeline.height) == (1000, 1000)
    tracker = LineTracker(10**9, 10**9, clock=time.monotonic)
    tracker.resize(10**9, 1)
    assert (tracker.screen.columns, tracker.screen.lines) == (1000, 5)


async def settle(pilot, screen: ReplayScreen) -> None:  # type: ignore[no-untyped-def]
    """Wait (by state, not time) until the screen shown is the one the position asks for."""
    for _ in range(6000):
        if screen.settled:
            await pilot.pause()
            return
        await pilot.pause(0.01)
    raise AssertionError("the seek did not finish")


def log_cast(lines: int) -> bytes:
    return make_cast([(i * 0.5, "o", f"line {i} " + "x" * 200 + "\r\n") for i in range(lines)], width=80,
                     height=10)


async def test_forward_seeks_start_from_the_nearest_keyframe(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """End from the start replays only the stretch after the last keyframe (it replayed every
    event in between before), and long seeks run off the UI thread."""
    path = tmp_path / "long.cast"
    path.write_bytes(log_cast(3000))
    monkeypatch.setattr(player.replay, "KEYFRAME_BYTES", 2_000)
    recording = Recording.open(path, None)
    timeline = recording.timeline
    timeline.screen_after(len(timeline.cast.events))  # every keyframe made
    last = timeline.keyframes[-1].index
    assert len(timeline.keyframes) > 5
    assert timeline.cost(0, len(timeline.cast.events)) > INLINE_COST
    applied: list[int] = []
    real = player.replay.feed

    def counting(feeder, event, interrupted=None):  # type: ignore[no-untyped-def]
        applied.append(1)
        return real(feeder, event, interrupted)

    monkeypatch.setattr(player.replay, "feed", counting)
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("end")
        await settle(pilot, screen)
        assert "line 2999" in str(app.screen.query_one(TerminalView).content)
        assert 0 < len(applied) < 2 * (len(timeline.cast.events) - last)  # about the stretch after the last keyframe
        applied.clear()
        await pilot.press("home")
        await settle(pilot, screen)
        assert "line 1 " not in str(app.screen.query_one(TerminalView).content)
        screen.seek_to(timeline.times[1500])
        await settle(pilot, screen)
        assert "line 1500 " in str(app.screen.query_one(TerminalView).content)


async def test_a_huge_event_is_replayed_in_slices_that_a_key_can_stop(tmp_path: Path) -> None:
    body = "".join(f"{i:08d} one write of many lines\r\n" for i in range(120_000))  # about 4 MB
    path = tmp_path / "huge.cast"
    path.write_bytes(make_cast([(0.5, "o", "before\r\n"), (1.0, "o", body), (2.0, "o", "after\r\n")], width=80))
    recording = Recording.open(path, None)
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("end")  # replayed in a thread, in slices
        await pilot.press("home")  # if taken while the huge event is being fed, it stops between slices
        await settle(pilot, screen)
        content = str(app.screen.query_one(TerminalView).content)
        assert "one write" not in content and "after" not in content
        await pilot.press("end")
        await settle(pilot, screen)
        content = str(app.screen.query_one(TerminalView).content)
        assert "00119999 one write of many lines" in content and "after" in content
        await pilot.press("home", "end")
        await pilot.press("q")  # while seeking: quits
        assert not app.is_running or app._exit


def test_a_replay_stops_between_events_or_inside_a_large_one() -> None:
    timeline = Timeline(load_cast(make_cast([(0.1, "o", "a\r\n"), (0.2, "o", "b" * 300_000), (0.3, "o", "c")])))
    screen, _ = timeline.new_screen()
    with pytest.raises(Interrupted) as between:
        timeline.replay(screen, 0, 3, lambda at: at == 1)
    assert (between.value.index, between.value.torn) == (1, False)
    calls: list[int] = []
    with pytest.raises(Interrupted) as inside:
        timeline.replay(screen, 1, 3, lambda at: calls.append(at) is None and len(calls) > 2)
    assert (inside.value.index, inside.value.torn) == (1, True)
    assert timeline.cost(0, 3) == 3 + 300_000 + 1 + 3 * player.replay.EVENT_COST


async def test_a_first_open_builds_and_caches_keyframes_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "long.cast"
    path.write_bytes(log_cast(400))
    cache = KeyframeCache(tmp_path / "keyframes")
    recording = Recording.open(path, None, cache=cache)
    assert not recording.timeline.complete
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        builder = screen._builder
        assert builder is not None and builder.args[1:3] == ["-m", "player.keyframes"]
        for _ in range(6000):
            if recording.timeline.complete:
                break
            await pilot.pause(0.01)
        assert recording.timeline.complete and builder.returncode == 0
        await pilot.press("end")
        await settle(pilot, screen)
        assert "line 399" in str(app.screen.query_one(TerminalView).content)
    again = Recording.open(path, None, cache=cache)
    assert again.timeline.complete  # the cache was read: nothing to build


def mixed_cast() -> bytes:
    """Coloured log lines (which the replay skips through), a stretch drawn by cursor moves in a
    scroll region (which it cannot skip), window titles, a resize, lines that wrap."""
    events: list[tuple[float, str, str]] = []
    for i in range(2400):
        clock = i * 0.4
        if 900 <= i < 1000:  # a full-screen program: every line drawn at its row
            row = i % 10 + 1
            events.append((clock, "o", f"\x1b[2;11r\x1b[{row};3H\x1b[4{i % 7}mrow {row} at {i}\x1b[0m\x1b[K"))
        elif i == 1000:
            events.append((clock, "o", "\x1b[r\x1b[12;1H"))
        elif i == 1500:
            events.append((clock, "r", "70x14"))
        else:
            # Bold and a background run on over many lines, set and reset now and then.
            body = {75: "\x1b[1;44m", 25: "\x1b[0m"}.get(i % 100, "") + "".join(
                f"\x1b[3{(i + j) % 7 + 1}m{i}.{j}\x1b[39m {'wrapping ' * (j % 9)}\r\n" for j in range(i % 12 + 1))
            events.append((clock, "o", (f"\x1b]0;title {i}\x07" if i % 50 == 0 else "") + body))
    return make_cast(events, width=60, height=12)


def full_replay_text(timeline: Timeline, count: int) -> object:
    """The frame of the first `count` events, every byte fed to the emulator."""
    screen = SafeScreen(timeline.width, timeline.height)
    stream = pyte.ByteStream(screen)
    for event in timeline.cast.events[:count]:
        if event.code == "o":
            stream.feed(event.data.encode("utf-8", "surrogateescape"))
        elif event.code == "r":
            columns, rows = (int(v) for v in event.data.split("x"))
            screen.resize(rows, columns)
    from rich.text import Text

    text = Text("\n", no_wrap=True, overflow="crop").join(screen_text(screen))
    return text.plain, text.spans


async def test_each_key_shows_the_frame_of_a_full_replay(tmp_path: Path) -> None:
    """First open, no keyframes yet: End, ←, Home, → and a jump to the middle each show the frame
    that feeding every byte gives (the replay skips most of this recording)."""
    path = tmp_path / "mixed.cast"
    path.write_bytes(mixed_cast())
    recording = Recording.open(path, None)
    timeline = recording.timeline
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.screen.query_one(TerminalView)
        for key in ("end", "left", "left", "home", "right", "middle", "right", "shift+left", "end"):
            if key == "middle":
                screen.seek_to(timeline.times[960])  # inside the cursor-drawn stretch
            else:
                await pilot.press(key)
            await settle(pilot, screen)
            count = timeline.index_at(screen.position)
            content = view.content
            assert (content.plain, content.spans) == full_replay_text(timeline, count), (key, count)  # type: ignore[union-attr]


def redrawn_screens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A full-screen program recorded by the real recorder: a top-like screen redrawn once a
    second, after a full clear now and then and after a move home otherwise, inside and outside
    a scroll region, with the alternate screen, resizes and a saved cursor in between."""
    key = RecordingKey.generate()
    store = MemoryStore()
    recorder = Recorder(store, None, key, flush_interval=0.01)
    rec = recorder.open(session_id="top", width=50, height=12, term=None, command=None,
                        metadata={"session_id": "top"}, index_fields={})
    clock = [0.0]
    monkeypatch.setattr(rec, "_elapsed", lambda: clock[0])  # a frame a second, as the program drew
    rec.output(b"$ top\r\n\x1b[?1049h\x1b[?25l")
    lines = 12
    for frame in range(240):
        if frame == 80:
            rec.resize(40, 10)
            lines = 10
        elif frame == 160:
            rec.resize(50, 12)
            lines = 12
        start = b"\x1b[H\x1b[2J" if frame % 30 == 0 else b"\x1b[H"
        if frame % 45 == 7:
            start = b"\x1b7\x1b[3;8r" + start + b"\x1b[r\x1b8"
        rows = b"".join(b"\x1b[%d;1H\x1b[3%dm%5d proc %d\x1b[m %s\x1b[K" % (row, row % 7, frame * row, row, b"x" * (frame % 9))
                        for row in range(1, lines + 1))
        clock[0] += 1.0
        rec.output(start + rows)
        clock[0] += 0.5
        rec.output(b"\x1b[%d;1Hstatus %d" % (lines, frame))
    rec.output(b"\x1b[?1049l\x1b[?25h$ ")
    rec.close(exit_status=0)
    recorder.stop()
    path = tmp_path / "top.cast"
    path.write_bytes(store.read(rec.name)[0])
    return path


async def test_a_redrawn_screen_seeks_from_its_natural_keyframes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """First open of a full-screen program's recording: the seeks start from its whole redraws
    (found by the scan before a seek that would replay much of them), and End, ←, Home, → and
    jumps into it each show the frame of a full replay."""
    monkeypatch.setattr(player.replay, "NATURAL_SPACING", 1500)  # a small recording, many points
    monkeypatch.setattr(player.app, "SCAN_WORTH", 0)  # and every seek finds them
    path = redrawn_screens(tmp_path, monkeypatch)
    # As a first open: the keyframes are built in another process meanwhile.
    recording = Recording.open(path, None, cache=KeyframeCache(tmp_path / "keyframes"))
    timeline = recording.timeline
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.screen.query_one(TerminalView)
        natural = timeline._natural
        jumps = [f"{fraction / 16}" for fraction in range(1, 16)]
        for key in ("end", "left", "left", "home", "right", *jumps, "right", "left", "end"):
            if key[0].isdigit():
                screen.seek_to(timeline.duration * float(key))
            else:
                await pilot.press(key)
            await settle(pilot, screen)
            count = timeline.index_at(screen.position)
            content = view.content
            assert (content.plain, content.spans) == full_replay_text(timeline, count), (key, count)  # type: ignore[union-attr]
        assert natural.scanned == len(timeline.cast.events) and not natural.stopped
        assert len(natural.indices) > 20
