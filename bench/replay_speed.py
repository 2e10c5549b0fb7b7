"""Player figures as a reviewer feels them: from a key press to its frame drawn, through the real
app (Textual's Pilot drives it, headless), on a generated recording; first open (no keyframes
yet) and with the keyframes cached.

For each key (End, ←, Home, →, in that order, then → from the middle) the time from the press
to the frame on screen: the screen at the new position replayed, handed to the UI and drawn.
A run opens a recording holding a single 10 MB output event and times End, then `q`. A last
run opens a hostile recording (`--hostile-mb`, a cursor move on every line, as a full-screen
program draws, which the replay cannot skip) and times End the same way; there a `?` pressed
while End's seek runs measures how long the UI takes to answer (the help screen drawn), and
End's time includes that detour.
Where opening goes: reading, parsing, verifying the signatures (of a signed copy), the
timeline, and importing the player (Python and Textual) in a fresh process. Then opening
through the real app as `bastion play` does, in a fresh process, from its start: to the first
frame drawn (banner, terminal, status), to the whole recording read, and to the verdict shown.

Keys are posted to the app as the terminal driver posts them (`events.Key`), not with
`Pilot.press`: that one first waits for the process to go idle (up to a second, twice) and
would measure its own wait while a seek thread works.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual import events

from player.app import HelpScreen, PlayerApp, Recording, ReplayScreen, TerminalView
from player.keyframes import KeyframeCache
from player.replay import Timeline
from recorder.asciicast import CastEncoder, build_header, load_cast

SIZE = (140, 50)


def generate(megabytes: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    encoder = CastEncoder()
    lines = [encoder.header(build_header(version=2, width=120, height=40, timestamp=0))]
    clock, size = 0.0, 0
    while size < megabytes * 1_000_000:
        clock += rng.choice((0.001, 0.01, 0.2, 3.0))
        chunk = "".join(f"\x1b[3{rng.randint(1, 7)}m{rng.randint(0, 10**9)} log line {i}\x1b[0m\r\n"
                        for i in range(rng.randint(1, 60)))
        lines.append(encoder.data(clock, "o", chunk.encode()))
        size += len(lines[-1])
    return b"".join(lines)


def hostile(megabytes: int, seed: int = 5) -> bytes:
    """A full-screen program's output: every line drawn at its row with a cursor move."""
    rng = random.Random(seed)
    encoder = CastEncoder()
    lines = [encoder.header(build_header(version=2, width=120, height=40, timestamp=0))]
    clock, size, row = 0.0, 0, 0
    while size < megabytes * 1_000_000:
        clock += rng.choice((0.001, 0.01, 0.2, 3.0))
        parts = []
        for _ in range(rng.randint(1, 60)):
            row = row % 40 + 1
            colour, number = rng.randint(1, 7), rng.randint(0, 10**9)
            parts.append(f"\x1b[{row};1H\x1b[3{colour}m{number} row {row}\x1b[0m\x1b[K")
        lines.append(encoder.data(clock, "o", "".join(parts).encode()))
        size += len(lines[-1])
    return b"".join(lines)


def screens(megabytes: int, seed: int = 7, clear_every: int = 1) -> bytes:
    """A top-like program: once a second the whole screen redrawn (a header, then a table of
    processes, each row placed with a cursor move, coloured, erased to its end), starting with a
    full clear (`CSI H CSI 2 J`) every `clear_every` frames and with a move home otherwise."""
    rng = random.Random(seed)
    encoder = CastEncoder()
    width, height = 120, 40
    lines = [encoder.header(build_header(version=2, width=width, height=height, timestamp=0)),
             encoder.data(0.0, "o", b"\x1b[?1049h\x1b[?25l")]
    clock, size, frame = 0.0, 0, 0
    while size < megabytes * 1_000_000:
        clock += 1.0
        load = ", ".join(f"{rng.random() * 4:.2f}" for _ in range(3))
        parts = ["\x1b[H\x1b[2J" if frame % clear_every == 0 else "\x1b[H",
                 f"\x1b[1mtop - {int(clock) // 3600:02d}:{int(clock) // 60 % 60:02d}:{int(clock) % 60:02d}"
                 f" up, load average: {load}\x1b[m\x1b[K",
                 f"\x1b[2;1HTasks: {rng.randint(100, 300)} total\x1b[K", "\x1b[3;1H\x1b[K",
                 "\x1b[4;1H\x1b[7m    PID USER      PR  NI    VIRT    RES  %CPU  %MEM     TIME+ COMMAND"
                 + " " * (width - 71) + "\x1b[m\x1b[K"]
        for row in range(5, height + 1):
            pid, cpu = rng.randint(1, 99999), rng.random() * 100
            colour = "\x1b[1m" if cpu > 50 else ""
            parts.append(f"\x1b[{row};1H{colour}{pid:7d} user{row:<5d} 20   0 {rng.randint(10**4, 10**7):7d}"
                         f" {rng.randint(10**3, 10**6):6d} {cpu:5.1f} {rng.random() * 10:5.1f}"
                         f" {rng.randint(0, 999):5d}:{rng.randint(0, 59):02d}.{rng.randint(0, 99):02d}"
                         f" process-{rng.randint(0, 10**6)}\x1b[m\x1b[K")
        lines.append(encoder.data(clock, "o", "".join(parts).encode()))
        size += len(lines[-1])
        frame += 1
    return b"".join(lines)


def opening(path: Path) -> str:
    """Where opening goes, step by step (a signed copy, so verifying is timed too); the
    signatures are left beside it (`.sig`) and the public key in `key.pub`."""
    from recorder.chain import HashChain, checkpoint_line, verify
    from recorder.signing import RecordingKey

    key = RecordingKey.load_or_create(path.parent / "key")
    start = time.perf_counter()
    data = path.read_bytes()
    read = time.perf_counter() - start
    chain = HashChain()
    chain.extend(data.splitlines(keepends=True))
    signatures = checkpoint_line(key, chain, final=True, at=0.0)
    path.with_name(path.name + ".sig").write_bytes(signatures)
    start = time.perf_counter()
    cast = load_cast(data)
    parse = time.perf_counter() - start
    start = time.perf_counter()
    verdict = verify(data, signatures, key)
    checked = time.perf_counter() - start
    start = time.perf_counter()
    Timeline(cast)
    timeline = time.perf_counter() - start
    code = "import time; t = time.perf_counter(); import player.app; print(time.perf_counter() - t)"
    imports = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout)
    return (f"opening: read {read:.2f} s, parse {parse:.2f} s, verify {checked:.2f} s ({verdict.state}), "
            f"timeline {timeline:.2f} s; importing the player (Python, Textual) {imports:.2f} s")


def one_event(megabytes: int, drawn: bool = False) -> bytes:
    """One output event of `megabytes`: lines (each placed by a cursor move if `drawn`)."""
    encoder = CastEncoder()
    line = b"\x1b[%d;1H%08d a line in one huge write" if drawn else b"%08d a line in one huge write\r\n"
    count = megabytes * 1_000_000 // len(line % ((1, 1) if drawn else 1))
    body = b"".join(line % ((i % 40 + 1, i) if drawn else i) for i in range(count))
    return b"".join([encoder.header(build_header(version=2, width=120, height=40, timestamp=0)),
                     encoder.data(0.5, "o", b"before\r\n"), encoder.data(1.0, "o", body),
                     encoder.data(2.0, "o", b"after\r\n")])


async def first_frame(path: Path, started: float) -> None:
    """As `bastion play -c CONFIG FILE` opens it (the key verifies it), from the process's start
    (`started`, wall clock): the first frame drawn, every event read, the verdict shown."""
    from textual.widgets import Static

    from player.app import PlayerApp, ReplayScreen, TerminalView
    from player.cli import opening
    from recorder.signing import RecordingVerifier

    imported = time.time() - started
    verifier = RecordingVerifier.load(path.parent / "key.pub")
    cache = tempfile.TemporaryDirectory()  # none cached yet: as a first open, the builder starts
    screen = ReplayScreen(opening(None, path, None, verifier, cache=KeyframeCache(Path(cache.name))))
    app = PlayerApp(screen)
    figures: dict[str, float] = {}
    async with app.run_test(size=SIZE):
        view = screen.query_one(TerminalView)
        banner = screen.query_one("#banner", Static)

        def seen() -> bool:
            now = time.time() - started
            if "frame" not in figures and view.content is not None and not view._dirty_regions \
                    and not banner._dirty_regions:
                figures["frame"] = now
            if "read" not in figures and not screen._loading:
                figures["read"] = now
            if "verdict" not in figures and "verified" in str(banner.content):
                figures["verdict"] = now
            return len(figures) == 3

        await until(None, seen)
    cache.cleanup()
    print(f"open through the app: imports {imported:.2f} s, first frame {figures['frame']:.2f} s, "
          f"every event read {figures['read']:.2f} s, verdict shown {figures['verdict']:.2f} s "
          f"(from the process's start)", flush=True)


CHARACTERS = {"question_mark": "?", "q": "q"}


def press(app: PlayerApp, key: str) -> None:
    app.post_message(events.Key(key, CHARACTERS.get(key)))


async def until(pilot: object, probe: Callable[[], bool], limit: float = 1800) -> None:
    deadline = time.monotonic() + limit
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("the player did not get there")
        await asyncio.sleep(0.005)


async def timed(app: PlayerApp, key: str, done: Callable[[], bool], pilot: object) -> float:
    screen = app.screen
    assert isinstance(screen, ReplayScreen)
    before = screen.position
    start = time.perf_counter()
    press(app, key)
    await until(pilot, lambda: screen.position != before)  # the key was taken
    await until(pilot, done)
    return time.perf_counter() - start


async def keys(path: Path, cache: KeyframeCache | None, label: str, probe: bool) -> None:
    start = time.perf_counter()
    recording = Recording.open(path, None, cache=cache)
    opened = time.perf_counter() - start
    screen = ReplayScreen(recording)
    app = PlayerApp(screen)
    async with app.run_test(size=SIZE) as pilot:
        view = app.screen.query_one(TerminalView)

        def drawn() -> bool:  # the position's screen is the one shown, and it was drawn
            return getattr(screen, "settled", True) and view.content is not None and not view._dirty_regions

        figures = []
        for key in ("end", "left", "home", "right"):
            answered = None
            if key == "end" and probe:  # a key pressed while the seek runs: how long until the UI answers?
                seconds_start = time.perf_counter()
                press(app, key)
                await until(pilot, lambda: screen.position > 0)
                if not getattr(screen, "settled", True):
                    help_start = time.perf_counter()
                    press(app, "question_mark")
                    await until(pilot, lambda: isinstance(app.screen, HelpScreen))
                    answered = time.perf_counter() - help_start
                    press(app, "escape")
                    await until(pilot, lambda: app.screen is screen)
                await until(pilot, drawn)
                seconds = time.perf_counter() - seconds_start
            else:
                seconds = await timed(app, key, drawn, pilot)
            meanwhile = "" if answered is None else f" (a key meanwhile answered in {answered * 1000:.0f} ms)"
            figures.append(f"{key} {seconds:.2f} s{meanwhile}")
        screen.seek_to(recording.timeline.duration / 2)
        await until(pilot, drawn)
        seconds = await timed(app, "right", drawn, pilot)
        figures.append(f"→ from the middle {seconds:.2f} s")
    print(f"{label}: opened in {opened:.2f} s; " + ", ".join(figures), flush=True)


async def end_of(path: Path, quit_: bool) -> str:
    """End to its frame drawn; or `q` pressed while End replays, to the app gone."""
    screen = ReplayScreen(Recording.open(path, None))
    app = PlayerApp(screen)
    async with app.run_test(size=SIZE) as pilot:
        view = app.screen.query_one(TerminalView)
        pressed = time.perf_counter()
        press(app, "end")
        await until(pilot, lambda: screen.position > 0)
        if not quit_:
            await until(pilot, lambda: screen.settled and view.content is not None
                        and not view._dirty_regions)
            return f"End drawn in {time.perf_counter() - pressed:.2f} s"
        pressed = time.perf_counter()
        press(app, "q")
        await until(pilot, lambda: app._exit, limit=600)
        return f"`q` during End's replay quit in {(time.perf_counter() - pressed) * 1000:.0f} ms"


async def huge_event(path: Path, label: str) -> None:
    figures = [await end_of(path, quit_=False), await end_of(path, quit_=True)]
    print(f"{label}: " + ", ".join(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--hostile-mb", type=int, default=5)
    parser.add_argument("--payload", choices=("log", "hostile", "screens", "screens-homed"), default="log",
                        help="the main recording: coloured log lines (default), a cursor move on every line, "
                             "a top-like screen redrawn every second after a full clear, or with a full "
                             "clear every 60 frames only")
    parser.add_argument("--keys-only", action="store_true",
                        help="only the keys on the main recording, first open and cached")
    parser.add_argument("--phase", choices=("first", "cached", "huge", "hostile", "open"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "open":
        asyncio.run(first_frame(args.path, args.started))
        return
    if args.phase:  # one phase in a process of its own, as each `bastion play` is
        cache = KeyframeCache(args.path.parent / "keyframes")
        if args.phase == "huge":
            asyncio.run(huge_event(args.path, f"one 10 MB output event ({args.path.stem})"))
        else:
            label = {"first": "first open (no keyframes)", "cached": "cached keyframes",
                     "hostile": "hostile recording, first open"}[args.phase]
            asyncio.run(keys(args.path, cache, label, probe=args.phase == "hostile"))
        return
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "bench.cast"
        payloads: dict[str, Callable[[int], bytes]] = {
            "log": generate, "hostile": hostile, "screens": screens,
            "screens-homed": lambda mb: screens(mb, clear_every=60)}
        path.write_bytes(payloads[args.payload](args.mb))
        cast = load_cast(path.read_bytes())
        shown = Timeline(cast).duration
        print(f"{args.mb} MB recording ({args.payload}): {len(cast.events)} events, {shown:.0f} s shown",
              flush=True)
        del cast
        if not args.keys_only:
            print(opening(path), flush=True)

        def phase(name: str, target: Path = path) -> None:
            subprocess.run([sys.executable, __file__, "--phase", name, "--path", str(target),
                            "--started", str(time.time())], check=True)

        for _ in range(0 if args.keys_only else 3):
            phase("open")
        phase("first")
        cache = KeyframeCache(Path(work) / "keyframes")
        start = time.perf_counter()
        build = [sys.executable, "-m", "player.keyframes", str(path), str(cache.directory)]
        subprocess.run(build, check=True)
        seconds = time.perf_counter() - start
        print(f"keyframes built and cached in {seconds:.0f} s (a niced process)", flush=True)
        phase("cached")
        if args.keys_only:
            return
        huge = Path(work) / "lines.cast"
        huge.write_bytes(one_event(10))
        phase("huge", huge)
        huge = Path(work) / "drawn-lines.cast"
        huge.write_bytes(one_event(10, drawn=True))
        phase("huge", huge)
        drawn = Path(work) / "hostile.cast"
        drawn.write_bytes(hostile(args.hostile_mb))
        print(f"{args.hostile_mb} MB hostile recording:", flush=True)
        phase("hostile", drawn)


if __name__ == "__main__":
    main()
