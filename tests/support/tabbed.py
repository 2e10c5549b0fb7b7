"""Tab-separated output as commands print it without a pty, holding no secret: `du`, `mysql -B`
and `psql` rows, `aws --output text`, `git log --format` with tabs, `ls`-like columns padded with
tabs, `ps`-like rows, hex ids in columns, numbers (epoch seconds and milliseconds, sizes, amounts),
logfmt with tabs. Seeded: the same bytes in every run."""

from __future__ import annotations

import random
import string


def tabbed_output(size: int, seed: int = 7) -> bytes:  # noqa: C901 - one kind of line a branch
    rng = random.Random(seed)
    hexdigits = "0123456789abcdef"
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
             "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]

    def hexid(n: int) -> str:
        return "".join(rng.choice(hexdigits) for _ in range(n))

    def word() -> str:
        return rng.choice(words)

    def upper(n: int) -> str:
        return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))

    lines: list[str] = []
    total = 0
    i = 0
    while total < size:
        kind = i % 12
        if kind == 0:
            line = f"{rng.randint(0, 10**9)}\t./{word()}/{word()}-{i}.log"
        elif kind == 1:
            line = (f"{i}\t{word()} {word()}\t{word()}{i}@example.com\t2026-11-{rng.randint(1, 28):02d} "
                    f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00\t{rng.randint(0, 10**6)}."
                    f"{rng.randint(0, 99):02d}\t{hexid(8)}-{hexid(4)}-{hexid(4)}-{hexid(4)}-{hexid(12)}")
        elif kind == 2:
            line = f"ACCESSKEYMETADATA\t2026-0{rng.randint(1, 9)}-01T00:00:00Z\tActive\tuser-{i}"
        elif kind == 3:
            line = f"{hexid(40)}\t{word().title()} {word().title()}\t{word()} {word()} #{i}"
        elif kind == 4:
            line = "\t".join(f"{word()}-{rng.randint(0, 999)}.txt" for _ in range(rng.randint(3, 9)))
        elif kind == 5:
            line = (f"{word()}\t{rng.randint(1, 99999)}\t{rng.randint(0, 99)}.{rng.randint(0, 9)}\t"
                    f"{rng.randint(0, 10**7)}\t{rng.randint(0, 10**6)}\tS\t{rng.randint(0, 23):02d}:"
                    f"{rng.randint(0, 59):02d}\t/usr/bin/{word()} --{word()}")
        elif kind == 6:
            line = "\t".join(hexid(rng.choice((8, 12, 16, 32, 64))) for _ in range(rng.randint(2, 6)))
        elif kind == 7:
            line = "\t".join(str(rng.randint(0, 10 ** rng.randint(1, 13))) for _ in range(rng.randint(4, 12)))
        elif kind == 8:
            line = (f"{1_700_000_000_000 + rng.randint(0, 10**11)}\t{1_700_000_000 + rng.randint(0, 10**8)}\t"
                    f"{rng.randint(0, 10**9)}\t{rng.random():.6f}")
        elif kind == 9:
            line = (f"ts=2026-11-28T14:00:{i % 60:02d}Z\tlevel=info\tmsg={word()}\trequest_id={hexid(16)}"
                    f"\tuser={word()}\tms={rng.randint(0, 999)}")
        elif kind == 10:
            line = "\t".join(upper(rng.randint(4, 24)) for _ in range(rng.randint(2, 5)))
        else:
            tabs = "\t" * rng.randint(1, 3)
            line = f"{word()}{tabs}{word()}{tabs}{rng.randint(0, 9)}"
        data = line + "\n"
        lines.append(data)
        total += len(data)
        i += 1
    return "".join(lines).encode()[:size]
