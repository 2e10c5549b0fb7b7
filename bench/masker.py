"""The secret masker alone on realistic mixed terminal output (logs, JSON, ls -l, colours)."""

from __future__ import annotations

import argparse
import os
import random
import time

from bastion.core.masker import SecretMasker
from bastion.core.streamscreen import StreamsOutput


def realistic_output(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    parts, total, i = [], 0, 0
    while total < size:
        kind = i % 6
        if kind == 0:
            line = (f"2026-11-28T14:{i % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z INFO api request handled "
                    f"path=/v1/items/{i} status=200 ms={i % 97} user=u{i % 50}\n")
        elif kind == 1:
            line = (f'{{"id": {i}, "name": "item-{i}", "tags": ["a", "b"], "created": '
                    f'"2026-11-28T14:00:00Z", "size": {i * 37}, "owner": "team-{i % 9}"}}\n')
        elif kind == 2:
            line = f"-rw-r--r-- 1 root root {rng.randint(0, 10**8):>9} Nov 28 14:{i % 60:02d} file-{i}.log\n"
        elif kind == 3:
            line = (f"\x1b[01;34mdir-{i}\x1b[0m  \x1b[01;32mscript-{i}.sh\x1b[0m  notes.txt  "
                    f"\x1b[31mcore\x1b[0m\n")
        elif kind == 4:
            line = f"commit {os.urandom(20).hex()}\nAuthor: Dev {i} <dev{i}@example.com>\n"
        else:
            line = f"    at com.example.Service.handle(Service.java:{i % 500}) [{rng.random():.6f}]\n"
        data = line.encode()
        parts.append(data)
        total += len(data)
        i += 1
    return b"".join(parts)[:size]


def numbers(size: int, separator: str, seed: int = 1) -> bytes:
    """Rows of six numbers of 1 to 13 digits (a database export, metrics): the output where
    card numbers are looked for the most."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        row = separator.join(str(rng.randint(0, 10 ** rng.randint(1, 13))) for _ in range(6))
        line = (row + "\n").encode()
        parts.append(line)
        total += len(line)
    return b"".join(parts)[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=32768, help="bytes per feed (an SSH packet)")
    parser.add_argument("--pty", action="store_true",
                        help="a pty session's masker (it follows the screen), on CR LF line ends")
    parser.add_argument("--streams", action="store_true",
                        help="a session without a pty: the stream's masker, then the row the terminal "
                             "draws (read only once output draws over itself; this output never does)")
    parser.add_argument("--numbers", choices=["csv", "tsv"],
                        help="rows of numbers, comma- or tab-separated, instead of mixed output")
    args = parser.parse_args()
    if args.numbers:
        data = numbers(args.mb * 1_000_000, "," if args.numbers == "csv" else "\t")
    else:
        data = realistic_output(args.mb * 1_000_000)
    masker = SecretMasker()
    if args.pty:
        data = data.replace(b"\n", b"\r\n")
        masker.on_screen(120, 40)
    streams = StreamsOutput({0: masker, 1: SecretMasker()}, SecretMasker()) if args.streams else None
    start = time.perf_counter()
    out = 0
    for offset in range(0, len(data), args.chunk):
        chunk = data[offset:offset + args.chunk]
        out += len(streams.feed(chunk, 0).data(0) if streams else masker.feed(chunk).data)
    out += len(streams.flush(0).data(0) if streams else masker.flush().data)
    seconds = time.perf_counter() - start
    label = "masker alone (pty)" if args.pty else "masker alone"
    if args.streams:
        label = "masker and row (no pty)"
    what = f"{args.numbers} numbers" if args.numbers else "mixed output"
    print(f"{label}: {len(data) / seconds / 1e6:.1f} MB/s on {args.mb} MB of {what} "
          f"({args.chunk}-byte chunks); {len(data) - out} bytes changed length")


if __name__ == "__main__":
    main()
