"""The reviewer's player: a session browser and a replay screen (Textual)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from player.follow import FIRST_READ, Loader, Update
from player.keyframes import KeyframeCache
from player.render import screen_text
from player.replay import Interrupted, SafeScreen, Timeline, clone_screen
from recorder.asciicast import Cast, CastFormatError, load_cast
from recorder.chain import Verification, verify
from recorder.index import SessionRow
from recorder.printable import printable
from recorder.signing import RecordingVerifier

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
FPS = 30
# A seek whose replay costs less than this (bytes of output, roughly) is done at once on the UI
# thread (a few milliseconds); a longer one goes to a thread, and the UI keeps answering.
INLINE_COST = 32 * 1024
SCAN_WORTH = 1024 * 1024  # a seek looks for natural keyframes first if it would replay this much of
# a full-screen program's output (the emulator's 2 MB/s against the scan's 100-200 MB/s)
FOLLOW_INTERVAL = 0.25  # how often a followed recording is looked at again (seconds)


@dataclass
class Recording:
    """What the replay screen needs: the cast, where it came from, and its verdict. One made
    by `start` is still being read (`loader`): the screen reads the rest, and the verdict,
    in the background."""

    path: Path
    timeline: Timeline
    verification: Verification | None
    cache: KeyframeCache | None = None
    loader: Loader | None = None
    unread: Update | None = None  # what the loader's first read found, for the screen to take in

    @property
    def verifying(self) -> bool:
        """Its verdict is due and not known yet."""
        return self.verification is None and self.loader is not None and self.loader.verifying

    @classmethod
    def open(cls, path: Path, verifier: RecordingVerifier | None, *, idle_cap: float | None = 2.0,
             expected_lines: int | None = None, expected_head: str | None = None,
             expected_session: str | None = None, live: bool = False, unfinished: str | None = None,
             cache: KeyframeCache | None = None) -> Recording:
        """Read, parsed and verified whole, now."""
        data = path.read_bytes()
        cast = load_cast(data)
        verification = None
        if verifier is not None:
            sig = path.with_name(path.name + ".sig")
            verification = verify(data, sig.read_bytes() if sig.exists() else None, verifier,
                                  expected_lines=expected_lines, expected_head=expected_head,
                                  expected_session=expected_session, live=live, unfinished=unfinished)
        cached = cache.load(path, len(cast.events)) if cache is not None else None
        return cls(path, Timeline(cast, idle_cap=idle_cap, keyframes=cached or []), verification, cache)

    @classmethod
    def start(cls, loader: Loader, *, idle_cap: float | None = 2.0,
              cache: KeyframeCache | None = None) -> Recording:
        """Its header (and what else the first small read holds) read now; the replay screen
        reads the rest, and verifies it, once its first frame is drawn. Raises `CastFormatError`
        when the file does not start as a recording."""
        first = loader.poll(FIRST_READ)
        header = loader.tail.header
        if header is None:
            stopped = loader.tail.stopped
            if isinstance(stopped, CastFormatError):
                raise stopped
            if stopped is not None:
                raise OSError(str(stopped))
            raise CastFormatError(1, "empty file" if not loader.tail.partial else "no complete header line")
        timeline = Timeline(Cast(header=header), idle_cap=idle_cap)
        return cls(loader.path, timeline, None, cache, loader, unread=first)


class TerminalView(Static, can_focus=True):
    """The recorded terminal, drawn from the emulator's cells only."""

    def show(self, screen: SafeScreen, summary: Text | None = None) -> None:
        if summary is not None:
            self.update(summary)
            return
        text = Text("\n", no_wrap=True, overflow="crop").join(screen_text(screen))
        text.no_wrap, text.overflow = True, "crop"
        self.update(text)


class TimelineBar(Static):
    """Position and markers on one line; clicking seeks."""

    class Seeked(Message):
        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    def draw(self, position: float, duration: float, markers: list[float]) -> None:
        width = max(10, self.size.width - 2)
        cells = ["─"] * width
        for time_ in markers:
            if duration > 0:
                cells[min(width - 1, int(time_ / duration * width))] = "◆"
        head = min(width - 1, int(position / duration * width)) if duration > 0 else 0
        cells[head] = "●"
        self.update(Text("".join(cells), style="bright_white"))

    def on_click(self, event: object) -> None:
        x = getattr(event, "x", 0)
        self.post_message(self.Seeked(max(0.0, min(1.0, x / max(1, self.size.width - 2)))))


HELP = """\
space  play / pause          +  -   speed (0.25x to 16x)
→ ←    seek 5 s              shift+→ shift+←  seek 30 s
home   start                 end    end
]  [   next / previous marker   enter on a marker: jump there
/      search output, typed input and markers; n / N next / previous hit
i      idle cap on / off     q / escape  back
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")


class ReplayScreen(Screen[None]):
    BINDINGS = [
        Binding("space", "play_pause", "play/pause"),
        Binding("plus,equals_sign", "faster", "faster"),
        Binding("minus", "slower", "slower"),
        Binding("right", "seek(5)", "+5s"),
        Binding("left", "seek(-5)", "-5s"),
        Binding("shift+right", "seek(30)", "+30s", show=False),
        Binding("shift+left", "seek(-30)", "-30s", show=False),
        Binding("home", "jump_start", "start", show=False),
        Binding("end", "jump_end", "end", show=False),
        Binding("right_square_bracket", "next_marker", "next marker"),
        Binding("left_square_bracket", "previous_marker", "prev marker"),
        Binding("slash", "search", "search"),
        Binding("n", "next_hit", "next hit", show=False),
        Binding("N", "previous_hit", "prev hit", show=False),
        Binding("i", "toggle_idle", "idle cap", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q,escape", "back", "back"),
    ]

    position: reactive[float] = reactive(0.0)
    playing: reactive[bool] = reactive(False)
    speed: reactive[float] = reactive(1.0)

    def __init__(self, recording: Recording, *, follow: bool = False) -> None:
        super().__init__()
        self.recording = recording
        self.timeline = recording.timeline
        self._term = self.timeline.screen_after(0)
        self._applied = 0  # events applied to the screen shown
        self._wanted = 0  # events the position asks for
        self._seek: _Seek | None = None  # the thread bringing a screen to `_wanted`
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._builder: subprocess.Popen[bytes] | None = None
        self._hits: list[int] = []
        self._last_tick = time.monotonic()
        self._follow = follow  # keep up with what is appended to the recording
        self._was_live = recording.verification is not None and recording.verification.state == "live"
        self._problem: str | None = None  # why the recording could not be read on
        self._loading = recording.loader is not None  # until a read says all of it is in
        self._keyframing = False  # keyframes are read from the cache or being made

    def compose(self) -> ComposeResult:
        yield Static(self._banner_text(), id="banner", classes=self._banner_class())
        with Horizontal(id="body"):
            yield TerminalView(id="terminal")
            yield OptionList(*self._marker_options(), id="markers")
        yield TimelineBar(id="timeline")
        yield Input(placeholder="search output, typed commands, markers", id="search")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        sys.setswitchinterval(0.0005)  # a seek thread hands the interpreter back to the UI often
        self.set_interval(1 / FPS, self._tick)
        self.query_one(TerminalView).focus()  # Tab reaches the marker list
        recording = self.recording
        if recording.unread is not None:
            unread, recording.unread = recording.unread, None
            self._take(unread)
        if self._follow:
            self.position = self.timeline.duration  # following: what the user sees now, kept up with
            # Drawn once the screen is up: a session with nothing new to show is still shown.
            self.call_after_refresh(self._redraw)
        self._redraw()
        loader = recording.loader
        if loader is not None and not loader.done:
            # The first frame is drawn first; then the rest is read (and verified) in a thread.
            self.call_after_refresh(lambda: self.run_worker(self._read_on(loader), group="read"))
        if loader is None:
            self._loaded()

    async def _read_on(self, loader: Loader) -> None:
        """Reads what the recording holds beyond what is shown (all of it on open, a chunk at a
        time; then, following, what is appended), off the UI thread; takes each part in here."""
        while not self._closing and not loader.done:
            try:
                update = await asyncio.to_thread(loader.poll)
            except OSError as exc:
                update = Update(problem=f"{self.recording.path.name} cannot be read now "
                                        f"({exc.strerror or exc}); trying again")
            if self._closing or not self.is_mounted:
                return
            self._take(update)
            if loader.loaded and not update.events and not update.loaded:
                await asyncio.sleep(FOLLOW_INTERVAL)  # nothing new: look again in a while
        with contextlib.suppress(OSError):
            loader.close()

    def _take(self, update: Update) -> None:
        """On the UI thread: what a read found (events, verdict, a problem) goes on screen."""
        timeline = self.timeline
        if update.events:
            at_end = self.position >= timeline.duration - 1e-6
            count = len(timeline.markers)
            timeline.extend(update.events)
            if len(timeline.markers) > count:
                self.query_one("#markers", OptionList).add_options(self._marker_options(count))
            if self._follow and at_end:
                self.position = timeline.duration  # drawn by watch_position
        banner = update.verification is not None or update.problem is not None or update.state is not None
        if update.verification is not None:
            self.recording.verification = update.verification
            self._was_live = self._was_live or update.verification.state == "live"
        if update.problem is not None and update.problem != self._problem:
            self._problem = update.problem
            self.notify(update.problem, severity="error", timeout=10)
        if update.loaded and self._loading:
            self._loading = False
            banner = True
        if not self._loading and not self._keyframing and not self.recording.verifying:
            self._loaded()  # after the verdict: building keyframes would slow it down
        if banner:
            widget = self.query_one("#banner", Static)
            widget.update(self._banner_text())
            widget.set_classes(self._banner_class())
            self._redraw()
        elif update.events:  # the screen shown is the same: its place on the timeline is not
            markers = [m.time for m in timeline.markers]
            self.query_one(TimelineBar).draw(self.position, timeline.duration, markers)
            self._update_status()

    def _loaded(self) -> None:
        """Everything the recording held when opened is in: keyframes from the cache, or made."""
        self._keyframing = True
        if self.timeline.complete:
            return
        timeline = self.timeline
        if timeline.looks_redrawn():  # found while the reviewer looks at the first frame
            self.run_worker(lambda: timeline.scan_naturals(len(timeline.cast.events)), thread=True,
                            group="naturals")
        cache = self.recording.cache
        if cache is not None and not self._follow:
            self.run_worker(self._keyframes_from(cache), group="keyframes")
            return
        self.run_worker(self._build_keyframes, thread=True, exclusive=True, group="keyframes")

    async def _keyframes_from(self, cache: KeyframeCache) -> None:
        """The cached keyframes (read off the UI thread); without them, another process (another
        core, niced) builds and caches every keyframe, taken in once it is done. Seeks meanwhile
        make keyframes as they go."""
        timeline = self.timeline
        count = len(timeline.cast.events)
        if self.recording.loader is not None:  # opened at once: the cache is not read yet
            keyframes = await asyncio.to_thread(cache.load, self.recording.path, count)
            if keyframes is not None:
                if timeline is self.timeline and not timeline.complete:
                    timeline.keyframes, timeline._covered = keyframes, count
                return
        if not self._closing:
            self._start_builder(cache)

    def _start_builder(self, cache: KeyframeCache) -> None:
        with contextlib.suppress(OSError):
            path = self.recording.path
            command = [sys.executable, "-m", "player.keyframes", str(path), str(cache.directory)]
            self._builder = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            self.set_interval(0.5, self._builder_done)
            return
        self.run_worker(self._build_keyframes, thread=True, exclusive=True, group="keyframes")

    def on_unmount(self) -> None:
        self._closing = True
        if self._builder is not None and self._builder.poll() is None:
            self._builder.kill()
            self._builder.wait()

    def _builder_done(self) -> None:
        builder, cache, timeline = self._builder, self.recording.cache, self.timeline
        if builder is None or builder.poll() is None or cache is None:
            return
        self._builder = None
        keyframes = cache.load(self.recording.path, len(timeline.cast.events))
        if keyframes is not None and not timeline.complete:
            timeline.keyframes, timeline._covered = keyframes, len(timeline.cast.events)

    def _build_keyframes(self) -> None:
        """In a thread, on a timeline of its own: every keyframe, so later seeks are quick.
        The result is swapped in on the UI thread; until then seeks replay as they go. A
        finished recording's keyframes are cached for the next open."""
        timeline = self.timeline
        # Of the events there now: a followed recording grows meanwhile.
        copy = Timeline(Cast(timeline.cast.header, list(timeline.cast.events)), idle_cap=timeline.idle_cap)
        copy.screen_after(len(copy.cast.events))
        if self.recording.cache is not None and not self._follow:
            self.recording.cache.save(self.recording.path, len(copy.cast.events), copy.keyframes)
        self.app.call_from_thread(self._keyframes_ready, timeline, copy)

    def _keyframes_ready(self, timeline: Timeline, built: Timeline) -> None:
        if timeline is self.timeline and built._covered > timeline._covered:
            timeline.keyframes, timeline._covered = built.keyframes, built._covered

    # -- integrity ---------------------------------------------------------------------------

    def _banner_class(self) -> str:
        v = self.recording.verification
        if self._problem is not None:
            return "tampered"
        return "unverified" if v is None else ("tampered" if v.state in ("tampered", "unsigned") else v.state)

    def _banner_text(self) -> str:
        text = self._verdict_text()
        v = self.recording.verification
        if self._follow and self._was_live and v is not None and v.state != "live":
            text = f"ENDED - {text}"  # it was live when we started following it
        if self._problem is not None:
            return f"{self._problem} | {text}"
        return text

    def _verdict_text(self) -> str:  # noqa: PLR0911 - one return per verdict
        v = self.recording.verification
        name = self.recording.path.name
        if v is None and self.recording.verifying:
            return f"{name}: checking its signatures..."
        if v is None:
            return f"{name}: not verified (no recording key given; use -c CONFIG)"
        session = f"session {v.session}" if v.session else "no session id in its header"
        if v.state == "verified":
            return f"{name}: verified, {session}, signed by {v.key_fingerprint}"
        if v.state == "live":
            return f"{name}: LIVE - {session} is still being recorded; intact up to event {v.intact_events}"
        if v.state == "incomplete":
            return (f"{name}: INCOMPLETE - {session} was not closed ({v.reason}); "
                    f"intact up to event {v.intact_events}")
        if v.state == "unsigned":
            return f"{name}: UNSIGNED - no signature file"
        return f"{name}: TAMPERED at event {v.at_event}: {v.reason}"

    # -- markers -----------------------------------------------------------------------------

    def _marker_options(self, first: int = 0) -> list[Option]:
        markers = self.timeline.markers
        return [Option(Text(f"{m.time:7.1f}s  {m.label}", no_wrap=True, overflow="ellipsis"), id=str(i))
                for i, m in enumerate(markers[first:], first)]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        marker = self.timeline.markers[int(event.option.id or 0)]
        self.seek_to(marker.time)

    def on_timeline_bar_seeked(self, event: TimelineBar.Seeked) -> None:
        self.seek_to(event.fraction * self.timeline.duration)

    # -- playback ----------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if not self.playing:
            return
        position = min(self.timeline.duration, self.position + elapsed * self.speed)
        if position >= self.timeline.duration and not self._follow:
            self.playing = False
        self.position = position

    def watch_position(self, position: float) -> None:
        self._wanted = self.timeline.index_at(position)
        self._bring()
        self._redraw()

    @property
    def settled(self) -> bool:
        """The screen shown is the one the position asks for."""
        return self._seek is None and self._applied == self._wanted

    def _bring(self) -> None:
        """Bring the screen to `_wanted` events, from where it is or from the nearest keyframe
        (whichever replays less): at once when that is cheap, otherwise in a thread."""
        if self._seek is not None:
            return  # it follows `_wanted`
        timeline, target = self.timeline, self._wanted
        if target == self._applied:
            return
        keyframe = timeline.keyframe_before(target)
        go_on = self._applied <= target and (timeline.cost(self._applied, target)
                                             <= timeline.cost(keyframe.index, target))
        start = self._applied if go_on else keyframe.index
        if timeline.cost(start, target) <= INLINE_COST or self._loop is None:
            if not go_on:
                start, self._term = timeline.keyframe_screen(target)
            timeline.replay(self._term, start, target)
            self._applied = target
            return
        self._seek = _Seek(self, timeline, clone_screen(self._term) if go_on else None, start)
        self._seek.start()

    def _seeked(self, seek: _Seek, screen: SafeScreen | None, index: int) -> None:
        """On the UI thread: a seek thread is done (`screen` None: it gave up)."""
        if seek is not self._seek:
            return
        self._seek = None
        if screen is not None and seek.timeline is self.timeline:
            self._term, self._applied = screen, index
        if not self._closing:
            self._bring()
            self._redraw()

    def _post(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the UI thread (from any thread), unless the app is gone."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    def watch_playing(self, playing: bool) -> None:
        self._last_tick = time.monotonic()
        self._update_status()

    def watch_speed(self, speed: float) -> None:
        self._update_status()

    def seek_to(self, position: float) -> None:
        self.position = max(0.0, min(self.timeline.duration, position))

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        self.query_one(TerminalView).show(self._term, self._summary())
        self.query_one(TimelineBar).draw(self.position, self.timeline.duration,
                                         [m.time for m in self.timeline.markers])
        self._update_status()

    def _summary(self) -> Text | None:
        """Sessions without terminal output (sftp, scp) are shown as what they did."""
        cast = self.timeline.cast
        if self._loading or any(e.code == "o" for e in cast.events):
            return None
        meta = cast.header.get("bastion", {}) if isinstance(cast.header.get("bastion"), dict) else {}
        what = cast.header.get("command") or meta.get("subsystem") or meta.get("kind") or "session"
        who = f"{meta.get('user', '?')} as {meta.get('login', '?')}@{meta.get('target', '?')}"
        lines = [Text(f"{who}: {what}", style="bold")]
        lines.append(Text("no terminal output; what happened:"))
        for marker in self.timeline.markers:
            done = marker.time <= self.position
            style = "bright_white" if done else "dim"
            lines.append(Text(f"  {marker.time:7.1f}s  {marker.label}", style=style))
        return Text("\n").join(lines)

    def _update_status(self) -> None:
        if not self.is_mounted:
            return
        state = "▶" if self.playing else "⏸"
        if self._seek is not None:
            state += f" seeking {self._seek.progress:.0%}"
        hits = f"  {len(self._hits)} hits" if self._hits else ""
        cap = f"idle≤{self.timeline.idle_cap:g}s" if self.timeline.idle_cap else "idle uncapped"
        self.query_one("#status", Static).update(
            f"{state} {self.position:7.1f}s / {self.timeline.duration:.1f}s  {self.speed:g}x  {cap}  "
            f"{self._term.columns}x{self._term.lines}{hits}  ? help")

    # -- actions -----------------------------------------------------------------------------

    def action_play_pause(self) -> None:  # not `toggle`: DOMNode.action_toggle flips an attribute
        if not self.playing and self.position >= self.timeline.duration:
            self.position = 0.0
        self.playing = not self.playing

    def action_faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed), SPEEDS[-1])

    def action_slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), SPEEDS[0])

    def action_seek(self, seconds: float) -> None:
        self.seek_to(self.position + seconds)

    def action_jump_start(self) -> None:
        self.seek_to(0)

    def action_jump_end(self) -> None:
        self.seek_to(self.timeline.duration)

    def action_next_marker(self) -> None:
        marker = self.timeline.next_marker(self.position)
        if marker is not None:
            self.seek_to(marker.time)

    def action_previous_marker(self) -> None:
        marker = self.timeline.previous_marker(self.position)
        if marker is not None:
            self.seek_to(marker.time)

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.add_class("visible")
        search.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "search":
            return
        self._hits = self.timeline.search(event.value) if event.value else []
        event.input.remove_class("visible")
        self.query_one(TerminalView).focus()
        self.action_next_hit(from_start=True)

    def action_next_hit(self, from_start: bool = False) -> None:
        times = [self.timeline.times[i] for i in self._hits]
        later = [t for t in times if from_start or t > self.position + 1e-9]
        if later:
            self.seek_to(later[0])
        self._update_status()

    def action_previous_hit(self) -> None:
        times = [self.timeline.times[i] for i in self._hits]
        earlier = [t for t in times if t < self.position - 1e-9]
        if earlier:
            self.seek_to(earlier[-1])

    def action_toggle_idle(self) -> None:
        position_index = self.timeline.index_at(self.position)
        cap = None if self.timeline.idle_cap else 2.0
        # Keyframes sit at event indices, which idle capping does not move: keep them.
        keyframes = self.timeline.keyframes if self.timeline.complete else []
        self.timeline = Timeline(self.timeline.cast, idle_cap=cap, keyframes=keyframes)
        self.recording.timeline = self.timeline
        self._term, self._applied = self.timeline.screen_after(0), 0
        self.position = self.timeline.times[position_index - 1] if position_index else 0.0
        self._redraw()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

class _Seek(threading.Thread):
    """Replays a screen to the position the reviewer asks for, off the UI thread. It follows
    `_wanted` as it changes (a held key, playback) and starts over from a keyframe when that is
    cheaper than going on; a large event is fed in slices, so a new key is never kept waiting
    behind it. The screen is handed to the UI thread when it is there."""

    def __init__(self, owner: ReplayScreen, timeline: Timeline, screen: SafeScreen | None,
                 start: int) -> None:
        super().__init__(name="seek", daemon=True)
        self.owner, self.timeline = owner, timeline
        self.screen, self.index = screen, start
        self.progress = 0.0

    def _gone(self) -> bool:
        return self.owner._closing or self.owner.timeline is not self.timeline

    def run(self) -> None:
        owner, timeline = self.owner, self.timeline
        screen, index = self.screen, self.index
        while not self._gone():
            target = owner._wanted
            # With every made keyframe no seek replays much.
            if not timeline.complete and not timeline.scanned_to(target) \
                    and timeline.cost(timeline.keyframe_before(target).index, target) > SCAN_WORTH \
                    and timeline.looks_redrawn(target):
                timeline.scan_naturals(target)
            keyframe = timeline.keyframe_before(target)
            if (screen is None or target < index
                    or timeline.cost(keyframe.index, target) < timeline.cost(index, target)):
                index, screen = timeline.keyframe_screen(target)
            if index == target:
                break
            first, total = index, max(1, timeline.cost(index, target))

            def interrupted(at: int, target: int = target, first: int = first, total: int = total) -> bool:
                self.progress = timeline.cost(first, at) / total
                return owner._wanted != target or self._gone()

            try:
                self.progress = 0.0
                timeline.replay(screen, index, target, interrupted)
                index = target
            except Interrupted as stop:
                if stop.torn:
                    screen = None  # half an event applied: no use
                else:
                    index = stop.index
        done, shown = (screen, index) if not self._gone() else (None, index)
        owner._post(lambda: owner._seeked(self, done, shown))


@dataclass(frozen=True)
class LiveEntry:
    """One live session as the browser's live view shows it."""

    id: str
    user: str
    login: str
    target: str
    kind: str
    command: str | None
    client: str
    started: float
    idle: float
    bytes_in: int
    bytes_out: int


class LiveError(Exception):
    """A live session that cannot be followed or ended now: one line for the reviewer."""


class LiveSource(Protocol):
    """The live sessions the browser may show, follow and (if `may_kill`) end."""

    @property
    def may_kill(self) -> bool: ...
    def sessions(self) -> list[LiveEntry]: ...
    def follow(self, session: str) -> Recording: ...  # read as it grows
    def kill(self, session: str, reason: str) -> str: ...  # waits until it has ended; one line


class KillScreen(ModalScreen[str | None]):
    """Why the session ends: the user reads it. Enter ends it, Esc cancels; a reason is needed."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, entry: LiveEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        who = f"{self.entry.user} as {self.entry.login}@{self.entry.target}"
        yield Static(Text(f"End session {self.entry.id} ({printable(who)})? The user reads the reason.\n"
                          "Enter ends it, Esc cancels."), id="kill-question")
        yield Input(placeholder="reason", id="kill-reason", max_length=200)

    def on_mount(self) -> None:
        self.query_one("#kill-reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self.notify("give a reason: the user reads it", severity="warning")
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


LIVE_INTERVAL = 1.0  # how often the live view is refreshed (seconds)


class LiveTable(DataTable[object]):
    """The live sessions; its keys show in the footer while it has the focus."""

    BINDINGS = [Binding("enter", "select_cursor", "follow"), Binding("k", "screen.kill", "end session")]


class BrowserScreen(Screen[None]):
    """The session list. Typing filters it (every printable key goes to the filter, but `q` on
    the list while no filter is set, which quits); Esc leaves the filter for the list, clears a
    filter that is set, and only then quits. With a live source, the sessions going on now are
    listed at the top, refreshed every second: Enter follows one, `k` ends it (with a reason)."""

    BINDINGS = [Binding("escape", "back", "clear filter / quit"), Binding("q", "app.quit", "quit"),
                Binding("slash", "filter", "filter", show=False)]

    def __init__(self, rows: list[SessionRow], opener: Callable[[SessionRow], Recording],
                 live: LiveSource | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.opener = opener
        self.live = live
        self.live_rows: list[LiveEntry] = []
        self._refreshing = False

    def compose(self) -> ComposeResult:
        hint = "filter: words, user:alice target:db-1 marker:upload since:2026-11-01 until:2026-11-30"
        yield Input(placeholder=hint, id="filter", select_on_focus=False)  # typing on goes on
        if self.live is not None:
            yield Static("live sessions: none", id="live-title")
            yield LiveTable(id="live", cursor_type="row")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        table.add_columns("started", "user", "login@target", "command", "duration", "exit", "markers",
                          "state")
        self._fill("")
        table.focus()
        if self.live is not None:
            self.query_one("#live", DataTable).add_columns(
                "live since", "user", "login@target", "kind", "command", "client", "idle", "in", "out")
            self.set_interval(LIVE_INTERVAL, self._refresh_live)
            self.call_after_refresh(self._refresh_live)

    async def _refresh_live(self) -> None:
        """The live sessions now (read off the UI thread); the cursor stays on its session."""
        if self.live is None or self._refreshing:
            return
        self._refreshing = True
        try:
            rows = await asyncio.to_thread(self.live.sessions)
        except Exception as exc:  # noqa: BLE001 - the registry cannot be read now: said, tried again
            self.query_one("#live-title", Static).update(
                Text(f"live sessions: cannot read them ({printable(str(exc) or type(exc).__name__)})"))
            return
        finally:
            self._refreshing = False
        if not self.is_mounted:
            return
        self.live_rows = rows
        self._fill_live(self.query_one("#filter", Input).value)

    def _fill_live(self, query: str) -> None:
        table = self.query_one("#live", DataTable)
        selected = self._live_selected()
        table.clear()
        shown = [e for e in self.live_rows if _live_matches(e, query)]
        for entry in shown:
            started = time.strftime("%H:%M:%S", time.localtime(entry.started))
            table.add_row(started, entry.user, f"{entry.login}@{entry.target}", entry.kind or "-",
                          Text(printable(entry.command or "")[:40], no_wrap=True, overflow="ellipsis"),
                          entry.client, _age(entry.idle), _size(entry.bytes_in), _size(entry.bytes_out),
                          key=entry.id)
        if selected is not None and any(e.id == selected.id for e in shown):
            table.move_cursor(row=table.get_row_index(selected.id))
        count = len(self.live_rows)
        keys = "enter follows" + (", k ends one" if self.live is not None and self.live.may_kill else "")
        self.query_one("#live-title", Static).update(
            f"live sessions: {count}" + (f" ({keys}; tab moves between lists)" if count else ""))

    def _live_selected(self) -> LiveEntry | None:
        table = self.query_one("#live", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None
        return next((e for e in self.live_rows if e.id == key), None)

    def _fill(self, query: str) -> None:
        table = self.query_one("#sessions", DataTable)
        table.clear()
        for row in self.rows:
            if _matches(row, query):
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started))
                duration = "live" if row.duration is None else f"{row.duration:.0f}s"
                exit_text = row.exit_signal or ("" if row.exit_status is None else str(row.exit_status))
                badges = " ".join(f"{kind}:{n}" for kind, n in sorted(row.markers.items()))
                state = row.verification or row.state
                table.add_row(started, row.user, f"{row.login}@{row.target}", _command(row), duration,
                              exit_text, badges, state, key=row.id)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        self._fill(event.value)
        if self.live is not None:
            self._fill_live(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one("#sessions", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_back(self) -> None:
        field = self.query_one("#filter", Input)
        if field.has_focus:
            self.query_one("#sessions", DataTable).focus()  # leave the filter; what it holds still applies
        elif field.value:
            field.value = ""
        else:
            self.app.exit()

    def on_key(self, event: events.Key) -> None:
        """A printable key typed on the list goes to the filter, as if it had been typed there."""
        field = self.query_one("#filter", Input)
        if field.has_focus or not event.is_printable or event.character is None or event.character == "/":
            return
        if event.character == "q" and not field.value:
            return  # the binding quits, as everywhere in the player; a filter starting with q starts with /
        if event.character == "k" and self._live_focused():
            return  # on the live view, k ends the session under the cursor
        event.stop()
        event.prevent_default()
        field.value += event.character
        field.cursor_position = len(field.value)
        field.focus()

    def _live_focused(self) -> bool:
        return self.live is not None and self.query_one("#live", DataTable).has_focus

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "live":
            self._follow(event.row_key.value)
            return
        row = next(r for r in self.rows if r.id == event.row_key.value)
        try:
            recording = self.opener(row)
        except (OSError, CastFormatError) as exc:
            self.notify(f"cannot open {row.id}: {exc}", severity="error")
            return
        self.app.push_screen(ReplayScreen(recording))

    def _follow(self, session: str | None) -> None:
        if self.live is None or session is None:
            return
        try:
            recording = self.live.follow(session)
        except (OSError, CastFormatError, LiveError) as exc:
            self.notify(f"cannot follow {session}: {exc}", severity="error")
            return
        self.app.push_screen(ReplayScreen(recording, follow=True))

    def action_kill(self) -> None:
        """End the live session under the cursor, once a reason is given."""
        if self.live is None or not self._live_focused():
            return
        entry = self._live_selected()
        if entry is None:
            return
        if not self.live.may_kill:
            self.notify("you may not end sessions (admins only)", severity="error")
            return

        def reason_given(reason: str | None) -> None:
            if reason is not None:
                self.run_worker(self._kill(entry, reason), group="kill")

        self.app.push_screen(KillScreen(entry), reason_given)

    async def _kill(self, entry: LiveEntry, reason: str) -> None:
        assert self.live is not None
        self.notify(f"ending {entry.id} ({entry.user})...")
        try:
            said = await asyncio.to_thread(self.live.kill, entry.id, reason)
        except LiveError as exc:
            self.notify(f"cannot end {entry.id}: {exc}", severity="error")
            return
        self.notify(said)
        await self._refresh_live()


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _size(count: float) -> str:
    for unit in ("B", "K", "M"):
        if count < 1024:
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    return f"{count:.1f}G"


def _live_matches(entry: LiveEntry, query: str) -> bool:
    """The filter's words and user:/target: narrow the live view too (dates and markers do not)."""
    for word in query.lower().split():
        field, _, value = word.partition(":")
        if value and field in ("since", "until", "marker"):
            continue
        if value and field == "user" and value not in entry.user.lower():
            return False
        if value and field == "target" and value not in entry.target.lower():
            return False
        if not value and not any(word in v.lower() for v in (entry.id, entry.user, entry.login, entry.target,
                                                            entry.command or "", entry.kind)):
            return False
    return True


def _command(row: SessionRow, width: int = 40) -> Text:
    """What the session ran: the exec command, the subsystem (sftp), or `(shell)`; shown
    escaped (it is user input), cut at `width`."""
    shown = row.command or (f"({row.kind})" if row.kind else "")
    return Text(printable(shown)[:width], no_wrap=True, overflow="ellipsis")


def _day(value: str) -> float | None:
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%d"))
    except ValueError:
        return None


def _matches(row: SessionRow, query: str) -> bool:
    """Words match anywhere; user:, target:, marker:, since:YYYY-MM-DD, until:YYYY-MM-DD narrow."""
    for word in query.lower().split():
        field, _, value = word.partition(":")
        if value and field in ("since", "until"):
            day = _day(value)
            if day is None:
                continue  # still being typed
            if (field == "since" and row.started < day) or (field == "until" and row.started >= day + 86400):
                return False
            continue
        if value and field == "user" and value not in row.user.lower():
            return False
        if value and field == "target" and value not in row.target.lower():
            return False
        if value and field == "marker" and not any(value in k for k in row.markers):
            return False
        if not value and not any(word in str(v).lower() for v in (row.id, row.user, row.login, row.target,
                                                                  row.command or "", row.kind or "")):
            return False
    return True


class PlayerApp(App[None]):
    CSS_PATH = "player.tcss"
    TITLE = "bastion player"

    def __init__(self, first: Screen[None]) -> None:
        super().__init__()
        self._first = first

    def on_mount(self) -> None:
        self.push_screen(self._first)
