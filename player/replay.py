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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pyte
from pyte.screens import Char, Cursor, StaticDefaultDict

from recorder.asciicast import Cast, Event
from recorder.printable import printable

KEYFRAME_SECONDS = 5.0
KEYFRAME_BYTES = 128 * 1024
SLICE_BYTES = 64 * 1024  # a large output event is fed in slices, so a replay can stop between them
EVENT_COST = 64  # what applying an event costs beyond its bytes, in bytes


class Interrupted(Exception):
    """A replay was stopped part way (the reviewer moved on): `index` events are applied, and
    the screen holds exactly them unless `torn` (stopped inside a large event)."""

    def __init__(self, index: int, *, torn: bool = False) -> None:
        super().__init__(index)
        self.index, self.torn = index, torn


class SafeScreen(pyte.Screen):
    """A pyte screen that never answers the recorded program (device status, attributes...)."""

    def write_process_input(self, data: str) -> None:
        return

    def set_title(self, param: str) -> None:  # titles are not for the reviewer's terminal
        return

    def set_icon_name(self, param: str) -> None:
        return


def _tolerant(name: str) -> None:
    """A recorded `CSI 1;1 A`, `CSI 1;1;1 H` or `CSI ? 4 m` replays as a terminal draws it:
    pyte hands its handlers every parameter it parsed, and private sequences as `private=True`,
    and most handlers refuse them, which stopped the replay of any session that printed one."""
    handler = getattr(pyte.Screen, name)
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


def idle_capped(events: list[Event], cap: float | None) -> list[float]:
    """Display times: each gap between events shortened to at most `cap` seconds."""
    times, clock, last = [], 0.0, 0.0
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
        stream = pyte.ByteStream(screen)
        events, times = self.cast.events, self.times
        since_time = times[start - 1] if start else 0.0
        since_bytes = 0
        extends = start <= self._covered  # keyframes are made in order, with no gap
        for index in range(start, stop):
            if interrupted is not None and interrupted(index):
                raise Interrupted(index)
            try:
                since_bytes += apply(screen, stream, events[index],
                                     None if interrupted is None else functools.partial(interrupted, index))
            except Interrupted:
                raise Interrupted(index, torn=True) from None
            if extends and index >= self._covered and (times[index] - since_time >= KEYFRAME_SECONDS
                                                       or since_bytes >= KEYFRAME_BYTES):
                if self.keyframes[-1].index < index + 1:
                    self.keyframes.append(Keyframe(index + 1, clone_screen(screen)))
                self._covered = index + 1
                since_time, since_bytes = times[index], 0
        if extends:
            self._covered = max(self._covered, stop)

    def advance(self, screen: SafeScreen, start: int, stop: int) -> None:
        """Apply events [start, stop) to `screen` in place (playback moving forward)."""
        stream = pyte.ByteStream(screen)
        for event in self.cast.events[start:stop]:
            apply(screen, stream, event)

    def search(self, query: str) -> list[int]:
        """Event indices whose output, typed input or marker contains `query` (any case)."""
        needle = query.lower()
        return [i for i, e in enumerate(self.cast.events) if e.code in "oim" and needle in e.data.lower()]

    def next_marker(self, time: float) -> Marker | None:
        return next((m for m in self.markers if m.time > time + 1e-9), None)

    def previous_marker(self, time: float) -> Marker | None:
        earlier = [m for m in self.markers if m.time < time - 1e-9]
        return earlier[-1] if earlier else None


def apply(screen: SafeScreen, stream: pyte.ByteStream, event: Event,
          interrupted: Callable[[], bool] | None = None) -> int:
    """Feed one event to the emulator; returns the output bytes it carried. A large output is
    fed in slices, and `interrupted` (if given) is asked between them."""
    if event.code == "o":
        data = event.data.encode("utf-8", "surrogateescape")
        if len(data) <= SLICE_BYTES or interrupted is None:
            stream.feed(data)
            return len(data)
        view = memoryview(data)
        for offset in range(0, len(data), SLICE_BYTES):
            if offset and interrupted():
                raise Interrupted(0, torn=True)
            stream.feed(bytes(view[offset:offset + SLICE_BYTES]))
        return len(data)
    if event.code == "r":
        try:
            cols, rows = (int(v) for v in event.data.split("x"))
        except ValueError:
            return 0
        if 0 < cols <= 1000 and 0 < rows <= 1000:
            screen.resize(rows, cols)
    return 0


def plain_lines(screen: pyte.Screen) -> list[str]:
    return [line.rstrip() for line in screen.display]
