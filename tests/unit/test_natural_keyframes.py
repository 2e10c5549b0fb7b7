"""Natural keyframes (`player.replay.NaturalScan`): a seek that starts from a full clear or a
reset found by the scan must show the screen a replay of every byte gives, cell for cell, with
the same cursor, attributes, modes, margins, tab stops and saved cursors, at every seek point,
whatever came before (scroll regions, origin mode, saved cursors, resizes, escapes cut between
events, sequences the scan cannot follow)."""

from __future__ import annotations

from typing import Any

import pyte
from hypothesis import given, settings
from hypothesis import strategies as st

import player.replay as replay
from player.keyframes import snapshot
from player.replay import SafeScreen, Timeline
from recorder.asciicast import Cast, Event, build_header

CLEARS = ["\x1b[H\x1b[2J", "\x1b[2J\x1b[H", "\x1b[3J\x1b[1;1H", "\x1b[5;3f\x1b[2J", "\x1b[2J\x1b[2;2H", "\x1bc",
          "\x1b[H\x1b[J", "\x1b[2J", "\x1b[?2J\x1b[H", "\x1b[H\x1b[?2J"]
DRAWING = ["a", "word ", "x" * 13, "中", "é", "\u0301", "\r", "\n", "\r\n", "\t", "\x08", "\x07", "\x00", "\x7f",
           "\x1b[m", "\x1b[0m", "\x1b[1m", "\x1b[31m", "\x1b[0;32m", "\x1b[44m", "\x1b[48;5;3m", "\x1b[>4;2m",
           "\x1b[?4m", "\x1b[K", "\x1b[1K", "\x1b[2K", "\x1b[3;4H", "\x1b[9;9H", "\x1b[A", "\x1b[2B", "\x1b[5G",
           "\x1b[2P", "\x1b[3@", "\x1b[L", "\x1b[2M", "\x1b[5X", "\x1bM", "\x1bD", "\x1bE", "\x1b#8",
           "\x1b[S", "\x1b]0;title\x07", "\x1b]2;t\x1b\\", "\x1b]R", "\x1b(0", "\x0e", "\x0f", "\x1bP1"]
STATE = ["\x1b[4h", "\x1b[4l", "\x1b[?7l", "\x1b[?7h", "\x1b[20h", "\x1b[20l", "\x1b7", "\x1b8", "\x1bH",
         "\x1b[3g", "\x1b[g", "\x1b[0;3g", "\x1b[2;3r", "\x1b[r", "\x1b[3;9r", "\x1b[?6h", "\x1b[?6l",
         "\x1b[?25l", "\x1b[?25h", "\x1b[?1049h", "\x1b[?1049l", "\x1b[?47h", "\x1b[?1;25;6h", "\x1b[?3h",
         "\x1b[?3l", "\x1b[?6r", "\x1b[>1h"]
CUT = ["\x1b[", "\x1b[2", "\x1b[?", "\x1b]0;ti", "\x1b", "\x1b(", "\x1b#"]  # escapes cut between events
STOPPING = ["\x1b%G", "\udcc3", "\x9b1m", "\x1b[?5h", "\x1b[1\nm", "\x1b\x1b[2J", "\x1b[1$x", "\x1b]0;a\nb\x07"]


def state(screen: pyte.Screen) -> dict[str, Any]:
    taken = snapshot(screen)
    taken["cells"] = sorted(taken["cells"])
    # An escape sequence an event cut: the replay keeps it as text (`SafeScreen.carry`), the
    # reference in pyte's parser; what either does next with it is compared instead.
    taken.pop("carry")
    return taken


def reference(events: list[Event], columns: int, lines: int, onlcr: bool = False) -> SafeScreen:
    """Every byte of every event fed to pyte, each event at once (`onlcr`: a session without a
    pty, its line feeds drawn as CR LF)."""
    screen = SafeScreen(columns, lines)
    if onlcr:
        screen.without_pty()
    stream = pyte.ByteStream(screen)
    for event in events:
        if event.code == "o":
            stream.feed(event.data.encode("utf-8", "surrogateescape"))
        elif event.code == "r":
            cols, rows = (int(v) for v in event.data.split("x"))
            screen.resize(rows, cols)
    return screen


def timeline_of(events: list[Event], columns: int, lines: int, onlcr: bool = False) -> Timeline:
    header = build_header(version=2, width=columns, height=lines, timestamp=0,
                          metadata={"pty": False} if onlcr else None)
    return Timeline(Cast(header, list(events)))


@st.composite
def recordings(draw: st.DrawFn, stopping: bool) -> tuple[list[Event], int, int]:
    columns, lines = draw(st.integers(2, 12)), draw(st.integers(1, 6))
    vocabulary = CLEARS * 3 + DRAWING + STATE + CUT + (STOPPING if stopping else [])
    row = st.builds(lambda r, sgr, text, erase, place: f"\x1b[{r}{place}{sgr}{text}{erase}",
                    st.integers(0, 8), st.sampled_from(["", "\x1b[31m", "\x1b[m", "\x1b[1;44m", "\x1b[0m"]),
                    st.text(st.sampled_from("ab x~["), max_size=14), st.sampled_from(["\x1b[K", "\x1b[2K", "\x1b[0K"]),
                    st.sampled_from([";1H", "H", ";H", "f", ";2H"]))
    # Whole redraws: every row (and more) drawn, in any order, as full-screen programs do.
    redraw = st.builds(lambda order, texts, sgr: "".join(f"\x1b[{r};1H{sgr}{texts[r % len(texts)]}\x1b[K"
                                                          for r in order),
                       st.permutations(list(range(1, lines + 1))), st.lists(st.text("ab ", max_size=14), min_size=1),
                       st.sampled_from(["", "\x1b[32m", "\x1b[m"]))
    pieces = st.one_of(st.sampled_from(vocabulary), row, redraw)
    events = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 10)) == 0:
            events.append(Event(0.0, "r", f"{draw(st.integers(2, 12))}x{draw(st.integers(1, 6))}"))
            continue
        events.append(Event(0.0, "o", "".join(draw(st.lists(pieces, max_size=30)))))
    return events, columns, lines


def check_every_seek(events: list[Event], columns: int, lines: int, onlcr: bool = False) -> int:
    """Every seek point of a timeline with natural keyframes against a full replay; returns how
    many of them started from a natural keyframe."""
    timeline = timeline_of(events, columns, lines, onlcr)
    timeline.scan_naturals(len(events))
    natural = 0
    for count in range(len(events) + 1):
        natural += timeline.keyframe_before(count).index > 0
        expected = state(reference(events[:count], columns, lines, onlcr))
        assert state(timeline.screen_after(count)) == expected, count
        assert state(timeline_of(events, columns, lines, onlcr).screen_after(count)) == expected, count
    return natural


@settings(max_examples=500, deadline=None)
@given(recordings(stopping=False), st.booleans())
def test_a_seek_from_a_natural_keyframe_gives_the_screen_of_every_byte(case: tuple[list[Event], int, int],
                                                                       onlcr: bool) -> None:
    """With a pty, and without one (line feeds drawn as CR LF, through resets and mode changes)."""
    spacing = replay.NATURAL_SPACING
    replay.NATURAL_SPACING = 0  # every clear is a keyframe
    try:
        check_every_seek(*case, onlcr)
    finally:
        replay.NATURAL_SPACING = spacing


@settings(max_examples=300, deadline=None)
@given(recordings(stopping=True))
def test_sequences_the_scan_cannot_follow_stop_it_and_seeks_stay_right(case: tuple[list[Event], int, int]) -> None:
    spacing = replay.NATURAL_SPACING
    replay.NATURAL_SPACING = 0
    try:
        check_every_seek(*case)
    finally:
        replay.NATURAL_SPACING = spacing


def redraw(lines: int, label: str, clear: bool = False) -> str:
    """A full-screen program's frame: every row placed with a cursor move and erased to its end."""
    rows = "".join(f"\x1b[{row};1H\x1b[3{row % 7}m{label} row {row}\x1b[m\x1b[K" for row in range(1, lines + 1))
    return ("\x1b[H\x1b[2J" if clear else "") + rows


def every_clear_a_keyframe() -> Any:
    spacing = replay.NATURAL_SPACING
    replay.NATURAL_SPACING = 0
    return spacing


HOSTILE = {
    # name: (events, columns, lines, the event counts natural keyframes give: none where the state is unsure)
    "a clear inside a scrolling region": (["\x1b[2;4rin\r\n\n\nregion", "\x1b[H\x1b[2Jtop\x1b[3;1Hthird\r\n\n\n\n",
                                           "more\x1b[r"], 8, 5, [2]),
    "a clear with origin mode on": (["\x1b[2;4r\x1b[?6hx\r\n\n\ny", "\x1b[2J\x1b[Hat the region's top", "z"],
                                    8, 5, []),
    "alternate screen toggles": (["shell$ ", "\x1b[?1049h\x1b[H\x1b[2Jfull screen\x1b[5;2Hx",
                                  "\x1b[?1049l\x1b[?25lback", "\x1b[?1049h\x1b[2J\x1b[1;1Hagain\x1b[?25h"], 10, 5, [2, 4]),
    "a resize between": (["\x1b[H\x1b[2Jbefore", "r:6x3", redraw(3, "a"), "r:10x5", "\x1b[2J\x1b[Hgrown", "r:4x2",
                          redraw(2, "b")], 10, 5, [1, 5]),
    "a shrink leaves cells below, then rows are drawn": (["\x1b[H\x1b[2J1\r\n2\r\n3\r\n4\r\n5", "r:10x2", redraw(2, "c"),
                                                          "r:10x5"], 10, 5, [1]),
    "a saved cursor": (["\x1b[5;5Hx\x1b7", "\x1b[H\x1b[2Jsaved", "\x1b8here"], 10, 5, []),
    "a cell pushed past the last column": (["abcdefghij\x1b[1G\x1b[4hZ\x1b[4l", redraw(5, "d"), "\x1b[1;1H\x1b[P"],
                                           10, 5, []),
    "an erase up to a cursor past the last column": (["\x1b[1;1Habcdefghij\x1b[1K", redraw(5, "e"), "\x1b[1;1H\x1b[5P"],
                                                     10, 5, []),
    "rows that wrap": ([redraw(5, "f") + "\x1b[2;1H" + "w" * 14 + "\x1b[K", "x"], 10, 5, [1]),
    "tab stops set at the cursor": (["\x1b[3;3H\x1bH", "\x1b[H\x1b[2J\tx", "\ty"], 10, 5, []),
    "tab stops cleared, then a reset": (["\x1b[3g\x1b[3;3H\x1bH", "\x1bc\tx", "\ty"], 10, 5, [2]),
    "colours set before a clear": (["\x1b[44;1m", "\x1b[31m\x1b[H\x1b[2Jx", "y"], 10, 5, [2]),
    "colours restored with a saved cursor": (["\x1b[44m\x1b7\x1b[m\x1b8", "\x1b[H\x1b[2Jx", "y"], 10, 5, []),
    "a clear cut between events": (["\x1b[H\x1b[2", "J", "\x1b[2J\x1b[H\x1b[", "5;5Hx"], 10, 5, [2]),
}


def events_of(parts: list[str]) -> list[Event]:
    return [Event(0.0, "r", part[2:]) if part.startswith("r:") else Event(0.0, "o", part) for part in parts]


def test_hostile_cases_seek_to_the_screen_of_every_byte() -> None:
    spacing = every_clear_a_keyframe()
    try:
        for name, (parts, columns, lines, naturals) in HOSTILE.items():
            events = events_of(parts)
            check_every_seek(events, columns, lines)
            timeline = timeline_of(events, columns, lines)
            timeline.scan_naturals(len(events))
            assert timeline._natural.indices == naturals, name
    finally:
        replay.NATURAL_SPACING = spacing


def test_a_full_screen_program_seeks_from_its_last_redraw() -> None:
    """A top-like program redrawing its 24 rows every second (a full clear now and then): the
    seek to the end starts from the last redraw, not from the start, and every seek gives the
    screen of every byte."""
    events = [Event(0.0, "o", "\x1b[?1049h\x1b[?25l")]
    for frame in range(300):
        events.append(Event(float(frame), "o", redraw(24, f"frame {frame}", clear=frame % 50 == 0)))
        events.append(Event(float(frame) + 0.5, "o", f"\x1b[24;1Hstatus {frame}"))
    spacing = replay.NATURAL_SPACING
    replay.NATURAL_SPACING = 4096
    try:
        timeline = timeline_of(events, 80, 24)
        timeline.scan_naturals(len(events))
    finally:
        replay.NATURAL_SPACING = spacing
    assert not timeline._natural.stopped
    assert len(timeline._natural.indices) > 40
    start = timeline.keyframe_before(len(events)).index
    assert timeline.cost(start, len(events)) <= 3 * 4096
    for count in range(0, len(events) + 1, 7):
        assert state(timeline.screen_after(count)) == state(reference(events[:count], 80, 24)), count


def test_what_the_scan_cannot_follow_ends_it() -> None:
    """After a latin-1 switch (or bytes that are not UTF-8, reverse video...) no later point is
    taken: the seeks there replay from the start or a made keyframe."""
    for stop in STOPPING:
        events = events_of([redraw(5, "a", clear=True), stop, redraw(5, "b", clear=True), "x"])
        spacing = every_clear_a_keyframe()
        try:
            timeline = timeline_of(events, 10, 5)
            timeline.scan_naturals(len(events))
        finally:
            replay.NATURAL_SPACING = spacing
        assert timeline._natural.stopped, repr(stop)
        assert timeline._natural.indices == [1], repr(stop)
        assert state(timeline.screen_after(len(events))) == state(reference(events, 10, 5)), repr(stop)


def test_a_full_screen_program_is_told_from_a_log() -> None:
    """The player looks for natural keyframes as soon as a recording is read when its output
    places the cursor often; a log (or nothing) does not start the scan."""
    program = [Event(float(i), "o", redraw(24, f"frame {i}")) for i in range(50)]
    log = [Event(float(i), "o", f"\x1b[32m{i}\x1b[m a line of a log\r\n" * 20) for i in range(50)]
    assert timeline_of(program, 80, 24).looks_redrawn()
    assert not timeline_of(log, 80, 24).looks_redrawn()
    assert not timeline_of([], 80, 24).looks_redrawn()
