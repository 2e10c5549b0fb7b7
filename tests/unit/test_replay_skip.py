"""The player's replay skips output that cannot show (`player.replay.Feeder`): the screen it
gives must be the one feeding every byte to the emulator gives, cell for cell, with the same
cursor, attributes, modes, charsets, margins, tab stops and saved cursors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyte
from hypothesis import given, settings
from hypothesis import strategies as st

import player.replay as replay
from player.keyframes import snapshot
from player.replay import Feeder, SafeScreen, Timeline, feed, plain_lines
from recorder.asciicast import Cast, Event, build_header, load_cast
from tests.support.casts import make_cast

# Output that leaves everything but the cursor's row and column and the attributes alone...
SAFE = ["a", "bc", "word ", "x" * 13, "中", "é", "e\u0301", "\u0301", "\u200b", "\r", "\n", "\r\n", "\r\n",
        "\t", "\x08", "\x07", "\x1b[m", "\x1b[0m", "\x1b[1m", "\x1b[31m", "\x1b[0;32m", "\x1b[38;5;200m",
        "\x1b[48;2;1;2;3m", "\x1b[;m", "\x1b[1;0;4m", "\x1b[K", "\x1b[1K", "\x1b[2K", "\x1b[7m", "\x1b[3K",
        "\x1b[0;5K", "\x1b[5G", "\x1b[G", "\x1b[1;2G", "\x1b[2C", "\x1b[C", "\x1b[99999C", "\x1b[3D", "\x1b[D",
        "\x1b]0;title\x07", "\x1b]2;t\x1b\\", "\x1b]1;é\x07"]
# ... and output that changes the rest: modes, charsets, margins, cursor moves, saved cursors,
# tab stops, a latin-1 switch, bytes that are not UTF-8, escapes cut between events, C1 controls.
STATE = ["\x1b[4h", "\x1b[4l", "\x1b[?7l", "\x1b[?7h", "\x1b[20h", "\x1b[20l", "\x1b(0", "\x1b(B", "\x1b)0",
         "\x0e", "\x0f", "\x1b7", "\x1b8", "\x1b[s", "\x1b[u", "\x1bH", "\x1b[3g", "\x1b[2;3r", "\x1b[r",
         "\x1b[?6h", "\x1b[?6l", "\x1b[?25l", "\x1b[2;3H", "\x1b[A", "\x1b[2J", "\x1bM", "\x1b[L", "\x1b[3K",
         "\x1b[", "\x1b[3", "\x1b]0;title", "\x07", "\x1b%@", "\x1b%G", "\udcc3", "\udce4\udcb8", "\x9b1m",
         "\x0b", "\x0c", "\x00", "\x7f", "\x1b[?1049h", "\x1bc", "\x1b[1;1;1H", "\x1b[5X", "\x1b[2P",
         "\x1b]7;x\x07", "\x1b]0;a", "\x1b]0;a\x1bb\x07", "\x1b[?25h", "\x1b[5H", "\x1b[?5h", "\x1b[?3h"]


@contextlib.contextmanager
def dropping_every(lines: int) -> Iterator[None]:
    """Drop held output after `lines` more line feeds than the screen needs (so small tests
    drop often)."""
    original = replay.DROP_LINES
    replay.DROP_LINES = lines
    try:
        yield
    finally:
        replay.DROP_LINES = original


def state(screen: pyte.Screen) -> dict[str, Any]:
    taken = snapshot(screen)
    taken["cells"] = sorted(taken["cells"])
    # An escape sequence an event cut: the replay keeps it as text (`SafeScreen.carry`), the
    # reference in pyte's parser; what either does next with it is compared instead.
    taken.pop("carry")
    return taken


def new_screen(columns: int, lines: int, onlcr: bool) -> SafeScreen:
    """A screen as the timeline makes it: a session without a pty (`onlcr`) in new line mode."""
    screen = SafeScreen(columns, lines)
    if onlcr:
        screen.without_pty()
    return screen


def reference(events: list[Event], columns: int, lines: int, onlcr: bool = False) -> SafeScreen:
    """Every byte of every event fed to pyte, each event at once."""
    screen = new_screen(columns, lines, onlcr)
    stream = pyte.ByteStream(screen)
    for event in events:
        if event.code == "o":
            stream.feed(event.data.encode("utf-8", "surrogateescape"))
        else:
            cols, rows = (int(v) for v in event.data.split("x"))
            screen.resize(rows, cols)
    return screen


def skipping(events: list[Event], columns: int, lines: int, onlcr: bool = False) -> tuple[SafeScreen, Feeder]:
    screen = new_screen(columns, lines, onlcr)
    feeder = Feeder(screen)
    for event in events:
        feed(feeder, event)
    feeder.flush()
    return screen, feeder


@st.composite
def outputs(draw: st.DrawFn, hostile: bool) -> tuple[list[Event], int, int]:
    columns, lines = draw(st.integers(3, 12)), draw(st.integers(1, 6))
    tokens = st.sampled_from(SAFE + STATE) if hostile else st.sampled_from(SAFE)
    events = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 30)) == 0:
            events.append(Event(0.0, "r", f"{draw(st.integers(3, 12))}x{draw(st.integers(1, 6))}"))
            continue
        parts = draw(st.lists(tokens, max_size=40))
        # Runs of lines long enough to scroll a screen away twice, and more.
        line = draw(st.sampled_from(["line\r\n", "line\n"]))  # a pty's line ends, and a stream's
        parts += [line] * draw(st.sampled_from([0, 0, 1, 2 * lines - 1, 2 * lines, 2 * lines + 1, 5 * lines]))
        parts = draw(st.permutations(parts)) if draw(st.booleans()) else parts
        events.append(Event(0.0, "o", "".join(parts)))
    return events, columns, lines


@settings(max_examples=400, deadline=None)
@given(outputs(hostile=True), st.integers(0, 3), st.booleans())
def test_skipping_gives_the_screen_of_every_byte(case: tuple[list[Event], int, int], drop: int,
                                                 onlcr: bool) -> None:
    """With a pty, and without one (each line feed drawn as CR LF, whatever modes and resets
    the output asks for)."""
    events, columns, lines = case
    with dropping_every(drop):
        skipped, _ = skipping(events, columns, lines, onlcr)
    assert state(skipped) == state(reference(events, columns, lines, onlcr))


@settings(max_examples=300, deadline=None)
@given(outputs(hostile=False), st.integers(0, 3), st.lists(st.sampled_from(STATE), max_size=6), st.booleans())
def test_a_safe_stretch_after_any_state_gives_the_screen_of_every_byte(
        case: tuple[list[Event], int, int], drop: int, before: list[str], onlcr: bool) -> None:
    """Whatever modes, charsets, attributes and saved cursors the output before set up, a
    stretch of safe output (where most of the skipping happens) ends on the same screen."""
    events, columns, lines = case
    events = [Event(0.0, "o", "".join(before)), *events]
    with dropping_every(drop):
        skipped, _ = skipping(events, columns, lines, onlcr)
    assert state(skipped) == state(reference(events, columns, lines, onlcr))


# Whole sequences, as programs write them: the recorder then cuts its output into events
# wherever the socket reads fell (never inside a UTF-8 character: it decodes incrementally).
WHOLE = [t for t in SAFE + STATE if t not in ("\x1b[", "\x1b[3", "\x1b]0;title", "\x07", "\x1b%@", "\x1b%G",
                                         "\udcc3", "\udce4\udcb8", "\x9b1m", "\x1b]0;a")]


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[Event], int, int]:
    columns, lines = draw(st.integers(3, 12)), draw(st.integers(1, 6))
    whole = "".join(draw(st.lists(st.sampled_from([*WHOLE, "line\r\n", "line\n"]), max_size=60)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(whole)), max_size=12))))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    return [Event(0.0, "o", piece) for piece in pieces if piece], columns, lines


@settings(max_examples=400, deadline=None)
@given(chunked(), st.booleans())
def test_playback_event_by_event_and_seeks_from_any_keyframe_give_the_screen_of_every_byte(
        case: tuple[list[Event], int, int], onlcr: bool) -> None:
    """Output cut into events anywhere, escape sequences included: playback applies one event
    at a time, and with a keyframe after nearly every event a seek starts from a copy of the
    screen; both go on from inside a cut sequence as a terminal does."""
    events, columns, lines = case
    header = build_header(version=2, width=columns, height=lines, timestamp=0,
                          metadata={"pty": False} if onlcr else None)
    timeline = Timeline(Cast(header, list(events)))
    original = replay.KEYFRAME_BYTES
    replay.KEYFRAME_BYTES = 1
    try:
        playing = timeline.screen_after(0)
        for count in range(1, len(events) + 1):
            timeline.advance(playing, count - 1, count)
            expected = state(reference(events[:count], columns, lines, onlcr))
            assert state(playing) == expected, count
            assert state(timeline.screen_after(count)) == expected, count
    finally:
        replay.KEYFRAME_BYTES = original


def test_most_of_a_long_log_never_reaches_the_emulator() -> None:
    """A megabyte of coloured log lines: the emulator is given a few screens of it, and the
    screen is the one of every byte (colours of the last lines included)."""
    lines = [f"\x1b[3{i % 7 + 1}m{i:08d}\x1b[0m a log line \x1b[1mbold\x1b[0m\r\n" for i in range(25_000)]
    events = [Event(0.0, "o", "".join(lines[i:i + 50])) for i in range(0, len(lines), 50)]
    events.append(Event(0.0, "o", "\x1b[32mstill green at the end"))
    skipped, feeder = skipping(events, 80, 24)
    assert feeder.scanned > 1_000_000 and feeder.fed < 20_000
    assert state(skipped) == state(reference(events, 80, 24))
    assert plain_lines(skipped)[-1] == "still green at the end"
    assert skipped.buffer[23][0].fg == "green"


def test_a_stream_without_a_pty_replays_as_its_users_terminal_drew_it() -> None:
    """A session without a pty went through the user's own tty, which turns each line feed
    into CR LF: its lines start at column 0 (a terminal resets or a program turning new line
    mode off do not change the tty), and a long log of them is skipped as a pty's is. A
    recording with a pty, or from elsewhere, keeps the line feed a terminal's."""
    log = "".join(f"{i:08d} a log line without a pty\n" for i in range(25_000))
    chunks = [(0.0, "o", log[i:i + 4096]) for i in range(0, len(log), 4096)]
    chunks += [(1.0, "o", "\x1bc\x1b[20lafter a reset\nnext\n")]
    no_pty = Timeline(load_cast(make_cast(chunks, width=80, height=6, metadata={"pty": False})))
    screen = no_pty.screen_after(len(no_pty.cast.events) - 1)
    assert plain_lines(screen)[-2:] == ["00024999 a log line without a pty", ""]
    assert state(screen) == state(reference(no_pty.cast.events[:-1], 80, 6, onlcr=True))
    feeder = Feeder(no_pty.new_screen()[0])
    for event in no_pty.cast.events:
        feed(feeder, event)
    feeder.flush()
    assert feeder.scanned > 800_000 and feeder.fed < 20_000
    assert plain_lines(feeder.screen)[:3] == ["after a reset", "next", ""]
    for metadata in ({"pty": True}, None):
        with_pty = Timeline(load_cast(make_cast([(0.0, "o", "one\ntwo\n")], width=20, height=4, metadata=metadata)))
        assert plain_lines(with_pty.screen_after(1))[:2] == ["one", "   two"]


def test_a_timeline_seek_through_skipped_output_matches_a_full_replay() -> None:
    """Seeks (from keyframes made by a pass that skipped most output) show the screen of a
    replay that fed every byte, at every keyframe and between them."""
    chunks = [(i * 0.3, "o", f"\x1b[3{i % 7 + 1}m{i} some output\x1b[m\r\n" * (i % 40 + 1)) for i in range(600)]
    chunks[300] = (90.0, "o", "\x1b[2;5r\x1b[5;1Hinside a scroll region\r\n" * 30 + "\x1b[r")
    data = make_cast(chunks, width=60, height=12)
    original = replay.KEYFRAME_BYTES
    replay.KEYFRAME_BYTES = 1_000
    try:
        timeline = Timeline(load_cast(data))
        timeline.screen_after(len(timeline.cast.events))
    finally:
        replay.KEYFRAME_BYTES = original
    assert len(timeline.keyframes) > 5
    events = timeline.cast.events
    for count in {*(k.index for k in timeline.keyframes), 1, 150, 299, 300, 301, 450, len(events)}:
        assert state(timeline.screen_after(count)) == state(reference(events[:count], 60, 12)), count


DRAWN = st.text(st.sampled_from("ab xyz~!qx0é中\x01\u0301\u200b"), max_size=30)
SETUP = [*STATE, "\x1b[1;31m", "\x1b[3;7H", "\x1b[?7l", "\x1b[?7h", "\x1b[4h", "\x1b(0"]


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.lists(st.sampled_from(SETUP), max_size=8),
       st.lists(st.one_of(DRAWN, st.integers(0, 3)), max_size=8))
def test_drawing_and_erasing_a_line_at_a_time_does_what_pyte_does(columns: int, lines: int, before: list[str],
                                                                  steps: list[str | int]) -> None:
    """SafeScreen draws printable ASCII a line's worth at a time, and erases in the line in one
    update: the cells, cursor and wraps are pyte's, after any modes, charsets, attributes and
    cursor position (the last column included, with and without autowrap; insert mode and
    other text go to pyte's own drawing)."""
    ours, theirs = SafeScreen(columns, lines), SafeScreen(columns, lines)
    for screen in (ours, theirs):
        stream = pyte.ByteStream(screen)
        stream.feed("".join(before).encode("utf-8", "surrogateescape"))
    for step in steps:
        if isinstance(step, str):
            ours.draw(step)
            pyte.Screen.draw(theirs, step)
        else:
            ours.erase_in_line(step)
            if step < 3:  # pyte fails on the others; ours ignores them
                pyte.Screen.erase_in_line(theirs, step)
    assert state(ours) == state(theirs)
