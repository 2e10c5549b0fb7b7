"""Player figures: open time, seek times and frames per second at 16x on a generated recording."""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path

from player.keyframes import KeyframeCache
from player.render import screen_text
from player.replay import Timeline
from recorder.asciicast import CastEncoder, build_header, load_cast


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


def seek_times(timeline: Timeline, count: int = 30) -> list[float]:
    seeks = []
    rng = random.Random(1)
    for _ in range(count):
        target = rng.random() * timeline.duration
        start = time.perf_counter()
        screen_text(timeline.screen_at(target))
        seeks.append(time.perf_counter() - start)
    return seeks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    data = generate(args.mb)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "bench.cast"
        path.write_bytes(data)
        cache = KeyframeCache(Path(work) / "keyframes")
        # First open: no keyframes yet; the player builds them in the background.
        start = time.perf_counter()
        timeline = Timeline(load_cast(path.read_bytes()))
        first_open = time.perf_counter() - start
        start = time.perf_counter()
        timeline.screen_after(len(timeline.cast.events))
        build = time.perf_counter() - start
        start = time.perf_counter()
        cache.save(path, len(timeline.cast.events), timeline.keyframes)
        save = time.perf_counter() - start
        size = sum(f.stat().st_size for f in cache.directory.iterdir())
        # Every later open: the cast and the cached keyframes, in a process that does not also
        # hold the first open's screens (as a reviewer's next `bastion play` does not).
        del timeline
        gc.collect()
        start = time.perf_counter()
        cast = load_cast(path.read_bytes())
        timeline = Timeline(cast, keyframes=cache.load(path, len(cast.events)) or [])
        opened = time.perf_counter() - start
        assert timeline.complete
    print(f"{args.mb} MB recording: first open {first_open:.2f} s; keyframes built in {build:.1f} s,"
          f" cached in {save:.2f} s ({size / 1e6:.1f} MB); open with the cache {opened:.2f} s")
    seeks = seek_times(timeline)
    # 16x playback: each frame advances 16/30 s of recording and renders.
    screen, applied, frames, start = timeline.screen_after(0), 0, 0, time.perf_counter()
    position = 0.0
    while position < min(timeline.duration, 300) and time.perf_counter() - start < 10:
        position += 16 / 30
        target = timeline.index_at(position)
        timeline.advance(screen, applied, target)
        applied = target
        screen_text(screen)
        frames += 1
    fps = frames / (time.perf_counter() - start)
    print(f"{args.mb} MB recording ({len(timeline.cast.events)} events, {timeline.duration:.0f} s shown): "
          f"{len(timeline.keyframes)} keyframes; seek (cached keyframes) median "
          f"{statistics.median(seeks) * 1000:.0f} ms, worst {max(seeks) * 1000:.0f} ms; "
          f"16x playback {fps:.0f} frames/s")


if __name__ == "__main__":
    main()
