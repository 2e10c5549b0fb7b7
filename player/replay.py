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
        if how in (0, 1, 2, 3):
            super().erase_in_display(how, *args, **kwargs)

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
        if self.keyframes:  # a complete set (from the cache, or another timeline of this cast)
            self._covered = len(self.cast.events)
        else:
            self._build_keyframes()

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
        """The last keyframe at or before `count` events."""
        keyframes = self.keyframes
        return keyframes[bisect.bisect_right([k.index for k in keyframes], count) - 1]

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


class Feeder:
    """Feeds output events to a screen as `pyte.ByteStream` would, but skips what cannot show.

    Within a stretch of safe output (see `_UNSAFE`), while the scroll region is the whole screen
    and origin mode is off, the screen at the end does not depend on what the stretch drew before
    a point just after a carriage return (column 0) that is followed by at least twice as many
    line feeds as the screen has rows: a line feed never moves the cursor up and nothing else in
    such a stretch moves it between rows, so after `rows` line feeds the cursor is on the last row
    whatever row it started from, and `rows` more scroll every older row away. The attributes at
    that point are those of the stretch's last full reset and the SGRs after it, and nothing else
    in the emulator (modes, charsets, tab stops, margins, saved cursors, size) changes in such a
    stretch. So safe output is held back, and once it holds enough line feeds the part before the
    cut is dropped: its SGRs are applied, the cursor put at column 0 of the last row, and only the
    rest is fed, in the pieces the events made (pyte draws a run of text as one piece). The
    result is the screen that feeding every byte gives, exactly; `fed` counts what the emulator
    was given, `scanned` what was passed over."""

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
        """Feed one output event's text (surrogate escapes stand for bytes that were not UTF-8)."""
        self.scanned += len(text)
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
        """Drop what the last `2 * rows` line feeds after a CR make invisible (or feed it all when
        the scroll region or origin mode would keep it on screen, or there is no CR)."""
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
        while True:  # the last CR before that line feed, in this piece or an earlier one
            cr = pending[at].rfind("\r", 0, limit)
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


def plain_lines(screen: pyte.Screen) -> list[str]:
    return [line.rstrip() for line in screen.display]
