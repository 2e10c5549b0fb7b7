"""Replay as pure code: a recording becomes a timeline; a terminal emulator gives the screen at
any moment, quickly, thanks to keyframes. Nothing here writes to a real terminal.

Times are *display* times: the recording's clock with idle gaps capped (`idle_cap`), so a
reviewer does not watch an hour of nothing. Speed is the player's business.
"""

from __future__ import annotations

import bisect
import copy
import functools
import inspect
import itertools
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyte
from pyte import modes
from pyte.screens import Char, Cursor, StaticDefaultDict

from recorder.asciicast import Cast, Event
from recorder.printable import printable

KEYFRAME_BYTES = 128 * 1024  # a keyframe once the emulator has been fed this much since the last
KEYFRAME_SCANNED = 16  # or once this many times as much output was passed over (see `Feeder`)
SLICE_BYTES = 64 * 1024  # a large output event is fed in slices, so a replay can stop between them
EVENT_COST = 64  # what applying an event costs beyond its bytes, in bytes


class Interrupted(Exception):
    """A replay was stopped part way (the reviewer moved on): `index` events are applied, and
    the screen holds exactly them unless `torn` (stopped inside a large event)."""

    def __init__(self, index: int, *, torn: bool = False) -> None:
        super().__init__(index)
        self.index, self.torn = index, torn


class _Cells(dict[str, Char]):
    """The cell of each character drawn with some attributes (cells are immutable: shared)."""

    def __init__(self, attrs: Char) -> None:
        super().__init__()
        self.rest: tuple[Any, ...] = tuple(attrs)[1:]

    def __missing__(self, char: str) -> Char:
        cell = self[char] = Char(char, *self.rest)
        return cell


_CELLS: dict[Char, _Cells] = {}


class SafeScreen(pyte.Screen):
    """A pyte screen that never answers the recorded program (device status, attributes...)."""

    # The session had no pty: the user's own tty turned each line feed into CR LF (`onlcr`),
    # whatever the program asked of the terminal, so new line mode (LNM) stays on.
    onlcr = False
    # An escape sequence the last output event cut, held for the next one: the emulator's parser
    # is then never inside a sequence between events, so a copy of the screen (a keyframe, a
    # seek's start) or playback going on event by event continues exactly where it was.
    carry = ""

    def without_pty(self) -> None:
        """This screen shows a session without a pty (see `onlcr`)."""
        self.onlcr = True
        self.set_mode(modes.LNM)

    def reset(self) -> None:
        super().reset()
        if self.onlcr:
            self.mode.add(modes.LNM)

    def reset_mode(self, *numbers: int, **kwargs: Any) -> None:
        super().reset_mode(*numbers, **kwargs)
        if self.onlcr:
            self.mode.add(modes.LNM)

    def write_process_input(self, data: str) -> None:
        return

    def set_title(self, param: str) -> None:  # titles are not for the reviewer's terminal
        return

    def set_icon_name(self, param: str) -> None:
        return

    # pyte stops with an error on an erase it does not know (`CSI 3 K`, `CSI 5 J`); a terminal
    # ignores it.
    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        """pyte's, with the cells set in one update instead of one at a time."""
        if how not in (0, 1, 2):
            return
        cursor = self.cursor
        self.dirty.add(cursor.y)
        cells = {0: range(cursor.x, self.columns), 1: range(cursor.x + 1), 2: range(self.columns)}[how]
        self.buffer[cursor.y].update(dict.fromkeys(cells, cursor.attrs))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        """pyte's, but a full erase (`CSI 2 J`, `CSI 3 J`) sets every cell of the screen, as a
        terminal paints it, and forgets what lay outside it (rows left below after a shrink, the
        cell past the last column): the screen after it depends on nothing drawn before."""
        if how in (0, 1):
            super().erase_in_display(how, *args, **kwargs)
        elif how in (2, 3):
            self.dirty.update(range(self.lines))
            row = dict.fromkeys(range(self.columns), self.cursor.attrs)
            buffer = self.buffer
            buffer.clear()
            for y in range(self.lines):
                buffer[y].update(row)

    def cursor_to_line(self, line: int | None = None) -> None:
        """VPA. pyte asserts a scrolling region in origin mode; without one a terminal counts
        rows from the screen's top."""
        if modes.DECOM in self.mode and self.margins is None:
            self.cursor.y = (line or 1) - 1
            self.ensure_vbounds()
        else:
            super().cursor_to_line(line)

    def report_device_status(self, mode: int) -> None:
        """Never answered (and pyte asserts a scrolling region to answer in origin mode)."""

    def draw(self, data: str) -> None:
        """pyte's `draw`, a line's worth of cells at a time for printable ASCII (most text): the
        same cells, cursor and wraps, without pyte's per-character width lookup and copy."""
        text = data.translate(self.g1_charset if self.charset else self.g0_charset)
        cursor, columns = self.cursor, self.columns
        if modes.IRM in self.mode or cursor.x > columns or not (text.isascii() and text.isprintable()):
            super().draw(data)
            return
        wrap = modes.DECAWM in self.mode
        cells = _CELLS.get(cursor.attrs)
        if cells is None:
            if len(_CELLS) > 1024:
                _CELLS.clear()
            cells = _CELLS[cursor.attrs] = _Cells(cursor.attrs)
        position, end = 0, len(text)
        while position < end:
            if cursor.x == columns:
                if not wrap:  # each character left replaces the last column's: the last one stays
                    cursor.x = columns - 1
                    self.buffer[cursor.y][cursor.x] = cells[text[-1]]
                    cursor.x = columns
                    break
                self.dirty.add(cursor.y)
                self.carriage_return()
                self.linefeed()
            line, x = self.buffer[cursor.y], cursor.x
            chunk = text[position:position + columns - x]
            line.update(zip(range(x, x + len(chunk)), map(cells.__getitem__, chunk), strict=True))
            cursor.x = x + len(chunk)
            position += len(chunk)
        self.dirty.add(cursor.y)


def _tolerant(name: str) -> None:
    """A recorded `CSI 1;1 A`, `CSI 1;1;1 H` or `CSI ? 4 m` replays as a terminal draws it:
    pyte hands its handlers every parameter it parsed, and private sequences as `private=True`,
    and most handlers refuse them, which stopped the replay of any session that printed one."""
    handler = getattr(SafeScreen, name)
    parameters = list(inspect.signature(handler).parameters.values())[1:]
    takes_private = any(p.name == "private" or p.kind is p.VAR_KEYWORD for p in parameters)
    limit = None if any(p.kind is p.VAR_POSITIONAL for p in parameters) else sum(
        p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "private" for p in parameters)

    def accepting(self: pyte.Screen, *args: int, private: bool = False) -> None:
        if private and not takes_private:
            return
        if limit is not None:
            args = args[:limit]
        if private:
            handler(self, *args, private=True)
        else:
            handler(self, *args)

    setattr(SafeScreen, name, accepting)


for _name in set(pyte.Stream.csi.values()):
    _tolerant(_name)


def clone_screen(screen: SafeScreen) -> SafeScreen:
    """A copy of `screen` to change independently: what `copy.deepcopy` gives, a hundred times
    faster. Cells are immutable tuples, so each row is a shallow copy; cursors are copied once
    each, keeping the one the screen and a savepoint may share shared (pyte restores a saved
    cursor by reference)."""
    new = SafeScreen.__new__(SafeScreen)
    new.__dict__.update(screen.__dict__)
    cursors: dict[int, Cursor] = {}

    def cursor(old: Cursor) -> Cursor:
        if id(old) not in cursors:
            copied = Cursor(old.x, old.y, old.attrs)
            copied.hidden = old.hidden
            cursors[id(old)] = copied
        return cursors[id(old)]

    new.cursor = cursor(screen.cursor)
    new.savepoints = [point._replace(cursor=cursor(point.cursor)) for point in screen.savepoints]
    buffer: defaultdict[int, StaticDefaultDict[int, Char]] = defaultdict(
        lambda: StaticDefaultDict[int, Char](new.default_char))
    for y, row in screen.buffer.items():
        copied_row = StaticDefaultDict[int, Char](row.default)
        copied_row.update(row)
        buffer[y] = copied_row
    new.buffer = buffer
    new.dirty, new.mode, new.tabstops = set(screen.dirty), set(screen.mode), set(screen.tabstops)
    return new


def idle_capped(events: list[Event], cap: float | None, clock: float = 0.0, last: float = 0.0) -> list[float]:
    """Display times: each gap between events shortened to at most `cap` seconds (going on from
    display time `clock` at recording time `last`)."""
    times = []
    for event in events:
        gap = max(0.0, event.time - last)
        clock += min(gap, cap) if cap else gap
        last = event.time
        times.append(clock)
    return times


def scaled(times: list[float], speed: float) -> list[float]:
    """Wall-clock times at `speed` (2.0 plays twice as fast)."""
    return [t / speed for t in times]


@dataclass
class Marker:
    time: float
    index: int
    label: str

    @property
    def kind(self) -> str:
        return self.label.split(":", 1)[0]


@dataclass
class Keyframe:
    """The screen once the events before `index` are applied. A keyframe from the disk cache
    holds a loader instead, and becomes a screen only when a seek needs it."""

    index: int
    screen: SafeScreen | None = None
    loader: Callable[[], SafeScreen] | None = None

    def fresh_screen(self) -> SafeScreen:
        """A screen of this moment that the caller may change."""
        if self.screen is None:
            assert self.loader is not None
            self.screen = self.loader()
        return clone_screen(self.screen)


@dataclass
class Timeline:
    cast: Cast
    idle_cap: float | None = 2.0
    times: list[float] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    keyframes: list[Keyframe] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = idle_capped(self.cast.events, self.idle_cap)
        # What replaying up to each event costs (bytes, plus a little per event): seeks pick
        # the cheaper of going on from where they are and starting from a keyframe.
        self.costs = [0, *itertools.accumulate(len(e.data) + EVENT_COST for e in self.cast.events)]
        self.markers = [Marker(self.times[i], i, printable(e.data)) for i, e in enumerate(self.cast.events)
                        if e.code in "mx"]
        width, height = self.cast.size
        # Recordings made without a terminal size (asciinema under a pipe) say 0x0.
        self.width, self.height = (width if width > 0 else 80), (height if height > 0 else 24)
        self.width, self.height = min(self.width, 1000), min(self.height, 1000)  # hostile headers
        # A session without a pty went to the user's terminal through their own tty, which turns
        # each line feed into CR LF: the screen replays it in new line mode (LNM).
        meta = self.cast.header.get("bastion")
        self.newline_mode = isinstance(meta, dict) and meta.get("pty") is False
        if self.keyframes:  # a complete set (from the cache, or another timeline of this cast)
            self._covered = len(self.cast.events)
        else:
            self._build_keyframes()
        self._natural = NaturalScan(max(self.width, 1), max(self.height, 1), onlcr=self.newline_mode)
        self._natural_lock = threading.Lock()
        self._natural_keyframes: dict[int, Keyframe] = {}

    def scan_naturals(self, count: int) -> None:
        """Find the natural keyframes (see `NaturalScan`) among the first `count` events, if
        not done yet: seeks then start from the last one before their target. Any thread."""
        scan = self._natural
        while not self.scanned_to(count):  # a stretch at a time: threads share it
            with self._natural_lock:
                scan.scan(self.cast.events, self.costs, min(count, scan.scanned + NATURAL_STRETCH))

    def looks_redrawn(self, count: int | None = None) -> bool:
        """The output before `count` events (the end) places the cursor often, as full-screen
        programs draw: the emulator would replay it byte by byte, and natural keyframes are
        worth finding first. Logs and shells (which replay fast) do not."""
        events = self.cast.events[:count][-200:] if count is not None else self.cast.events[-200:]
        sample = "".join([e.data for e in events if e.code == "o"])[-1_000_000:]
        return len(_MOVE.findall(sample)) * 500 >= len(sample) > 0

    def scanned_to(self, count: int) -> bool:
        """The natural keyframes among the first `count` events are found (or none can be)."""
        scan = self._natural
        # Events are appended before their costs (`extend`, on another thread).
        return scan.stopped or scan.scanned >= min(count, len(self.cast.events), len(self.costs) - 1)

    def extend(self, events: list[Event]) -> None:
        """Events appended to the recording (a followed one, or one still being read). A seek
        thread may be replaying this timeline meanwhile: it reads only what was there before."""
        if not events:
            return
        old = self.cast.events
        added = idle_capped(events, self.idle_cap, self.times[-1] if self.times else 0.0,
                            old[-1].time if old else 0.0)
        first = len(old)
        costs = list(itertools.accumulate((len(e.data) + EVENT_COST for e in events), initial=self.costs[-1]))
        self.markers.extend(Marker(added[i], first + i, printable(e.data)) for i, e in enumerate(events)
                            if e.code in "mx")
        old.extend(events)
        self.costs.extend(costs[1:])
        self.times.extend(added)

    @property
    def complete(self) -> bool:
        """Every keyframe is made: seeks anywhere start from at most one stretch back."""
        return self._covered >= len(self.cast.events)

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0

    def new_screen(self) -> tuple[SafeScreen, pyte.ByteStream]:
        screen = SafeScreen(max(self.width, 1), max(self.height, 1))
        if self.newline_mode:
            screen.without_pty()
        return screen, pyte.ByteStream(screen)

    def _build_keyframes(self) -> None:
        """Keyframes are made as replay first passes a stretch, so opening costs nothing."""
        screen, _ = self.new_screen()
        self.keyframes = [Keyframe(0, copy.deepcopy(screen))]
        self._covered = 0  # events up to here have had their keyframes made

    def cost(self, start: int, stop: int) -> int:
        """What applying events [start, stop) costs, roughly in bytes."""
        return self.costs[stop] - self.costs[start]

    def keyframe_before(self, count: int) -> Keyframe:
        """The last keyframe at or before `count` events: a made one, or a natural one from
        the events scanned so far (`scan_naturals`), whichever is later."""
        keyframes = self.keyframes
        made = keyframes[bisect.bisect_right([k.index for k in keyframes], count) - 1]
        scan = self._natural
        at = bisect.bisect_right(scan.indices, count) - 1
        if at < 0 or scan.indices[at] <= made.index:
            return made
        keyframe = self._natural_keyframes.get(at)
        if keyframe is None:
            point, events = scan.points[at], self.cast.events
            keyframe = Keyframe(scan.indices[at], loader=lambda: point.screen(events))
            self._natural_keyframes[at] = keyframe
        return keyframe

    def index_at(self, time: float) -> int:
        """How many events have happened by display time `time`."""
        return bisect.bisect_right(self.times, time)

    def screen_at(self, time: float) -> SafeScreen:
        return self.screen_after(self.index_at(time))

    def keyframe_screen(self, count: int) -> tuple[int, SafeScreen]:
        """(index, a screen of it) of the last sound keyframe at or before `count` events."""
        while True:
            keyframe = self.keyframe_before(count)
            try:
                return keyframe.index, keyframe.fresh_screen()
            except ValueError:  # a damaged cached keyframe: forget it, start from an earlier one
                if keyframe not in self.keyframes:
                    raise
                self.keyframes.remove(keyframe)

    def screen_after(self, count: int) -> SafeScreen:
        """The screen once the first `count` events are applied (from the nearest keyframe)."""
        start, screen = self.keyframe_screen(count)
        self.replay(screen, start, count)
        return screen

    def replay(self, screen: SafeScreen, start: int, stop: int,
               interrupted: Callable[[int], bool] | None = None) -> None:
        """Apply events [start, stop) to `screen` in place, making the keyframes of every stretch
        passed for the first time. `interrupted(events applied)` is asked between events and
        between slices of a large one; when it says so, `Interrupted` is raised."""
        feeder = Feeder(screen)
        events = self.cast.events
        fed, scanned = 0, 0  # at the last keyframe
        extends = start <= self._covered  # keyframes are made in order, with no gap
        for index in range(start, stop):
            if interrupted is not None and interrupted(index):
                feeder.flush()
                raise Interrupted(index)
            try:
                feed(feeder, events[index],
                     None if interrupted is None else functools.partial(interrupted, index))
            except Interrupted:
                raise Interrupted(index, torn=True) from None
            if extends and index >= self._covered and (
                    feeder.fed - fed >= KEYFRAME_BYTES
                    or feeder.scanned - scanned >= KEYFRAME_BYTES * KEYFRAME_SCANNED):
                feeder.flush()
                if self.keyframes[-1].index < index + 1:
                    self.keyframes.append(Keyframe(index + 1, clone_screen(screen)))
                self._covered = index + 1
                fed, scanned = feeder.fed, feeder.scanned
        feeder.flush()
        if extends:
            self._covered = max(self._covered, stop)

    def advance(self, screen: SafeScreen, start: int, stop: int) -> None:
        """Apply events [start, stop) to `screen` in place (playback moving forward)."""
        feeder = Feeder(screen)
        for event in self.cast.events[start:stop]:
            feed(feeder, event)
        feeder.flush()

    def search(self, query: str) -> list[int]:
        """Event indices whose output, typed input or marker contains `query` (any case)."""
        needle = query.lower()
        return [i for i, e in enumerate(self.cast.events) if e.code in "oim" and needle in e.data.lower()]

    def next_marker(self, time: float) -> Marker | None:
        return next((m for m in self.markers if m.time > time + 1e-9), None)

    def previous_marker(self, time: float) -> Marker | None:
        earlier = [m for m in self.markers if m.time < time - 1e-9]
        return earlier[-1] if earlier else None


def feed(feeder: Feeder, event: Event, interrupted: Callable[[], bool] | None = None) -> None:
    """Apply one event: output to the emulator (a large one in slices, `interrupted` asked
    between them), a resize to the screen."""
    if event.code == "o":
        feeder.feed(event.data, interrupted)
    elif event.code == "r":
        try:
            cols, rows = (int(v) for v in event.data.split("x"))
        except ValueError:
            return
        if 0 < cols <= 1000 and 0 < rows <= 1000:
            feeder.flush()
            feeder.screen.resize(rows, cols)

# Output that changes nothing but the cells of the cursor's row and the cursor's column, the
# cursor's row only downwards, and the drawing attributes: printable text, CR, LF, TAB, BS, BEL,
# SGR (colours and styles), erasing in the line, moves along the line (CSI G, C, D) and window
# titles (OSC 0, 1, 2: the player ignores them). Anything else (every other escape or control,
# and bytes that were not UTF-8) is "unsafe" and always goes through the emulator.
_UNSAFE = re.compile(r"(\x1b\][012];[^\x00-\x1f\x7f-\x9f]*(?:\x07|\x1b\\))"  # a title: passed over
                     "|[\x00-\x06\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f\ud800-\udfff]"
                     r"|\x1b(?!\[[0-9;]*[mKGCD])")


def _next_unsafe(text: str, position: int) -> re.Match[str] | None:
    while (found := _UNSAFE.search(text, position)) is not None and found.group(1):
        position = found.end()
    return found
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_CSI = re.compile(r"\x1b\[(\??)([0-9;]*)([@-~])")
_CSI_HANDLERS = dict(pyte.Stream.csi)
# For the common case, ASCII output whose only escapes are CSIs of those: bytes operations.
_ASCII_SAFE = bytes(range(0x20, 0x7F)) + b"\r\n\t\x08\x07\x1b"
_PARAMETERS = b"0123456789;"
_LINE_FINALS = (b"m", b"K", b"G", b"C", b"D")
CARRY_LIMIT = 4096  # a longer unfinished sequence (a title never ended) goes to the emulator as it is
DROP_LINES = 4096  # held line feeds beyond those the screen needs before what they hide is dropped
HOLD_LIMIT = 256 * 1024  # characters held back at most
_RESET = re.compile(r"\x1b\[0*m")  # every attribute back to its default, whatever came before


def _safe_ascii(text: str) -> bool:
    """ASCII text whose only escapes are SGR, EL, CHA, CUF and CUB and that holds no other
    control than CR, LF, TAB, BS and BEL (most output), found faster than with `_UNSAFE`."""
    if not text.isascii():
        return False
    data = text.encode("ascii")
    if data.translate(None, _ASCII_SAFE):
        return False
    bare = data.translate(None, _PARAMETERS)
    escapes = bare.count(b"\x1b") - bare.count(b"\x1b[m")
    return not escapes or escapes == sum(bare.count(b"\x1b[" + final) for final in _LINE_FINALS[1:])


def _last_return(piece: str, limit: int, newline_mode: bool) -> int:
    """Where in `piece[:limit]` the cursor last went back to column 0: its last CR, or in new
    line mode its last CR or LF; -1 if nowhere."""
    cr = piece.rfind("\r", 0, limit)
    return max(cr, piece.rfind("\n", 0, limit)) if newline_mode else cr


class Feeder:
    """Feeds output events to a screen as `pyte.ByteStream` would, but skips what cannot show.

    Within a stretch of safe output (see `_UNSAFE`), while the scroll region is the whole screen
    and origin mode is off, the screen at the end does not depend on what the stretch drew before
    a point just after a carriage return (column 0; in new line mode, a line feed too) that is
    followed by at least twice as many line feeds as the screen has rows: a line feed never moves
    the cursor up and nothing else in such a stretch moves it between rows, so after `rows` line
    feeds the cursor is on the last row whatever row it started from, and `rows` more scroll every
    older row away. The attributes at that point are those of the stretch's last full reset and
    the SGRs after it, and nothing else in the emulator (modes, charsets, tab stops, margins,
    saved cursors, size) changes in such a stretch. So safe output is held back, and once it holds
    enough line feeds the part before the cut is dropped: its SGRs are applied, the cursor put at
    column 0 of the last row, and only the rest is fed, in the pieces the events made (pyte draws
    a run of text as one piece). The result is the screen that feeding every byte gives, exactly;
    `fed` counts what the emulator was given, `scanned` what was passed over."""

    def __init__(self, screen: SafeScreen) -> None:
        self.screen = screen
        self.stream = pyte.ByteStream(screen)
        self.pending: list[str] = []  # safe output held back, in the pieces it came in
        self.lines = 0  # line feeds in `pending`
        self.held = 0  # characters in `pending`
        self.droppable = True  # what `pending` hides may be dropped (see `_hold`)
        self.fed = 0
        self.scanned = 0
        self._unasked = 0  # bytes fed since `interrupted` was last asked

    def _plain(self) -> bool:
        """The emulator waits for text: no escape sequence or UTF-8 character half read."""
        stream = self.stream
        return bool(stream._taking_plain_text) and stream.use_utf8 and not stream.utf8_decoder.getstate()[0]

    def feed(self, text: str, interrupted: Callable[[], bool] | None = None) -> None:
        """Feed one output event's text (surrogate escapes stand for bytes that were not UTF-8).
        An escape sequence it ends inside waits on the screen (`SafeScreen.carry`) for the next."""
        self.scanned += len(text)
        text = self._carried(text)
        if not text:
            return
        if not self.pending and not self._plain():
            self._emulate(text, interrupted)
            return
        if _safe_ascii(text):
            self._hold(text, interrupted)
            return
        position, end = 0, len(text)
        while position < end:
            unsafe = _next_unsafe(text, position)
            if unsafe is None:
                self._hold(text[position:] if position else text, interrupted)
                return
            # The unsafe stretch starts at its line (just after a CR or LF: pyte begins a new
            # piece of text there, so cutting there feeds the same pieces)...
            at = unsafe.start()
            start = max(text.rfind("\n", position, at), text.rfind("\r", position, at)) + 1
            if start > position:
                self._hold(text[position:start], interrupted)
            else:
                start = position
            self.flush()
            if "\ud800" <= unsafe.group()[0] <= "\udfff" or "\x1b%" in text:
                # Bytes that are not UTF-8, or an event that may switch the decoding (ESC %):
                # pyte decodes each write whole, so the rest of the event goes in one piece.
                self._emulate(text[start:], interrupted)
                return
            # ... and ends at the end of a line where the emulator waits for text again.
            stop = unsafe.end()
            while True:
                newline = text.find("\n", stop)
                stop = end if newline < 0 else newline + 1
                self._emulate(text[start:stop], interrupted)
                start = stop
                if interrupted is not None and self._unasked >= SLICE_BYTES:
                    self._unasked = 0
                    if interrupted():
                        raise Interrupted(0, torn=True)
                if stop >= end or self._plain():
                    break
            position = stop

    def _carried(self, text: str) -> str:
        """`text` after what the last event cut, without the escape sequence it ends inside (kept
        on the screen for the next)."""
        screen = self.screen
        if screen.carry:
            text, screen.carry = screen.carry + text, ""
        if "\x1b" in text[-CARRY_LIMIT:] and (cut := _PARTIAL.search(text, max(0, len(text) - CARRY_LIMIT))):
            text, screen.carry = text[:cut.start()], text[cut.start():]
        return text

    def _emulate(self, text: str, interrupted: Callable[[], bool] | None = None) -> None:
        """Feed `text` to the emulator, in slices between which `interrupted` is asked."""
        stream = self.stream
        as_text = (text.isascii() and "\x1b%" not in text and stream.use_utf8
                   and not stream.utf8_decoder.getstate()[0])  # decoding it would change nothing
        data: str | bytes = text if as_text else text.encode("utf-8", "surrogateescape")
        self.fed += len(data)
        self._unasked += len(data)
        feed = self._dispatch if as_text else stream.feed
        if len(data) <= SLICE_BYTES or interrupted is None:
            feed(data)  # type: ignore[arg-type]
            return
        offset = 0
        while offset < len(data):
            if offset and interrupted():
                raise Interrupted(0, torn=True)
            # Cut after a line's end where there is one: pyte draws a run of text as one piece.
            stop = offset + SLICE_BYTES
            if stop < len(data):
                if isinstance(data, str):
                    stop = max(data.rfind("\n", offset, stop), data.rfind("\r", offset, stop)) + 1 or stop
                else:
                    stop = max(data.rfind(b"\n", offset, stop), data.rfind(b"\r", offset, stop)) + 1 or stop
            feed(data[offset:stop])  # type: ignore[arg-type]
            offset = stop

    def _dispatch(self, text: str) -> None:
        """What `stream.feed` does with `text`, but each CSI sequence of plain digits and `;`
        that arrives while the parser waits for text is handed to its handler at once, with the
        parameters pyte would give it (pyte reads escape sequences one character at a time)."""
        stream, screen = self.stream, self.screen
        position = 0
        for csi in _CSI.finditer(text):
            start = csi.start()
            if start > position:
                pyte.Stream.feed(stream, text[position:start])
            if stream._taking_plain_text:
                private, parameters, final = csi.groups()
                name = _CSI_HANDLERS.get(final)
                if name is not None:
                    handler = getattr(screen, name)
                    arguments = [min(int(p or 0), 9999) for p in parameters.split(";")]
                    if private:
                        handler(*arguments, private=True)
                    else:
                        handler(*arguments)
            else:  # inside another sequence (a title, say): pyte reads on
                pyte.Stream.feed(stream, csi.group())
            position = csi.end()
        if position < len(text):
            pyte.Stream.feed(stream, text[position:] if position else text)

    def _hold(self, piece: str, interrupted: Callable[[], bool] | None) -> None:
        if not self.pending:
            # pyte leaves the cursor below the screen when it shrinks: what is drawn there stays
            # (shown again if the screen grows), as no line feed scrolls it away.
            self.droppable = self.screen.cursor.y < self.screen.lines
        self.pending.append(piece)
        self.lines += piece.count("\n")
        self.held += len(piece)
        if self.lines >= 2 * self.screen.lines + DROP_LINES or self.held >= HOLD_LIMIT:
            self._drop()
            if self.held >= HOLD_LIMIT:  # long lines without enough line feeds: fed as they come
                self._feed_held(interrupted)

    def _drop(self) -> None:
        """Drop what the last `2 * rows` line feeds after a CR (in new line mode, or a line feed)
        make invisible (or feed it all when the scroll region or origin mode would keep it on
        screen, or there is no CR)."""
        screen, pending = self.screen, self.pending
        margins = screen.margins
        whole = margins is None or (margins.top, margins.bottom) == (0, screen.lines - 1)
        if not whole or modes.DECOM in screen.mode or not self.droppable:
            self._feed_held()
            return
        need, seen = 2 * screen.lines, 0
        for at in range(len(pending) - 1, -1, -1):
            count = pending[at].count("\n")
            if seen + count >= need:
                break
            seen += count
        else:
            return
        piece, limit = pending[at], len(pending[at])
        for _ in range(need - seen):
            limit = piece.rfind("\n", 0, limit)
        newline_mode = modes.LNM in screen.mode
        while True:  # the last return to column 0 before that line feed, here or in an earlier piece
            cr = _last_return(pending[at], limit, newline_mode)
            if cr >= 0:
                break
            if at == 0:
                if self.lines > 64 * screen.lines:  # no CR to cut after: feed it, do not hoard it
                    self._feed_held()
                return
            at -= 1
            limit = len(pending[at])
        dropped = [*pending[:at], pending[at][:cr + 1]]
        kept = [pending[at][cr + 1:], *pending[at + 1:]]
        attributes: list[str] = []
        for piece in reversed(dropped):
            sgrs = list(_SGR.finditer(piece)) if "\x1b" in piece else []
            resets = [i for i, m in enumerate(sgrs) if _RESET.fullmatch(m.group())]
            if resets:
                attributes[:0] = [m.group() for m in sgrs[resets[-1]:]]
                break
            attributes[:0] = [m.group() for m in sgrs]
        if attributes:
            self._emulate("".join(attributes))
        screen.cursor.x, screen.cursor.y = 0, screen.lines - 1
        screen.dirty.update(range(screen.lines))
        self.pending = [piece for piece in kept if piece]
        self.lines = sum(piece.count("\n") for piece in self.pending)
        self.held = sum(len(piece) for piece in self.pending)

    def flush(self) -> None:
        """Feed what is held back: the screen is then exactly that of every byte fed so far."""
        if self.lines > 2 * self.screen.lines:
            self._drop()
        self._feed_held()

    def _feed_held(self, interrupted: Callable[[], bool] | None = None) -> None:
        pending, self.pending, self.lines, self.held = self.pending, [], 0, 0
        for piece in pending:
            self._emulate(piece, interrupted)



# Natural keyframes: points in the output after which the screen no longer depends on what came
# before, found by a scan that emulates no drawing (see `NaturalScan`).
NATURAL_STRETCH = 2048  # events scanned at a time
NATURAL_SPACING = 128 * 1024  # at most one natural keyframe per this much output (bytes, roughly)
_BATCH = 1024 * 1024  # output scanned as one text at most (events where no point may be taken)
_NEUTRAL = r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]"  # a character that is neither control nor stray byte
# Output whose effect is on the cells, the cursor's position and the drawing attributes only:
# text and C0 controls, CSI sequences but those that set modes, margins or tab stops (pyte takes
# `?`, `>` and space anywhere among the parameters), ESC D/E/M and the escapes pyte ignores,
# ESC # (DECALN), charset designations (ignored in UTF-8) and OSC strings (titles, ignored).
_COMMON_TOKEN = (r"\[[0-9;? >]*+[!-#%-/:<=@-fi-km-qs-~]"
                 r"|[^\x00-\x1f\x7f-\x9f\ud800-\udfff\[\]#%()cH78]"
                 rf"|[#()]{_NEUTRAL}"
                 r"|\][RP]"
                 rf"|\][^RP\x00-\x1f\x7f-\x9f\ud800-\udfff]{_NEUTRAL}*+(?:\x07|\x1b\\)")
_COMMON_RUN = re.compile(rf"(?:\x1b\[[0-9;? >]*+[!-#%-/:<=@-fi-km-qs-~]|[^\x1b\x80-\x9f\ud800-\udfff]++"
                         rf"|\x1b(?:{_COMMON_TOKEN}))*+")
# The rare sequences the scan follows; any other is one it cannot follow, and it stops there.
_STATE_CSI = re.compile(r"\x1b\[([0-9;? >]*)([ghlr])")
_PARTIAL = re.compile(r"\x1b(?:\[[0-9;? >]*|[#()]|\][^\x00-\x1f\x7f-\x9f\ud800-\udfff]*\x1b?)?\Z")
# A full clear (`CSI 2 J`, `CSI 3 J`) with the cursor placed absolutely (this) next to it: the
# screen after it does not depend on the cells or the cursor before it.
_MOVE = re.compile(r"\x1b\[[0-9;]*[Hf]")
# A row drawn whole: the cursor put at its start, printable ASCII in any colours, the rest of
# the row erased. After every row is drawn so, the cells do not depend on what came before.
_ROW = re.compile(r"\x1b\[([0-9]{0,4})(?:;1?)?[Hf]((?:[ -~]++|\x1b\[[0-9;]*+m)*+)\x1b\[[02]?K")
# pyte keeps a cell past the last column that an insert pushes there, or that an erase up to the
# cursor sets when the cursor waits past the last column.
_INSERT = re.compile(r"\x1b\[(?:[0-9;? >]*@|[? >]*0*1[0-9;? >]*[JK])")
_ANY_TOKEN = re.compile(rf"\x1b(?:{_COMMON_TOKEN}|\[[0-9;? >]*+[ghlr]|[cH78])")
_SGR_TOKEN = re.compile(r"\x1b\[[0-9;? >]*m")
_SIMPLE_SGR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class _Natural:
    """What a screen holds just before the point at `offset` in event `event` beyond its cells
    and cursor position: enough to make the screen after that event from nothing."""

    event: int
    offset: int
    last: int  # the event it gives the screen after
    columns: int
    lines: int
    mode: frozenset[int]
    margins: tuple[int, int] | None
    tabstops: frozenset[int]
    saved_columns: int | None
    attrs: Char
    hidden: bool
    at: int  # where in the recording's output (see `Timeline.costs`)
    onlcr: bool = False  # see `SafeScreen.onlcr`

    def screen(self, events: list[Event]) -> SafeScreen:
        """The screen once events up to `last` are applied, made from this point on."""
        screen = SafeScreen(self.columns, self.lines)
        screen.onlcr = self.onlcr
        screen.mode = set(self.mode)
        screen.margins = pyte.screens.Margins(*self.margins) if self.margins else None
        screen.tabstops = set(self.tabstops)
        screen.saved_columns = self.saved_columns
        screen.cursor.attrs, screen.cursor.hidden = self.attrs, self.hidden
        feeder = Feeder(screen)
        feeder.feed(events[self.event].data[self.offset:])
        for event in events[self.event + 1:self.last + 1]:
            feed(feeder, event)
        feeder.flush()
        return screen


def _uncounted(text: str, start: int, stop: int, final: str, forms: tuple[str, ...]) -> tuple[int, int]:
    """(how many `final` characters in text[start:stop] are not the last of one of `forms`,
    how many are), counted at C speed and only as far as needed."""
    left = text.count(final, start, stop)
    counted = 0
    for form in forms:
        if not left:
            break
        found = text.count(form, start, stop)
        left, counted = left - found, counted + found
    return left, counted


class NaturalScan:
    """Finds natural keyframes: points after which the screen depends only on the state a full
    redraw leaves (size, modes, scroll region, tab stops, attributes, the cursor's visibility,
    saved cursors), not on any cell or cursor position before. They are a full clear (`CSI 2 J`
    or `CSI 3 J`) with an absolute cursor move (`CSI H`) next to it, a reset (`ESC c`), and a
    run of rows each drawn whole (`CSI row H`, printable text and colours, `CSI K`) that covers
    every row, as full-screen programs redraw. Output events up to the next resize are read as
    one text (as the emulator reads them), so a point may start in one event and give the
    screen after a later one.

    That state changes only at a few rare sequences (modes, margins, tab stops, saved cursors,
    resets, resizes) and at SGRs. So the scan looks at those alone, with a pyte screen of its own
    that sees nothing else, and checks that everything in between is output that cannot change
    that state (`_COMMON_TOKEN`), with every escape sequence whole, so that pyte reads the text
    as the scan does. A point is taken only where everything is known: no saved cursor (it holds
    a position the scan does not follow), tab stops not set at the cursor, attributes known
    (since the last full SGR reset), origin mode off, and for drawn rows insert mode off and
    nothing left outside the screen (pyte keeps cells past the last column or below the last
    row after an insert or a shrink, until a full clear). At the first sequence it cannot follow
    (a latin-1 switch, bytes that are not UTF-8, C1 controls, reverse video, a malformed escape)
    the scan stops for good: no natural keyframe after it."""

    def __init__(self, columns: int, lines: int, *, onlcr: bool = False) -> None:
        self.shadow = SafeScreen(columns, lines)  # modes, margins, tab stops, saved cursors, size
        if onlcr:
            self.shadow.without_pty()
        self.scratch = SafeScreen(1, 1)  # the attributes, from SGRs
        self.stream = pyte.Stream(self.scratch)
        self.attrs_known = True
        self.tabs_known = True
        self.clean = True  # no cell outside the screen, the cursor on it
        self.stopped = False
        self.carry = ""
        self.scanned = 0  # events scanned
        self.points: list[_Natural] = []
        self.indices: list[int] = []  # the event count each point gives (its last event + 1)
        self._last = -NATURAL_SPACING  # where the last point taken is
        self._interned: dict[Any, Any] = {}
        self._found: list[_Natural] = []
        # The text scanned now: output events joined (after what the last one cut), where each
        # starts in it, their indices and where they start in the recording's output.
        self._text, self._shift = "", 0
        self._starts: list[int] = []
        self._events: list[int] = []
        self._costs: list[int] = []

    def scan(self, events: list[Event], costs: list[int], stop: int) -> None:
        stop = min(stop, len(events), len(costs) - 1)
        while self.scanned < stop and not self.stopped:
            index = self.scanned
            event = events[index]
            if event.code == "r":
                try:
                    cols, rows = (int(v) for v in event.data.split("x"))
                except ValueError:
                    cols = rows = 0
                if 0 < cols <= 1000 and 0 < rows <= 1000:
                    if cols < self.shadow.columns or rows < self.shadow.lines:
                        self.clean = False
                    self.shadow.resize(rows, cols)
                self.scanned += 1
                continue
            # Events up to the next resize are scanned as one text (the emulator reads them so).
            end = index + 1
            while end < stop and events[end].code != "r" and costs[end] - costs[index] < _BATCH:
                end += 1
            outputs = [i for i in range(index, end) if events[i].code == "o"]
            if outputs:
                self._starts, self._events, self._costs = [], outputs, [costs[i] for i in outputs]
                position = len(self.carry)
                for i in outputs:
                    self._starts.append(position)
                    position += len(events[i].data)
                self._shift = len(self.carry)
                self._text = "".join([self.carry, *(events[i].data for i in outputs)])
                self.carry = ""
                self._output()
            self.scanned = end

    def _intern(self, value: Any) -> Any:
        return self._interned.setdefault(value, value)

    def _attrs(self, text: str, start: int, stop: int) -> None:
        """Apply the SGRs of text[start:stop] (from its last full reset) to the attributes."""
        reset = max(text.rfind("\x1b[m", start, stop), text.rfind("\x1b[0m", start, stop))
        if reset >= 0:
            start, self.attrs_known = reset, True
        if self.attrs_known and text.find("\x1b[", start, stop) >= 0:
            sgrs = _SGR_TOKEN.findall(text, start, stop)
            if sgrs in (["\x1b[m"], ["\x1b[0m"]):
                self.scratch.cursor.attrs = self.scratch.default_char
            elif sgrs:
                self.stream.feed("".join(sgrs))

    def _whole(self, position: int) -> bool:
        """No escape sequence of the text runs over `position` (an event's end)."""
        text = self._text
        if position >= len(text):
            return True
        at = text.rfind("\x1b", 0, position)
        if at < 0:
            return True
        token = _ANY_TOKEN.match(text, at)
        return token is not None and token.end() <= position

    def _take(self, at: int, until: int, kind: str) -> None:
        """A point at `at` in the text (the redraw ends at `until`), if everything is known."""
        shadow, text = self.shadow, self._text
        if at < self._shift or shadow.savepoints:
            return
        first = bisect.bisect_right(self._starts, at) - 1
        last = bisect.bisect_right(self._starts, until - 1) - 1
        offset = at - self._starts[first]
        where = self._costs[first] + offset
        if where - (self._found[-1].at if self._found else self._last) < NATURAL_SPACING:
            return
        if kind != "reset" and (not self.tabs_known or not self.attrs_known or modes.DECOM in shadow.mode):
            return
        if kind == "rows" and (not self.clean or modes.IRM in shadow.mode):
            return
        end = self._starts[last + 1] if last + 1 < len(self._starts) else len(text)
        if not self._whole(end):  # the event it gives the screen after ends inside a sequence
            return
        margins = (shadow.margins.top, shadow.margins.bottom) if shadow.margins else None
        mode = self._intern(frozenset(shadow.mode))
        tabstops = self._intern(frozenset(shadow.tabstops))
        self._found.append(_Natural(self._events[first], offset, self._events[last], shadow.columns,
                                    shadow.lines, mode, margins, tabstops, shadow.saved_columns,
                                    self.scratch.cursor.attrs, shadow.cursor.hidden, where, shadow.onlcr))

    def _rows(self, text: str, start: int, stop: int) -> tuple[int, int]:
        """Where the last run of drawn rows ending in text[start:stop] that covers every row
        starts (each row drawn at or after it) and ends, or (-1, -1)."""
        lines, columns = self.shadow.lines, self.shadow.columns
        width = lines * 96
        while True:
            begin = max(start, stop - width)
            found, rows, end, seen = (-1, -1), dict[int, int](), -1, 0
            for row in _ROW.finditer(text, begin, stop):
                seen += 1
                body = row.group(2)
                wraps = len(body) > columns and len(_SIMPLE_SGR.sub("", body)) > columns
                if row.start() != end or wraps:  # a run ends
                    if len(rows) == lines:
                        found = (min(rows.values()), end)
                    rows = {}
                end = -1 if wraps else row.end()
                if not wraps:
                    rows[min(int(row.group(1) or 0) or 1, lines) - 1] = row.start()
            if len(rows) == lines:
                found = (min(rows.values()), end)
            if found[0] >= 0 or seen >= 2 * lines or begin == start or width >= 64 * 1024:
                return found  # found, or rows enough were seen for a redraw and none covered all
            width *= 4

    def _clears(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Where each full clear with a cursor move next to it in text[start:stop] starts and
        ends, found from its erase at C speed."""
        text, found = self._text, []
        for erase in ("\x1b[2J", "\x1b[3J"):
            at = text.find(erase, start, stop)
            while at >= 0:
                move = _MOVE.match(text, at + 4, stop)
                before = text.rfind("\x1b", start, at)
                if move is not None:
                    found.append((at, move.end()))
                elif before >= 0 and _MOVE.fullmatch(text, before, at):
                    found.append((before, at + 4))
                at = text.find(erase, at + 4, stop)
        return sorted(found)

    def _segment(self, start: int, stop: int, applied: int) -> int:
        """Output with no rare sequence: the points in it; returns where attributes are known."""
        text = self._text
        # Most output holds no insert and no erase up to the cursor (all its erases are of the
        # usual forms) and no clear: counted at C speed, not searched.
        erases = _uncounted(text, start, stop, "K", ("\x1b[K", "\x1b[0K", "\x1b[2K"))
        inserts = (text.find("@", start, stop) >= 0 or erases[0] > 0
                   or _uncounted(text, start, stop, "J", ("\x1b[J", "\x1b[0J", "\x1b[2J", "\x1b[3J"))[0] > 0)
        clears = text.find("\x1b[2J", start, stop) >= 0 or text.find("\x1b[3J", start, stop) >= 0
        marks = [(m.start(), m.start(), "insert") for m in _INSERT.finditer(text, start, stop)] if inserts \
            else []
        if clears:
            marks += [(*clear, "clear") for clear in self._clears(start, stop)]
        if erases[1] >= self.shadow.lines:  # the last whole redraw in each stretch of NATURAL_SPACING
            step = max(NATURAL_SPACING, 1024)
            for chunk in range(start, stop, step):
                chunk_end = min(stop, chunk + step)
                if clears and max(text.find(f"\x1b[{n}J", chunk, chunk_end) for n in "23") >= 0:
                    continue  # a full clear there will do
                rows = self._rows(text, chunk, chunk_end)
                if rows[0] >= 0:
                    marks.append((*rows, "rows"))
        for at, until, kind in sorted(marks):
            if kind == "insert":
                self.clean = False
                continue
            self._attrs(text, applied, at)
            applied = at
            self._take(at, until, kind)
            if kind == "clear":
                self.clean = True
        return applied

    def _state_csi(self, parameters: str, final: str) -> bool:
        """A CSI that sets modes, margins or tab stops, applied; False if the scan must stop."""
        shadow = self.shadow
        private = "?" in parameters
        digits = parameters.translate({63: None, 32: None, 62: None})  # pyte skips `?`, ` ` and `>`
        numbers = [min(int(p or 0), 9999) for p in digits.split(";")]
        if final in "hl" and private and 5 in numbers:
            return False  # reverse video: every cell and the defaults change
        if final in "hl" and (3 in numbers if private else 4 in numbers):
            self.clean = False  # a change of width, or insert mode
        if final == "g":
            if numbers[0] == 0 and shadow.tabstops:
                self.tabs_known = False  # cleared at the cursor, which the scan does not follow
            elif numbers[0] == 3:
                self.tabs_known = True
        handler = getattr(shadow, _CSI_HANDLERS[final])
        if private:
            handler(*numbers, private=True)
        else:
            handler(*numbers)
        return True

    def _output(self) -> None:
        text = self._text
        position, end = 0, len(text)
        applied = 0  # SGRs applied up to here
        self._found = []
        while position < end:
            at = _COMMON_RUN.match(text, position).end()  # type: ignore[union-attr] # it matches ""
            applied = self._segment(position, at, applied)
            if at >= end:
                break
            token = _STATE_CSI.match(text, at)
            if token is not None:
                if not self._state_csi(*token.groups()):
                    self._stop(at)
                    return
                position = token.end()
                continue
            escaped = self._escape(at, applied)
            if escaped is None:
                return
            position = applied = escaped
        self._attrs(text, applied, end)
        self._commit(end)

    def _commit(self, end: int) -> None:
        """Keep the points found whose last event ends before `end` (with every sequence whole)."""
        for point in self._found:
            last = self._events.index(point.last)
            if (self._starts[last + 1] if last + 1 < len(self._starts) else len(self._text)) <= end:
                self.points.append(point)
                self.indices.append(point.last + 1)
                self._last = point.at
        self._found = []

    def _stop(self, at: int) -> None:
        self._commit(at)
        self.stopped = True

    def _escape(self, at: int, applied: int) -> int | None:
        """A rare sequence other than a CSI at `at`, applied: where to go on (attributes known up
        to there), or None when the text ends here (the scan stopped, or a sequence is cut)."""
        shadow, text = self.shadow, self._text
        two = text[at:at + 2]
        if two == "\x1bc":
            self._take(at, at + 2, "reset")
            shadow.reset()
            self.scratch.cursor.attrs = self.scratch.default_char
            self.attrs_known = self.tabs_known = self.clean = True
        elif two in ("\x1bH", "\x1b7"):
            self._attrs(text, applied, at)
            if two == "\x1bH":
                self.tabs_known = False  # set at the cursor
            else:
                shadow.save_cursor()
        elif two == "\x1b8":
            if shadow.savepoints:
                self.attrs_known = False  # those saved with the cursor
            else:
                self._attrs(text, applied, at)
            shadow.restore_cursor()
        elif _PARTIAL.match(text, at) and len(text) - at <= CARRY_LIMIT:
            self._attrs(text, applied, at)
            self.carry = text[at:]
            self._commit(at)
            return None
        else:
            self._stop(at)
            return None
        return at + 2

def plain_lines(screen: pyte.Screen) -> list[str]:
    return [line.rstrip() for line in screen.display]
