"""Hostile output that makes a key readable on a terminal (tmux, drawing what a real OpenSSH
client received through the bastion) while the masker lets it through: each a list of writes,
with a pause after each, printed on a pty. Known gaps, listed in docs/masking.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyte

from bastion.core.masker import MaskResult
from bastion.core.streamscreen import Drawn
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
# A tab right after a character drawn in the last column: tmux keeps the cursor waiting to wrap
# (the next character starts the row below), pyte brings it back onto the last column.
MORE["tab after the last column"] = [b"\x1b[2J\x1b[2;1H" + AT, b"\x1b[1;100Hx\ty", b"\rid=" + FIRST + TAIL]
MORE["CHT after the last column"] = [b"\x1b[2J\x1b[2;1H" + AT, b"\x1b[1;100Hx\x1b[Iy", b"\rid=" + FIRST + TAIL]
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


# -- without a pty -----------------------------------------------------------------------------
#
# `ssh host 'printf ...'`: no pty, stdout and stderr apart, both written by the user's ssh client
# to one terminal through the user's own tty (LF becomes CR LF). Each attack is a list of writes
# (stream, bytes), 0 for stdout and 1 for stderr, with a pause after each.

Write = tuple[int, bytes]
ROW = b"\n"  # a line feed of the session first: the row is one the session started
NOPTY: dict[str, list[Write]] = {
    "CHA then CR": [(0, ROW + AT), (0, b"\rid=" + FIRST + TAIL)],
    "CHA then CR, one write": [(0, ROW + AT + b"\rid=" + FIRST + TAIL)],
    "CHA then CR on the session's first row": [(0, AT), (0, b"\rid=" + FIRST + TAIL)],
    "second half on stderr at its column, first on stdout": [(1, ROW + AT), (0, b"\rid=" + FIRST + TAIL)],
    "second half on stdout at its column, first on stderr": [(0, ROW + AT), (1, b"\rid=" + FIRST + TAIL)],
    # No move at all: the prefix on one stream, the rest on the other (neither masker sees
    # the prefix and the key together).
    "prefix on stdout, the rest on stderr": [(0, ROW + b"id=" + FIRST[:3]), (1, FIRST[3:] + SECOND + TAIL)],
    "prefix on stderr, the rest on stdout": [(1, ROW + b"id=" + FIRST[:3]), (0, FIRST[3:] + SECOND + TAIL)],
    "halves on stdout then stderr": [(0, ROW + b"id=" + FIRST), (1, SECOND + TAIL)],
    "CR held at the end of stdout, then stderr": [(0, ROW + AT + b"\r"), (1, b"id=" + FIRST + TAIL)],
    "backspaces": [(0, ROW + b"id=" + b"x" * 10 + SECOND + b"\b" * 20 + FIRST + TAIL)],
    "CUB": [(0, ROW + b"id=" + b"x" * 10 + SECOND), (0, b"\x1b[20D" + FIRST + TAIL)],
    "CR then CUF": [(0, ROW + b"id=" + b"x" * 10 + SECOND), (0, b"\r\x1b[3C" + FIRST + TAIL)],
    "DCH closes the gap": [(0, ROW + b"id=" + FIRST + b"xxxx" + SECOND + b"\x1b[14G"), (0, b"\x1b[4P" + TAIL)],
    "ECH then the first half": [(0, ROW + AT + b"\r\x1b[3X"), (0, b"id=" + FIRST + TAIL)],
    "CUU back to the row": [(0, ROW + AT + b"\n"), (0, b"\x1b[A\rid=" + FIRST + TAIL)],
    "DECSC and DECRC": [(0, ROW + b"\x1b7" + AT), (0, b"\x1b8id=" + FIRST + TAIL)],
    "CUP to the row": [(0, b"\x1b[2J\x1b[5;1H" + AT + b"\n"), (0, b"\x1b[5;1Hid=" + FIRST + TAIL)],
    "VT then CUU": [(0, ROW + AT + b"\x0b"), (0, b"\x1b[A\rid=" + FIRST + TAIL)],
    "RI back to the row": [(0, ROW + AT + b"\n"), (0, b"\x1bM\rid=" + FIRST + TAIL)],
    "alternate screen 47 kept the row": [(0, ROW + AT), (0, b"\x1b[?47h\x1b[?47l\rid=" + FIRST + TAIL)],
    "tab then CR": [(0, ROW + b"id=\t" + SECOND), (0, b"\rid=" + FIRST + TAIL)],
    "C1 CSI in UTF-8": [(0, ROW + AT), (0, "\x9b".encode() + b"1G" + b"id=" + FIRST + TAIL)],
    # A line wider than the terminal wraps: its CR goes to the start of its last terminal row.
    "CR on a line that wrapped": [(0, ROW + b"." * WIDTH + AT), (0, b"\rid=" + FIRST + TAIL)],
    "CR on a line that wraps on a 40-column terminal": [(0, ROW + b"." * 40 + AT), (0, b"\rid=" + FIRST + TAIL)],
    "CR on a line of wide characters that wraps on a 40-column terminal": [
        (0, ROW + "\u4e2d".encode() * 20 + AT), (0, b"\rid=" + FIRST + TAIL)],
    "CHA past the terminal's edge": [(0, ROW + b"id=\x1b[14G" + SECOND + b"\x1b[200G"),
                                     (0, b"\rid=" + FIRST + TAIL)],
    "insert mode": [(0, ROW + b"id=" + SECOND), (0, b"\x1b[4h\x1b[4G" + FIRST + b"\x1b[4l" + TAIL)],
    "ICH opens the gap": [(0, ROW + b"id=" + SECOND + b"\x1b[4G\x1b[10@"), (0, FIRST + TAIL)],
}

# A tab at the right margin draws nothing: plain text, nothing that moves back, on a terminal
# whose width the bastion does not know. Each row is laid out so that the key's last character
# falls in the terminal's last column (K: the key's first 19 characters end in the column
# before it).


def _margin(width: int, rows: int = 1) -> bytes:
    """Dots up to where K must start for its end to reach the column before the last, on the
    row's `rows`-th terminal row."""
    return b"." * ((rows - 1) * width + width - 20)


K, D = KEY[:19].encode(), KEY[19:].encode()
DOTS = _margin(WIDTH)
TABS: dict[str, list[Write]] = {
    "tab at the right margin": [(0, ROW + DOTS + K + b"\t" + D + b" end\n")],
    "three tabs at the right margin": [(0, ROW + DOTS + K + b"\t\t\t" + D + b" end\n")],
    "tab at the right margin, then a colour": [(0, ROW + DOTS + K + b"\t\x1b[31m" + D + b"\x1b[0m end\n")],
    "a colour, then a tab at the right margin": [(0, ROW + DOTS + K + b"\x1b[1m\t\x1b[0m" + D + b" end\n")],
    "tab at the right margin, a character not drawn after it": [
        (0, ROW + DOTS + K + b"\t\x01\x7f" + D + b" end\n")],
    "tab at the right margin on a 37-column terminal": [(0, ROW + _margin(37) + K + b"\t" + D + b" end\n")],
    "tab at the right margin on an 80-column terminal": [(0, ROW + _margin(80) + K + b"\t" + D + b" end\n")],
    "tab at the right margin on a 200-column terminal": [(0, ROW + _margin(200) + K + b"\t" + D + b" end\n")],
    "tab at the right margin of a row's third terminal row": [
        (0, ROW + _margin(WIDTH, 3) + K + b"\t" + D + b" end\n")],
    "tab at the right margin of a row longer than the row kept": [
        (0, ROW + _margin(WIDTH, 13) + K + b"\t" + D + b" end\n")],
    "tab at the right margin after tab-separated columns": [
        (0, ROW + b"a\tbb\tccc\t" + b"." * (WIDTH - 44) + K + b"\t" + D + b" end\n")],
    "tab at the right margin on the session's first row": [(0, _margin(WIDTH)[8:] + K + b"\t" + D + b" end\n")],
    "tab at the right margin, tab stops cleared before": [(0, ROW + DOTS + K + b"\t" + D + b" end\n")],
    "tab on stdout at the right margin, the last character on stderr": [
        (0, ROW + DOTS + K + b"\t"), (1, D + b" end\n")],
    "tab on stderr between two stdout halves": [(0, ROW + DOTS + K), (1, b"\t"), (0, D + b" end\n")],
    "tab at the right margin, the key's start on stderr": [
        (1, ROW + DOTS + K[:3]), (0, K[3:] + b"\t" + D + b" end\n")],
    # pyte (not tmux): a tab right after a character drawn in the last column brings the
    # cursor back onto it, and the next character is drawn over it.
    "tab after the last column brings the cursor back": [
        (0, ROW + DOTS + K + b"x\t" + D + b" end\n")],
    "single characters between tabs at the right margin": [
        (0, ROW + DOTS + K + b"\tx\ty\t" + D + b" end\n")],
}
NOPTY.update(TABS)

# Attacks drawn on a terminal prepared before the session (the judge feeds these bytes first):
# the session starts mid-row, or the terminal's tab stops are not every eighth column.
BEFORE = {
    "CHA then CR on the session's first row": b"prompt$ ",
    "tab then CR": b"\x1b[3g\x1b[14G\x1bH\r",
    "tab at the right margin on the session's first row": b"prompt$ ",
    "tab at the right margin, tab stops cleared before": b"\x1b[3g",
}
# Acted on by pyte (and some terminals), not by tmux: through tmux the key shows nowhere.
NOT_TMUX = {"C1 CSI in UTF-8", "tab after the last column brings the cursor back",
            "single characters between tabs at the right margin"}
NARROW = {"tab at the right margin on a 37-column terminal": 37,
          "tab at the right margin on an 80-column terminal": 80,
          "tab at the right margin on a 200-column terminal": 200,
          "CR on a line that wraps on a 40-column terminal": 40,
          "CR on a line of wide characters that wraps on a 40-column terminal": 40}


def stream_ways(writes: list[Write]) -> Iterator[tuple[str, list[Write], list[bool]]]:
    """The writes as the attack makes them (a pause after each), then each write split at every
    offset, with and without a pause there."""
    yield "as written", writes, [True] * len(writes)
    for index, (stream, data) in enumerate(writes):
        for offset in range(1, len(data)):
            parts = [*writes[:index], (stream, data[:offset]), (stream, data[offset:]), *writes[index + 1:]]
            pauses = [True] * len(parts)
            yield f"write {index} @{offset}", parts, [*pauses[:index], False, *pauses[index + 1:]]
            yield f"write {index} @{offset} paused", parts, pauses


class StreamsMasker(Protocol):
    def feed(self, data: bytes, stream: int) -> Drawn: ...
    def flush(self, stream: int, *, pause: bool = False) -> Drawn: ...


def to_tty(data: bytes) -> bytes:
    """What the user's tty passes on to the terminal (onlcr)."""
    return for_pyte(data.replace(b"\n", b"\r\n"))


@dataclass
class Terminal:
    """One pyte screen drawing what goes out on both streams, in order; whether the key was ever
    whole on it."""

    width: int = WIDTH
    before: bytes = b""
    leaked: bool = False
    released: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.screen = pyte.Screen(self.width, HEIGHT)
        self.stream = pyte.ByteStream(self.screen)
        self.stream.feed(self.before)

    def draw(self, drawn: Drawn) -> None:
        for _, data in drawn.parts:
            self.released.append(data)
            self.stream.feed(to_tty(data))
            self.leaked = self.leaked or shows_key(self.screen)


def run_streams(name: str, make: Callable[[], StreamsMasker], tally: Tally,
                writes: list[Write] | None = None) -> None:
    """Every way of `NOPTY[name]` through a fresh masker, both streams drawn on one pyte screen
    in the order they go out; judged as `run` judges."""
    for label, parts, pauses in stream_ways(writes if writes is not None else NOPTY[name]):
        masker = make()
        terminal = Terminal(NARROW.get(name, WIDTH), BEFORE.get(name, b""))
        for (number, part), pause in zip(parts, pauses, strict=True):
            terminal.draw(masker.feed(part, number))
            if pause:
                terminal.draw(masker.flush(number, pause=True))
        for number in (0, 1):
            terminal.draw(masker.flush(number))
        over = not any(" end" in row.encode("ascii", "ignore").decode() for row in rows(terminal.screen))
        tally.trials += 1
        tally.leaks += terminal.leaked
        tally.over_masks += over
        if (terminal.leaked or over) and len(tally.examples) < 5:
            tally.examples.append(f"{name} {label}: {'leak' if terminal.leaked else 'over-mask'}: {parts!r} -> "
                                  f"{b''.join(terminal.released)!r}")
