"""The recorder alone: one session's output through the recorder process, as the relay hands it
over, and the CPU that costs each side per 100 MB (the relay's side, the worker process's).

No SSH here: this isolates what recording adds, which `jump.py` can only show as lost
throughput on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder

LOG_LINE = b"2026-11-28T14:00:00.123Z INFO api request handled path=/v1/items/42 status=200 ms=12\r\n"


async def record(mb: int, chunk: int, directory: Path) -> None:
    recorder = Recorder(LocalDirectoryStore(directory), None, RecordingKey.generate(),
                        loop=asyncio.get_running_loop(), process=True)
    recording = recorder.open(session_id="bench", width=80, height=24, term="xterm", command=None,
                              metadata={}, index_fields={})
    room = asyncio.Event()
    room.set()
    recording.on_backlog = lambda full: room.clear() if full else room.set()
    data = (LOG_LINE * (chunk // len(LOG_LINE) + 1))[:chunk]
    start, before = time.perf_counter(), os.times()
    for n in range(mb * 1_000_000 // chunk):
        recording.output(data)
        if n % 8 == 0:
            await asyncio.sleep(0)  # the loop sends what was handed over
        await room.wait()
    recording.close(exit_status=0)
    recorder.stop(60)  # the worker has written, signed and exited
    seconds, after = time.perf_counter() - start, os.times()
    relay = after.user + after.system - before.user - before.system
    worker = after.children_user + after.children_system - before.children_user - before.children_system
    kernel = after.children_system - before.children_system
    print(f"recorder alone: {mb / seconds:.0f} MB/s on {mb} MB of log lines ({chunk}-byte chunks); "
          f"CPU s per 100 MB: relay side {relay * 100 / mb:.3f}, "
          f"worker {worker * 100 / mb:.3f} (kernel {kernel * 100 / mb:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=256 * 1024,
                        help="bytes per output call (one socket read)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the recording goes (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        asyncio.run(record(args.mb, args.chunk, Path(directory)))


if __name__ == "__main__":
    main()
