"""Hostile output that makes a key readable on a terminal (tmux, drawing what a real OpenSSH
client received through the bastion) while the masker lets it through: each a list of writes,
with a pause after each, printed on a pty. Known gaps, listed in docs/masking.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyte

from bastion.core.masker import MaskResult
from tests.support.leaks import for_pyte

KEY = "AKIA" + "Q7ZX3MPLW2RT8YKD"  # an AWS access key id's shape; made up
FIRST, SECOND = KEY[:10].encode(), KEY[10:].encode()
TAIL = b"\x1b[30G end"  # the first half never ends a write: a pause there masks a prefixed token
AT = b"id=\x1b[14G" + SECOND  # the second half at its column: row "id=          PLW2RT8YKD"

LEAKS = {
    # Bytes a terminal does not draw that the masker takes for characters.
    "invalid UTF-8 byte inside": [b"id=" + FIRST + b"\xff" + SECOND + b" end"],
    "overlong NUL inside": [b"id=" + FIRST + b"\xc0\x80" + SECOND + b" end"],
    "unassigned code point inside": [b"id=" + FIRST + "\u0378".encode() + SECOND + b" end"],
    "combining mark U+20D0 inside": [b"id=" + FIRST + "\u20d0".encode() + SECOND + b" end"],
    "combining mark U+0483 inside": [b"id=" + FIRST + "\u0483".encode() + SECOND + b" end"],
    "variation selector supplement inside": [b"id=" + FIRST + "\U000e0100".encode() + SECOND + b" end"],
    "format char U+0600 inside": [b"id=" + FIRST + "\u0600".encode() + SECOND + b" end"],
    # The view's cursor parts from the terminal's.
    "alternate screen 47 keeps the cursor": [AT, b"\x1b[?47h\r\x1b[?47l", b"id=" + FIRST + TAIL],
    "alternate screen 1047 keeps the cursor": [AT, b"\x1b[?1047h\r\x1b[?1047l", b"id=" + FIRST + TAIL],
    "DL before the row is known": [b"x\r\n" + AT + b"\x1b[A\r\x1b[M", b"id=" + FIRST + TAIL],
    "C1 NEL then CUU": [AT, b"\xc2\x85", b"\x1b[A\rid=" + FIRST + TAIL],
    "CAN aborts a CSI": [AT, b"\x1b[5\x18\rid=" + FIRST + TAIL],
    "CR inside a CSI": [AT, b"\x1b[\rm", b"id=" + FIRST + TAIL],
    "ESC inside a CSI": [AT, b"\x1b[1\x1b[0m\rid=" + FIRST + TAIL],
    "CUP with a colon is ignored by the terminal": [AT, b"\x1b[1:1H", b"\rid=" + FIRST + TAIL],
    "OSC aborted by SUB": [AT, b"\x1b]0;x\x1a\rid=" + FIRST + TAIL],
    "leading zeros in CHA": [b"id=\x1b[00000000014G" + SECOND, b"\rid=" + FIRST + TAIL],
    # Sequences that make the view forget its rows while the terminal keeps them; DECRC comes
    # back to where the cursor was.
    "DECLRMM on (no margins set)": [AT, b"\x1b[?69h\rid=" + FIRST + TAIL],
    "double-height line ESC # 3": [AT, b"\x1b#3", b"\rid=" + FIRST + TAIL],
    "DECSC, CUP home, DECRC": [AT, b"\x1b7\x1b[1;1H\x1b8", b"\rid=" + FIRST + TAIL],
    "DECSC, scrolling region set and reset, DECRC": [AT, b"\x1b7\x1b[5;10r\x1b[r\x1b8", b"\rid=" + FIRST + TAIL],
    # Widths the view and the terminal disagree on: a soft hyphen takes a column in the
    # terminal (none in the view); U+1FAE8 takes none in the terminal (two in the view).
    "soft hyphen moves the terminal's cursor": [b"id=" + "\u00ad".encode() + b"\x1b[9C" + SECOND,
                                                b"\rid=" + FIRST + TAIL],
    "U+1FAE8 moves the view's cursor": [b"id=" + "\U0001fae8".encode() + b"\x1b[10C" + SECOND,
                                        b"\rid=" + FIRST + TAIL],
}


# Found later, the same ways: a control character inside a sequence (a terminal acts on it and
# goes on with the sequence), a string aborted by SUB before the key, a move up that stops at the
# screen's top before the view knows where that is, the cursor saved and restored as a mode.
MORE = {
    "CR inside a CSI, then the key": [b"id=\x1b[\rm" + KEY.encode() + b" end"],
    "NUL inside a CSI between the halves": [b"id=" + FIRST + b"\x1b[\x00m" + SECOND + b" end"],
    "DEL inside a CSI between the halves": [b"id=" + FIRST + b"\x1b[0\x7fm" + SECOND + b" end"],
    "OSC aborted by SUB, then the key": [b"\x1b]0;x\x1aid=" + KEY.encode() + b" end\x07"],
    "DEL inside a CHA": [b"id=\x1b[1\x7f4G" + SECOND, b"\rid=" + FIRST + TAIL],
    "CUU past the top, twice": [b"\x1b[99A" + AT, b"\x1b[99A\rid=" + FIRST + TAIL],
    "CUD past the bottom, twice": [b"\x1b[99B" + AT, b"\x1b[99B\rid=" + FIRST + TAIL],
    "mode 1048 saves, CUP home, restores": [AT, b"\x1b[?1048h\x1b[1;1H\x1b[?1048l", b"\rid=" + FIRST + TAIL],
    "SCOSC, CUP home, SCORC": [AT, b"\x1b[s\x1b[1;1H\x1b[u", b"\rid=" + FIRST + TAIL],
    "DECSC, CUU past the top, DECRC": [AT, b"\x1b7\x1b[99A\x1b8", b"\rid=" + FIRST + TAIL],
    "47 alternate screen with a CUP inside": [AT, b"\x1b[?47h\x1b[5;5Hx\r\x1b[?47l", b"id=" + FIRST + TAIL],
    "IL before the row is known": [b"x\r\n" + AT + b"\x1b[A\r\x1b[L\x1b[B", b"id=" + FIRST + TAIL],
    # The cursor saved on the screen's last row (where a shell's prompt usually is, which the
    # view cannot know), a line feed scrolls, the second half on the new last row, restored.
    "DECSC on the last row, a scroll, DECRC": [b"\x1b7\n\x1b[14G" + SECOND, b"\x1b8\rid=" + FIRST + TAIL],
    "alternate screen 47 shown again": [b"\x1b[?47h" + AT + b"\x1b[?47l", b"\x1b[?47h\rid=" + FIRST + TAIL],
    # Widths tmux and the view disagreed on: a joined emoji (two columns in tmux, four apart),
    # a Hangul syllable of conjoining letters (two in tmux, three apart).
    "ZWJ emoji sequence moves the terminal's cursor less": [
        "id=\U0001f469\u200d\U0001f4bb".encode() + b"\x1b[8C" + SECOND, b"\rid=" + FIRST + TAIL],
    "conjoining Hangul moves the terminal's cursor less": [
        "id=\u1100\u1161".encode() + b"\x1b[8C" + SECOND, b"\rid=" + FIRST + TAIL],
}
# Attacks that start with the cursor on the screen's last row, put there before the masker
# sees the session (as a shell's earlier output does).
BOTTOM = {"DECSC on the last row, a scroll, DECRC"}

# -- judging them ------------------------------------------------------------------------------

WIDTH, HEIGHT = 100, 30


def shows_key(screen: pyte.Screen) -> bool:
    """The key whole on a row, read without the characters outside ASCII (a terminal may draw
    none of them)."""
    return any(KEY in row.encode("ascii", "ignore").decode() for row in rows(screen))


def rows(screen: pyte.Screen) -> list[str]:
    return ["".join(screen.buffer[y][x].data for x in range(screen.columns)) for y in range(screen.lines)]


@dataclass
class Tally:
    trials: int = 0
    leaks: int = 0
    over_masks: int = 0
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.leaks}/{self.trials} leaked, {self.over_masks}/{self.trials} over-masked"


def ways(chunks: list[bytes]) -> Iterator[tuple[str, list[bytes], list[bool]]]:
    """The writes as the attack makes them (a pause after each), then split at every offset
    of the whole, with and without a pause there."""
    yield "as written", chunks, [True] * len(chunks)
    data = b"".join(chunks)
    for offset in range(1, len(data)):
        yield f"@{offset}", [data[:offset], data[offset:]], [False, False]
        yield f"@{offset} paused", [data[:offset], data[offset:]], [True, False]


def run(name: str, make: Callable[[], Masker], tally: Tally, chunks: list[bytes] | None = None) -> None:
    """Every way of `LEAKS[name]` (or `chunks`) through a fresh masker, drawn by pyte after every
    release: a leak is the key whole on screen at any moment; an over-mask, ` end` missing."""
    for label, parts, pauses in ways(chunks if chunks is not None else LEAKS[name]):
        masker = make()
        screen = pyte.Screen(WIDTH, HEIGHT)
        stream = pyte.ByteStream(screen)
        if name in BOTTOM:
            stream.feed(b"\n" * HEIGHT)
        leaked = False
        released = []
        for part, pause in zip(parts, pauses, strict=True):
            for result in (masker.feed(part), *([masker.flush(pause=True)] if pause else [])):
                released.append(result.data)
                stream.feed(for_pyte(result.data))
                leaked = leaked or shows_key(screen)
        released.append(masker.flush().data)
        stream.feed(for_pyte(released[-1]))
        leaked = leaked or shows_key(screen)
        over = not any(" end" in row.encode("ascii", "ignore").decode() for row in rows(screen))
        tally.trials += 1
        tally.leaks += leaked
        tally.over_masks += over
        if (leaked or over) and len(tally.examples) < 5:
            tally.examples.append(f"{name} {label}: {'leak' if leaked else 'over-mask'}: {parts!r} -> "
                                  f"{b''.join(released)!r}")


class Masker(Protocol):
    def feed(self, data: bytes) -> MaskResult: ...
    def flush(self, *, pause: bool = False) -> MaskResult: ...
