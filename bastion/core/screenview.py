"""Secrets assembled on the screen from writes that each hold only part of them. Pure.

A program can draw a secret out of order: the second half first at its column (`ESC[nG`),
then a carriage return and the first half; no write holds the secret, and the stream masker
reads writes. `ScreenView` follows the rows around the cursor as a terminal draws them: after
each chunk the masker released, the rows it touched are read as text by the detectors; a
secret found there is masked before the chunk leaves, the characters this chunk draws of it
become `*` in the chunk itself, and the ones drawn by earlier chunks are drawn over with `*`
(the cursor goes there with relative moves and comes back).

What it follows (the moves a terminal makes on its screen): text and its wrapping at the right
margin (autowrap on or off), wide characters, characters drawn nowhere; CR, LF, VT, FF, BS,
HT and tab stops (HTS, TBC, CHT, CBT); cursor moves CUU, CUD, CUF, CUB, CNL, CPL, CHA, HPA,
HPR, VPA, VPR, CUP, HVP, IND, NEL, RI; save and restore (DECSC/DECRC, SCOSC/SCORC); ICH,
DCH, ECH, EL, ED, IL, DL, SU, SD, REP; insert mode; origin mode; scrolling regions (DECSTBM)
and the alternate screen, once the view knows which screen row the cursor is on (after the
screen is cleared, or the first absolute move); RIS. Anything else that moves the cursor
(DECSLRM margins, double-width lines, an absolute move before the screen row is known, a
scrolling region's scroll while it is not known) makes the view forget the rows it had: a
secret assembled with what was drawn before that is not seen, and `forgotten` counts those
moments.

Row indexes are relative: the cursor starts on row 0 and rows are numbered from there.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bastion.core.terminal import (
    CUT_ESCAPE,
    ESC_SEQUENCES,
    FLAG_ESCAPE,
    FLAG_MOVES,
    FLAG_NON_ASCII,
    FLAG_UNDRAWN,
    UNDRAWNS,
    screen_flags,
)

# A chunk made of text, line ends and colours only: the cheap update.
SGR_ONLY = re.compile(rb"\x1b\[[0-9;:]*m")
NOT_SGR = re.compile(rb"\x1b(?!\[[0-9;:]*m)")
TOKEN = re.compile(
    rb"\x1b\[([<=>?]?)([0-9;:]*)([ -/]*)([@-~])"  # CSI: private marker, parameters, intermediates, final
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"  # DCS, SOS, PM, APC
    rb"|\x1b([ -/]*)([0-~])"  # other ESC sequences
    rb"|([\x00-\x1f\x7f])"  # a control character
)
MAX_ROWS = 32  # rows kept beyond two screenfuls before those far from the cursor go (they are off screen)
MAX_PARTIAL = 4096  # an escape sequence cut by a chunk's end, kept back at most this long
# An escape sequence the chunk's end may have cut: a CSI without its final byte, an OSC or DCS
# without its terminator, a lone ESC or ESC with intermediates.


@functools.lru_cache(maxsize=8192)
def _width(char: str) -> int:
    if char.isascii():
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf") or UNDRAWNS.fullmatch(
            char.encode()) or "\u1160" <= char <= "\u11ff" or "\ud7b0" <= char <= "\ud7ff":
        return 0  # Hangul vowels and finals join the syllable before
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


# -- what reaches the terminal ---------------------------------------------------------------
#
# Terminals differ on what the view cannot follow, or read it otherwise than the view would:
# rather than guess which terminal draws the output, the masker (on a pty) passes only what the
# view follows, so the terminal's cursor is the view's. Removed: escape sequences aborted (CAN,
# SUB, ESC) or holding control characters; CSI sequences with intermediates (DECCRA copies a
# rectangle of the screen, DECFRA fills one), a colon outside SGR, modes that move the cursor
# in ways the view does not follow (DECLRMM's margins, DECCOLM, VT52 mode, reverse wrap), window
# resizes; ESC # (double-width and double-height lines, DECALN), ESC % (leaving UTF-8) and
# other ESC sequences outside the ones the view follows or that draw nothing; DCS, SOS, PM and
# APC strings (sixel and other images, passthrough to an outer terminal) and OSC strings other
# than titles, colours, links, clipboard and prompt marks (inline images); the C1 controls, the
# soft hyphen and format characters other than the zero-width ones. Parameters are written
# plainly (no leading zeros, at most 9999). Bytes that are not UTF-8 and code points the view
# does not know become U+FFFD, which every terminal draws one column wide.
CLEAN_CSI = re.compile(rb"\x1b\[([<=>?]?)([0-9;:]*)([ -/]*)([@-~])")
CLEAN_ESC = re.compile(rb"\x1b([ -/]*)([0-~])")
DROPPED_MODES = frozenset({b"2", b"3", b"45", b"69", b"95"})  # VT52, DECCOLM, reverse wrap, DECLRMM, DECNCSM
WINDOW_MOVES = frozenset({b"3", b"4", b"8", b"9", b"10"})  # CSI t: move, resize, maximize, full screen
ESC_FINALS = frozenset(b"78=>DEMHcNOZ\\nol|}~")
ESC_CHARSETS = frozenset(b"()*+-./")
OSC_KEPT = frozenset({b"0", b"1", b"2", b"4", b"7", b"8", b"9", b"10", b"11", b"12", b"13", b"14", b"15",
                      b"16", b"17", b"18", b"19", b"22", b"52", b"104", b"110", b"111", b"112", b"133",
                      b"633", b"777"})
# C1 controls; the zero-width joiner, the emoji and text presentation selectors and the skin
# tone modifiers, which some terminals join with the character before into one cell pair and
# others do not (the view's widths are those of the characters apart).
UNICODE_DROPPED = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80\x8d|\xef\xb8[\x8e\x8f]|\xf0\x9f\x8f[\xbb-\xbf]")
PARAMETER = re.compile(rb"[0-9]+")


def sanitized(data: bytes) -> bytes:
    """`data` as the terminal may get it: what the view follows only (see above)."""
    if b"\x1b" in data and NOT_SGR.search(data) is not None:
        out, last = [], 0
        for match in ESC_SEQUENCES.finditer(data):
            sequence = match.group()
            if sequence[-1:] == b"m" and SGR_ONLY.fullmatch(sequence):
                continue  # colours: the usual case
            clean = _clean_sequence(sequence)
            if clean != sequence:
                out += [data[last:match.start()], clean]
                last = match.end()
        if last:
            data = b"".join([*out, data[last:]])
        if data.endswith(b"\x1b"):
            data = data[:-1]  # a lone ESC at the stream's end
    if not data.isascii():
        data = _clean_text(data)
    return data


def _clean_sequence(sequence: bytes) -> bytes:  # noqa: PLR0911, PLR0912 - one rule a line
    kind = sequence[1:2]
    if kind == b"[":
        match = CLEAN_CSI.fullmatch(sequence)
        if match is None:
            return b""  # aborted, or control characters inside
        private, params, intermediate, final = match.groups()
        if intermediate and (intermediate, final) != (b" ", b"q"):
            return b""
        if b":" in params and final != b"m":
            return b""
        if private == b"?" and final in b"hl":
            kept = [p for p in params.split(b";") if p.lstrip(b"0") not in DROPPED_MODES]
            if not kept:
                return b""
            params = b";".join(kept)
        if final == b"t" and not private and params.split(b";")[0].lstrip(b"0") in WINDOW_MOVES:
            return b""
        if any(len(p) > 4 or (len(p) > 1 and p.startswith(b"0")) for p in PARAMETER.findall(params)):
            params = PARAMETER.sub(lambda m: b"%d" % min(int(m.group()), 9999), params)
        return b"\x1b[" + private + params + intermediate + final
    if kind == b"]":
        if not sequence.endswith((b"\x07", b"\x1b\\")):
            return b""
        number = sequence[2:].split(b";", 1)[0]
        return sequence if number in OSC_KEPT else b""
    if kind and kind in b"PX^_":
        return b""
    match = CLEAN_ESC.fullmatch(sequence)
    if match is None:
        return b""
    intermediate, final = match.groups()
    if intermediate:
        return sequence if intermediate[0] in ESC_CHARSETS and len(intermediate) == 1 else b""
    return sequence if final[0] in ESC_FINALS else b""


def _clean_text(data: bytes) -> bytes:
    data = UNICODE_DROPPED.sub(b"", data).replace(b"\xc2\xad", b"-")  # a soft hyphen: drawn, or not
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    changed = {ord(c): kept for c in set(text) if not c.isascii() and (kept := _CHARACTERS[ord(c)]) != ord(c)}
    if not changed:
        return data if "\ufffd" not in text else text.encode()  # bytes not UTF-8 became U+FFFD
    return text.translate(changed).encode()


class _Characters(dict[int, int | str]):
    """For str.translate: each character as it reaches the terminal, decided once."""

    def __missing__(self, code: int) -> int | str:
        if len(self) > 65536:
            self.clear()
        char = chr(code)
        kept: int | str = code
        if code >= 0x80:
            category = unicodedata.category(char)
            if category in {"Cn", "Cs"}:
                kept = "\ufffd"
            elif category == "Cf" and not UNDRAWNS.fullmatch(char.encode("utf-8", "surrogatepass")):
                kept = ""
        self[code] = kept
        return kept


_CHARACTERS = _Characters()


# The main screen while the alternate one shows: rows, cursor, top, rows kept aside, span.
Screen = tuple[dict[int, list[str] | str], int, int, int | None, list[list[str]], tuple[int, int]]
Source = tuple[int, int] | None  # the bytes of this chunk that drew a cell (None: earlier)


@dataclass
class ViewResult:
    data: bytes
    masked: list[str] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)  # (detector, where) not masked


class ScreenView:
    def __init__(self, width: int, height: int, find: Callable[[str], list[tuple[int, int, str]]],
                 opening: Callable[[str], int] | None = None, *, onlcr: bool = False) -> None:
        self.width = max(2, width)
        # A line feed also returns to column 0: output without a pty reaches the user's terminal
        # through their own tty, which turns LF into CR LF (`stty onlcr`).
        self.onlcr = onlcr
        # Rows the view may draw `*` over (None: any); a secret's earlier part on another row
        # is reported as unreachable instead.
        self.reachable: Callable[[int], bool] | None = None
        self.height = max(2, height)
        self._find = find  # (start, end, detector) of each secret in a row's text
        self._opening = opening  # where a secret still being written at a text's end starts (-1)
        # A row's cells, a character each ("" right of a wide one); a row drawn by a plain line
        # from column 0 is kept as its text until something comes back to it.
        self.rows: dict[int, list[str] | str] = {}
        self._sources: dict[int, list[Source]] = {}  # rows this chunk drew on
        self.y = self.x = 0
        self.wrap_pending = False
        self.autowrap = True
        self.insert = False
        self.origin = False
        self.top: int | None = None  # the relative index of the screen's first row, once known
        # While `top` is not known: the screen rows the cursor may be on (first, last). A move up
        # or down that may stop at the screen's edge is a move the view cannot follow.
        self.span = (0, self.height - 1)
        self.region: tuple[int, int] | None = None  # scrolling region (screen rows, 0-based)
        self.saved: tuple[int, int] = (0, 0)
        self._saved_unsure = False  # the screen may have scrolled since the cursor was saved
        self._saved_span = self.span
        self.tabs: set[int] | None = None  # None: every eighth column
        self.main: Screen | None = None
        self.last = " "  # the last character drawn (REP)
        self.forgotten = 0
        # Rows forgotten while the terminal may still show them: where they are now is not
        # known, so a row drawn later is also read over each of them (see `_mask`).
        self.stale: list[list[str]] = []
        self._scrolled = 0  # lines the whole screen scrolled since a row was last forgotten
        self._alternate_rows: list[list[str]] = []  # what the alternate screen showed last
        self._touched: set[int] = set()
        self._partial = b""
        # What the chunk being drawn masks: (bytes to mask, cells to draw over, names, secrets
        # whose other part cannot be drawn over).
        self._pending: tuple[dict[int, tuple[int, int]], dict[int, list[int]], list[str], list[str]] = (
            {}, {}, [], [])

    @property
    def holding(self) -> bool:
        return bool(self._partial)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = max(2, width), max(2, height)
        self.region = None
        self.x = min(self.x, self.width - 1)
        self.span = (min(self.span[0], self.height - 1), min(self.span[1], self.height - 1))

    # -- the chunk ---------------------------------------------------------------------------

    def draw(self, data: bytes, *, end: bool = False, pause: bool = False, read: bool = False) -> ViewResult:
        """Follow `data` onto the rows; mask what it assembles. An escape sequence the chunk's
        end cut is kept back (a terminal acts on it only once whole) unless the stream `end`s.
        `read`: read the rows it draws on even if it is plain text going on at the end of the
        screen (what is before it on its row may come from another stream)."""
        data, self._partial = self._partial + data, b""
        if not end and b"\x1b" in data[-MAX_PARTIAL:]:
            cut = CUT_ESCAPE.search(data, max(0, len(data) - MAX_PARTIAL))
            if cut is not None:
                data, self._partial = data[:cut.start()], data[cut.start():]
        if not data:
            return ViewResult(b"")
        flags = screen_flags(data)
        self._pending = ({}, {}, [], [])
        if flags & FLAG_NON_ASCII or (flags & FLAG_ESCAPE and NOT_SGR.search(data) is not None):
            data = sanitized(data)
            if not data:
                return ViewResult(b"")
        body = data[:-1] if data.endswith(b"\r") else data  # a CR LF the chunk's end cut
        flags = screen_flags(body)
        plain = not read and not flags & (FLAG_MOVES | FLAG_UNDRAWN)
        if plain and self._clear_ahead(body.startswith(b"\n")) and (
                not flags & FLAG_ESCAPE or NOT_SGR.search(body) is None):
            self._plain(body)
            if len(body) < len(data):
                self._move(x=0)
            if not pause or self._opening is None:
                return ViewResult(data)
            self._touched, self._sources = {self.y}, {}
            return self._mask(data, pause=True)
        self._touched = set()
        self._sources = {}
        position = 0
        for match in TOKEN.finditer(data):
            if match.start() > position:
                self._text(data, position, match.start())
            self._control(match)
            position = match.end()
        if position < len(data):
            self._text(data, position, len(data))
        return self._mask(data, pause=pause)

    def _clear_ahead(self, leaves_row: bool = False) -> bool:
        """Nothing drawn right of the cursor or below it: plain text cannot complete anything
        drawn before (the usual case: output going on at the end of the screen). A chunk that
        starts with a line feed leaves the cursor's row first."""
        if self.insert or self.stale or (self.rows and max(self.rows) > self.y):
            return False
        if leaves_row:
            return True
        row = self.rows.get(self.y)
        return row is None or not "".join(row[self.x + self.wrap_pending:]).strip()

    def _plain(self, data: bytes) -> None:
        """Text, line ends and colours: rows as written. Only the last screenful of lines can
        still be reached by a later move; the lines before it only move the cursor down."""
        reach = self.height + 1
        lines = [data]
        if self.region is None and data.count(b"\n") > reach:
            head, *lines = data.rsplit(b"\n", reach)
            self.y += head.count(b"\n")
            if self.top is None:
                self._narrow(head.count(b"\n"))
            self._line_feed()  # the one before the lines kept: it moves `top` if known
            last = head[head.rfind(b"\n") + 1:]
            self.x = 0 if last.endswith(b"\r") else min(len(last), self.width - 1)
            self.wrap_pending = False
            lines[0] = b"\r" + lines[0]  # drawn from the start of its row
        text = b"\n".join(lines)
        if b"\x1b" in text:
            text = SGR_ONLY.sub(b"", text)
        for index, line in enumerate(text.split(b"\n")):
            if index:
                self._line_feed()
                if self.onlcr:
                    self.x, self.wrap_pending = 0, False
            if self._fresh_row(line):
                continue
            begin = 0
            while True:  # a CR ending a line: its next one starts at column 0
                cr = line.find(b"\r", begin)
                end = len(line) if cr < 0 else cr
                if end > begin:
                    self._text(line, begin, end, record=False)
                if cr < 0:
                    break
                self.x, self.wrap_pending, begin = 0, False, cr + 1

    def _fresh_row(self, line: bytes) -> bool:
        """A plain line from column 0 onto rows not drawn yet (the usual case): stored as its
        text, made a list of cells only if something comes back to it."""
        text = line[:-1] if line.endswith(b"\r") else line
        if self.x or self.wrap_pending or self.insert or not self.autowrap or b"\r" in text:
            return False
        if not text.isascii() or self.y in self.rows:
            return False
        if not text:
            return True
        self._evict()
        width = self.width
        for start in range(0, len(text), width):
            if start:
                self._line_feed()
                if self.y in self.rows:
                    self.rows[self.y] = " " * width  # drawn over: this row's old cells are gone
            self.rows[self.y] = text[start:start + width].decode()
        self.last = chr(text[-1])
        tail = len(text) % width or width
        if line.endswith(b"\r"):
            self.x = 0
        elif tail == width:
            self.x, self.wrap_pending = width - 1, True
        else:
            self.x = tail
        return True

    # -- drawing -----------------------------------------------------------------------------

    def _row(self, y: int) -> list[str]:
        row = self.rows.get(y)
        if isinstance(row, str):
            row = self.rows[y] = list(row.ljust(self.width))
        elif row is None:
            self._evict()
            row = self.rows[y] = [" "] * self.width
        elif len(row) < self.width:
            row.extend(" " * (self.width - len(row)))
        return row

    def _evict(self) -> None:
        if len(self.rows) >= MAX_ROWS + 2 * self.height:  # rows far from the cursor go
            near = self.height + 1
            self.rows = {r: cells for r, cells in self.rows.items() if abs(r - self.y) <= near}

    def _sources_of(self, y: int) -> list[Source]:
        sources = self._sources.get(y)
        if sources is None:
            sources = self._sources[y] = [None] * len(self._row(y))
        return sources

    def _text(self, data: bytes, start: int, end: int, *, record: bool = True) -> None:
        segment = data[start:end]
        if segment.isascii() and not record and not self.insert:
            self._ascii(segment.decode())
            return
        if segment.isascii():
            chars = [(chr(b), start + i, start + i + 1, 1) for i, b in enumerate(segment)]
        else:
            chars = []
            position = start
            for char in segment.decode("utf-8", "replace"):
                size = len(char.encode()) if char != "\ufffd" else 1
                chars.append((char, position, position + size, _width(char)))
                position += size
        for char, begin, stop, width in chars:
            if width == 0:
                continue
            self._put(char, (begin, stop) if record else None, width)

    def _ascii(self, text: str) -> None:
        """Plain text without moves: whole slices at a time."""
        while text:
            if self.wrap_pending and self.autowrap:
                self.x, self.wrap_pending = 0, False
                self._line_feed()
            room = self.width - self.x
            if not self.autowrap and len(text) > room:
                text = text[: room - 1] + text[-1]  # the last column is overwritten
            part, text = text[:room], text[room:]
            row = self._row(self.y)
            row[self.x:self.x + len(part)] = part
            self.last = part[-1]
            if self.x + len(part) >= self.width:
                self.x = self.width - 1
                self.wrap_pending = self.autowrap
            else:
                self.x += len(part)

    def _put(self, char: str, source: Source, width: int) -> None:
        if self.wrap_pending or self.x + width > self.width:
            if self.autowrap:
                self.x = 0
                self._line_feed()
            else:
                self.x = self.width - width
            self.wrap_pending = False
        row = self._row(self.y)
        sources = self._sources_of(self.y)
        if self.insert:
            row[self.x:self.x] = [" "] * width
            sources[self.x:self.x] = [None] * width
            del row[self.width:], sources[self.width:]
        row[self.x] = char
        sources[self.x] = source
        if width == 2 and self.x + 1 < self.width:
            row[self.x + 1] = ""
            sources[self.x + 1] = None
        self._touched.add(self.y)
        self.last = char
        if self.x + width >= self.width:
            self.x = self.width - 1
            self.wrap_pending = self.autowrap
        else:
            self.x += width

    # -- moves -------------------------------------------------------------------------------

    def _bounds(self) -> tuple[int, int] | None:
        """The scrolling region as relative rows, when the screen row is known."""
        if self.top is None:
            return None
        first, last = self.region or (0, self.height - 1)
        return self.top + first, self.top + last

    def _line_feed(self) -> None:
        bounds = self._bounds()
        if bounds is not None and self.y == bounds[1]:
            self._scroll(1, bounds)
            return
        if bounds is None and self.region is not None:
            self._forget()
        self.y += 1
        if self.top is not None and self.y >= self.top + self.height:
            self.top = self.y - self.height + 1
        elif self.top is None:
            self._narrow(1)

    def _reverse_index(self) -> None:
        bounds = self._bounds()
        if bounds is not None and self.y == bounds[0]:
            self._scroll(-1, bounds)
        elif bounds is None and self.region is not None:
            self._forget()
        else:  # at the screen's top it scrolls down: the rows move, as they do with the cursor
            self.y -= 1
            if self.top is None:
                self._narrow(-1)

    def _scroll(self, lines: int, bounds: tuple[int, int] | None = None) -> None:
        """Scroll the region up (`lines` > 0) or down; without a region, the whole screen."""
        bounds = bounds or self._bounds()
        if bounds is None:
            if self.region is not None:
                self._forget()
                return
            # The whole screen scrolls: every row moves, the cursor stays.
            self.rows = {r - lines: row for r, row in self.rows.items()}
            self._sources = {r - lines: row for r, row in self._sources.items()}
            self._touched = {r - lines for r in self._touched}
            return
        first, last = bounds
        _shift(self.rows, first, last, lines)
        _shift(self._sources, first, last, lines)
        self._touched.update(r for r in range(first, last + 1) if r in self.rows)
        whole = self.top is not None and bounds == (self.top, self.top + self.height - 1)
        if self.stale and lines > 0 and whole:
            self._scrolled += lines  # a screenful of lines later, the rows forgotten are gone
            if self._scrolled >= self.height:
                self.stale = []

    def _forget(self) -> None:
        """The view cannot follow: which rows the terminal shows where is no longer known. The
        rows it had are kept aside (`stale`): a secret a later row completes over one of them,
        wherever it is, is still masked."""
        near = [list(cells) for r, cells in self.rows.items()
                if abs(r - self.y) <= self.height and "".join(cells).strip()]
        if near:
            self.forgotten += 1
            self.stale = [*self.stale, *near][-2 * self.height:]
            self._scrolled = 0
        self.rows, self._sources = {}, {}
        self.top, self.span = None, (0, self.height - 1)

    def _move(self, y: int | None = None, x: int | None = None) -> None:
        if y is not None:
            self.y = y
        if x is not None:
            self.x = min(max(0, x), self.width - 1)
        self.wrap_pending = False

    def _save(self) -> None:
        self.saved, self._saved_span, self._saved_unsure = (self.y, self.x), self.span, False

    def _restore(self) -> None:
        """Back to the saved cursor: a screen position. If the screen may have scrolled since
        (the view not knowing where its edges were), the rows there are not the view's."""
        if self._saved_unsure:
            self._forget()
        self._move(*self.saved)
        if self.top is None:
            self.span = self._saved_span  # the screen row it was saved on

    def _narrow(self, lines: int) -> None:
        """The cursor went `lines` down (up if < 0) and the screen scrolled if it had to: the
        rows it may be on, and once that is one row, where the screen is."""
        first, last = self.span
        bottom = self.height - 1
        if lines == 1 and last < bottom:  # a line feed (the usual case), no scroll
            self.span = (first + 1, last + 1)
            return
        if lines == 1 and first == bottom:
            self._saved_unsure = True
            return
        if not 0 <= last + lines <= bottom or not 0 <= first + lines <= bottom:
            self._saved_unsure = True  # the screen may have scrolled
        self.span = (min(max(0, first + lines), self.height - 1), min(max(0, last + lines), self.height - 1))

    def _vertical(self, lines: int) -> None:
        """CUU/CUD: stop at the region's margin when inside it, or at the screen's edge."""
        bounds = self._bounds()
        target = self.y + lines
        if self.top is None and self.region is None:
            first, last = self.span
            if -first <= lines <= self.height - 1 - last:
                self._move(y=target)
                self._narrow(lines)
                return
            # It may stop at the screen's edge: where it stops is not known.
            self._forget()
            self._move(y=target)
            self.span = (0, max(0, last + lines)) if lines < 0 else (min(self.height - 1, first + lines),
                                                                    self.height - 1)
            return
        if bounds is not None:
            first, last = bounds
            if first <= self.y <= last:
                target = min(max(target, first), last)
            else:
                target = min(max(target, self.top or 0), (self.top or 0) + self.height - 1)
        self._move(y=target)

    def _absolute_row(self, row: int) -> None:
        """CUP/VPA to screen row `row` (0-based)."""
        if self.origin and self.region is not None:
            row += self.region[0]
        if self.top is None and self.span[0] == self.span[1]:
            self.top = self.y - self.span[0]  # the cursor's screen row was known: nothing is lost
        elif self.top is None:
            self._forget()
            self.top = self.y - row  # from now on the rows are known: all blank to the view
        self._move(y=self.top + min(max(0, row), self.height - 1))

    def _tab(self, count: int) -> None:
        tabs = self.tabs if self.tabs is not None else range(0, self.width, 8)
        for _ in range(max(1, abs(count))):
            if count < 0:
                stops = [s for s in tabs if s < self.x]
                self._move(x=max(stops) if stops else 0)
            else:
                stops = [s for s in tabs if s > self.x]
                self._move(x=min(stops) if stops else self.width - 1)

    def _control(self, match: re.Match[bytes]) -> None:  # noqa: C901, PLR0912 - one terminal
        if match.group(7) is not None:
            byte = match.group(7)
            if byte == b"\r":
                self._move(x=0)
            elif byte in b"\n\x0b\x0c":
                self.wrap_pending = False
                self._line_feed()
                if self.onlcr and byte == b"\n":
                    self.x = 0
            elif byte == b"\x08":
                self._move(x=self.x - 1)
            elif byte == b"\t" and self.wrap_pending:
                # Right after a character drawn in the last column: xterm and tmux leave the
                # cursor waiting to wrap, pyte brings it back onto that character, which the
                # next one then overwrites. Removed, so that every terminal wraps.
                self._pending[0][match.start()] = (match.end(), 0)
            elif byte == b"\t":
                self._tab(1)
            return
        if match.group(4) is not None:
            self._csi(match.group(1), match.group(2), match.group(3), match.group(4))
            return
        if match.group(6) is None:
            return  # OSC, DCS and friends draw nothing
        intermediate, final = match.group(5), match.group(6)
        if intermediate:
            if intermediate == b"#" and final in b"3456":
                self._forget()  # double-width and double-height lines
            return
        if final == b"7":
            self._save()
        elif final == b"8":
            self._restore()
        elif final == b"D":
            self._line_feed()
        elif final == b"E":
            self._move(x=0)
            self._line_feed()
        elif final == b"M":
            self._reverse_index()
        elif final == b"H":
            self.tabs = set(self.tabs if self.tabs is not None else range(0, self.width, 8)) | {self.x}
        elif final == b"c":
            reachable = self.reachable
            self.__init__(self.width, self.height, self._find, self._opening, onlcr=self.onlcr)  # type: ignore[misc]
            self.reachable = reachable

    def _csi(  # noqa: C901, PLR0912, PLR0915 - one terminal's CSI sequences
            self, private: bytes, params: bytes, intermediate: bytes, final_byte: bytes) -> None:
        parts = params.replace(b":", b";").split(b";") if params else []
        values = [int(p) if p.isdigit() and len(p) < 6 else 0 for p in parts]

        def arg(index: int = 0, default: int = 1) -> int:
            value = values[index] if index < len(values) else 0
            return value or default

        final = final_byte.decode()
        if intermediate:
            return
        if private:
            if private == b"?" and final in "hl":
                on = final == "h"
                for value in values:
                    if value in (1049, 1047, 47):
                        self._alternate(on, value)
                    elif value == 1048:  # save or restore the cursor, as DECSC and DECRC
                        if on:
                            self._save()
                        else:
                            self._restore()
                    elif value == 7:
                        self.autowrap = on
                    elif value == 6:
                        self.origin = on
                        bounds = self._bounds()
                        self._move(y=bounds[0] if bounds else self.y, x=0)
                    elif value == 69:
                        self._forget()  # left and right margins
            return
        if final == "m":
            return
        if final == "A":
            self._vertical(-arg())
        elif final in "Be":
            self._vertical(arg())
        elif final in "Ca":
            self._move(x=self.x + arg())
        elif final == "D":
            self._move(x=min(self.x, self.width - 1) - arg())
        elif final == "E":
            self._vertical(arg())
            self._move(x=0)
        elif final == "F":
            self._vertical(-arg())
            self._move(x=0)
        elif final in "G`":
            self._move(x=arg() - 1)
        elif final in "Hf":
            self._absolute_row(arg() - 1)
            self._move(x=arg(1) - 1)
        elif final == "d":
            self._absolute_row(arg() - 1)
        elif final == "I":
            if not self.wrap_pending:  # waiting to wrap, the cursor stays (xterm, tmux)
                self._tab(arg())
        elif final == "Z":
            self._tab(-arg())
        elif final == "g":
            if arg(0, 0) == 3:
                self.tabs = set()
            elif arg(0, 0) == 0:
                self.tabs = set(self.tabs if self.tabs is not None else range(0, self.width, 8)) - {self.x}
        elif final == "s":
            self._save()
        elif final == "u":
            self._restore()
        elif final == "r":
            first, last = arg(0, 1) - 1, arg(1, self.height) - 1
            self.region = None if (first, last) == (0, self.height - 1) or first >= last else (first, last)
            if self.top is None:
                self._forget()
                self.top = self.y  # the cursor goes home: row 0 of the screen, from now on
            self._move(y=self.top + (self.region[0] if self.origin and self.region else 0), x=0)
        elif final == "h" and 4 in values:
            self.insert = True
        elif final == "l" and 4 in values:
            self.insert = False
        elif final in "@PX":
            self._edit_line(final, arg())
        elif final == "K":
            self._erase_line(arg(0, 0))
        elif final == "J":
            self._erase_display(arg(0, 0))
        elif final in "LM":
            bounds = self._bounds()
            if bounds is None:
                self._forget()
            elif bounds[0] <= self.y <= bounds[1]:
                self._scroll(-arg() if final == "L" else arg(), (self.y, bounds[1]))
                self._move(x=0)
        elif final in "ST":
            self._scroll(arg() if final == "S" else -arg())
        elif final == "b":
            for _ in range(min(arg(), self.width * self.height)):
                self._put(self.last, None, _width(self.last) or 1)

    def _edit_line(self, final: str, count: int) -> None:
        x = min(self.x, self.width - 1)
        count = min(count, self.width - x)
        _edit(self._row(self.y), final, x, count, " ", self.width)
        _edit(self._sources_of(self.y), final, x, count, None, self.width)
        self._touched.add(self.y)

    def _erase_line(self, mode: int) -> None:
        row = self._row(self.y)
        span = {0: (self.x, self.width), 1: (0, self.x + 1), 2: (0, self.width)}.get(mode)
        if span is not None:
            row[span[0]:span[1]] = " " * (span[1] - span[0])

    def _erase_display(self, mode: int) -> None:
        if mode in (2, 3):  # the whole screen: forgotten rows on it go too
            self.rows, self._sources, self.stale = {}, {}, []
            return
        self._erase_line(mode)
        for y in list(self.rows):
            if (mode == 0 and y > self.y) or (mode == 1 and y < self.y):
                del self.rows[y]

    def _alternate(self, on: bool, mode: int) -> None:
        """1049 saves the cursor on entry and restores it on exit; 47 and 1047 leave it where it
        is, on the main screen's rows (which the view then forgets if it lost their alignment).
        What this chunk drew on the screen it leaves is read first (a secret there showed)."""
        if (on and self.main is None) or (not on and self.main is not None):
            replace, _, masked, unknown = self._pending
            left: dict[int, list[int]] = {}  # cells drawn before, on a screen no longer shown
            self._collect(replace, left, masked, unknown, pause=False)
            unknown += ["secret"] * len(left)
            self._touched, self._sources = set(), {}
        if on and self.main is None:
            self.main = (self.rows, self.y, self.x, self.top, self.stale, self.span)
            # 1049 clears the alternate screen; after 47, some terminals still show what was
            # drawn there the last time: kept aside.
            self.rows, self.stale = {}, [] if mode == 1049 else self._alternate_rows
        elif not on and self.main is not None:
            rows, y, x, top, stale, span = self.main
            self.main = None
            self._alternate_rows = [list(c) for c in self.rows.values() if "".join(c).strip()][-self.height:]
            if mode == 1049:
                self.rows, self.y, self.x, self.top, self.stale, self.span = rows, y, x, top, stale, span
                self.wrap_pending = False
                return
            if top is None and self.top is not None:  # the rows were placed anew on the other screen
                self.rows, self.top = rows, None
                self._forget()
                self.stale = [*stale, *self.stale][-2 * self.height:]
            else:
                self.rows, self.stale = rows, [*stale, *self.stale][-2 * self.height:]

    # -- masking -----------------------------------------------------------------------------

    def _mask(self, data: bytes, *, pause: bool = False) -> ViewResult:
        """Mask the secrets on the rows this chunk touched; when output pauses, also one still
        being written that ends at the cursor (a card number's digits past its sixth)."""
        replace, redraw, masked, unknown = self._pending
        self._collect(replace, redraw, masked, unknown, pause=pause)
        if not replace and not redraw:
            return ViewResult(data, masked, [(name, "a row the view forgot") for name in unknown])
        out, last = [], 0
        for begin in sorted(replace):
            stop, cells = replace[begin]
            out += [data[last:begin], b"*" * cells]
            last = stop
        out.append(data[last:])
        unreachable = self._redraw(out, redraw)
        name = masked[0] if masked else "secret"
        return ViewResult(b"".join(out), masked, [(name, where) for where in unreachable]
                          + [(n, "a row the view forgot") for n in unknown])

    def _collect(self, replace: dict[int, tuple[int, int]], redraw: dict[int, list[int]], masked: list[str],
                 unknown: list[str], *, pause: bool) -> None:
        """The secrets on the rows touched: the bytes of this chunk to mask (`replace`: byte
        start: (byte end, cells)) and the cells earlier chunks drew (`redraw`: row: columns)."""
        for y in sorted(self._touched):
            if y not in self.rows:
                continue
            row = self._row(y)
            sources = self._sources.get(y) or [None] * len(row)
            for start, end, name in self._secrets(y, row, pause=pause):
                columns = _columns(row, start, end)
                shown = [c for c in columns if row[c] not in ("*", " ")]
                if not shown:
                    continue
                if name:
                    masked.append(name)
                for column in shown:
                    wide = column + 1 < len(row) and row[column + 1] == ""
                    source = sources[column]
                    if source is not None:
                        replace[source[0]] = (source[1], 2 if wide else 1)
                    else:
                        redraw.setdefault(y, []).extend([column, column + 1] if wide else [column])
                    row[column] = "*"
                    if wide:
                        row[column + 1] = "*"
        if self.stale:  # secrets completed over a forgotten row: its part cannot be drawn over
            self._mask_over_stale(replace, redraw, masked, unknown)

    def _mask_over_stale(self, replace: dict[int, tuple[int, int]], redraw: dict[int, list[int]],
                         masked: list[str], unknown: list[str]) -> None:
        """Each row this chunk touched, read over each forgotten row (its blank cells showing
        the forgotten row's): a secret found there is masked where this view drew it."""
        for y in sorted(self._touched):
            if y not in self.rows:
                continue
            row = self._row(y)
            if not "".join(row).strip(" *"):
                continue
            sources = self._sources.get(y) or [None] * len(row)
            for old in self.stale:
                over = [c if c != " " or i >= len(old) else (old[i] or " ") for i, c in enumerate(row)]
                if over == row:
                    continue
                for start, end, name in self._find("".join(over)):
                    columns = _columns(over, start, end)
                    mine = [c for c in columns if row[c] not in ("*", " ", "")]
                    if not mine or all(row[c] != " " for c in columns):
                        continue  # none of it drawn here, or all of it: read without the forgotten row
                    if name:
                        masked.append(name)
                        unknown.append(name)
                    for column in mine:
                        source = sources[column]
                        if source is not None:
                            replace[source[0]] = (source[1], 1 if row[column + 1:column + 2] != [""] else 2)
                        else:
                            redraw.setdefault(y, []).append(column)
                        row[column] = "*"

    def _secrets(self, y: int, row: list[str], *, pause: bool) -> list[tuple[int, int, str]]:
        found = self._find("".join(row))
        if pause and y == self.y and self._opening is not None:
            before = "".join(row[:self.x + self.wrap_pending])
            opening = self._opening(before)
            if opening >= 0:
                found.append((opening, len(before.rstrip(" -")), ""))
        return found

    def _redraw(self, out: list[bytes], redraw: dict[int, list[int]]) -> list[str]:
        """Draw `*` over cells drawn by earlier chunks: relative moves there and back."""
        unreachable = []
        if self.reachable is not None:
            for y in [y for y in redraw if not self.reachable(y)]:
                del redraw[y]
                unreachable.append(f"row {y - self.y:+d}")
        if not redraw:
            return unreachable
        bounds = self._bounds()
        back_y, back_x, pending = self.y, min(self.x, self.width - 1), self.wrap_pending
        moves: list[bytes] = [b"\x1b[4l"] if self.insert else []
        if self.top is not None and not self.origin:  # the screen rows are known: CUP goes anywhere
            out.extend(self._redraw_absolute(moves, redraw, back_y, back_x, pending))
            return unreachable
        at = self.y
        for y in sorted(redraw):
            if bounds is not None and bounds[0] <= self.y <= bounds[1] and not bounds[0] <= y <= bounds[1]:
                unreachable.append(f"row {y - self.y:+d}")  # CUU/CUD stop at the region's margins
                continue
            if y != at:
                moves.append(b"\x1b[%dA" % (at - y) if y < at else b"\x1b[%dB" % (y - at))
                at = y
            for column in sorted(redraw[y]):
                moves.append(b"\x1b[%dG*" % (column + 1))
        if at != back_y:
            moves.append(b"\x1b[%dA" % (at - back_y) if back_y < at else b"\x1b[%dB" % (back_y - at))
        if pending:  # redraw the last column's character: the next one wraps, as it would have
            last = self._row(back_y)[self.width - 1] or " "
            moves.append(b"\x1b[%dG" % self.width + last.encode())
        else:
            moves.append(b"\x1b[%dG" % (back_x + 1))
        if self.insert:
            moves.append(b"\x1b[4h")
        out.extend(moves)
        return unreachable


    def _redraw_absolute(self, moves: list[bytes], redraw: dict[int, list[int]], back_y: int, back_x: int,
                         pending: bool) -> list[bytes]:
        assert self.top is not None
        for y in sorted(redraw):
            for column in sorted(redraw[y]):
                moves.append(b"\x1b[%d;%dH*" % (y - self.top + 1, column + 1))
        moves.append(b"\x1b[%d;%dH" % (back_y - self.top + 1, back_x + 1))
        if pending:  # redraw the last column's character: the next one wraps, as it would have
            moves.append((self._row(back_y)[self.width - 1] or " ").encode())
        if self.insert:
            moves.append(b"\x1b[4h")
        return moves


def _columns(row: list[str], start: int, end: int) -> list[int]:
    """The columns of characters `start`..`end` of the row's text (a wide character's second
    cell holds nothing: it is not a character of the text)."""
    columns, index = [], 0
    for column, char in enumerate(row):
        if not char:
            continue
        if start <= index < end:
            columns.append(column)
        index += 1
    return columns


T = TypeVar("T")


def _edit(table: list[T], final: str, x: int, count: int, blank: T, width: int) -> None:
    """ICH (@), DCH (P) or ECH (X) on one row's list."""
    if final == "@":
        table[x:x] = [blank] * count
        del table[width:]
    elif final == "P":
        del table[x:x + count]
        table.extend([blank] * count)
    else:
        table[x:x + count] = [blank] * count


def _shift(table: dict[int, T], first: int, last: int, lines: int) -> None:
    """Scroll rows `first`..`last` up (`lines` > 0) or down; rows coming in are blank."""
    rows = [table.get(r) for r in range(first, last + 1)]
    blank: list[T | None] = [None] * min(abs(lines), len(rows))
    rows = rows[lines:] + blank if lines > 0 else blank + rows[:lines]
    for index, row in enumerate(rows):
        if row is None:
            table.pop(first + index, None)
        else:
            table[first + index] = row
