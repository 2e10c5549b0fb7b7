"""The output of a session without a pty as the user's terminal draws it. Pure.

Without a pty, the target's stdout and stderr reach the user's ssh client as two streams, and
the client writes both to the user's terminal (through the user's own tty, which turns LF into
CR LF) in the order they come. A program can draw a secret there that no single stream holds in
order: the second half at its column, a carriage return and the first half
(`printf 'id=\\e[14G%s\\rid=%s\\n'`), or the two halves one on stdout and one on stderr. The
stream maskers (one per stream) read bytes; `StreamScreen` reads the row they draw.

It costs nothing while the output cannot draw over itself: text and line ends only, from one
stream at a time (the bulk case). A chunk of either stream that holds a byte that can move the
cursor back or overwrite (ESC, BS, VT, FF, a CR not ending a line), or output on one stream
while the other's row is still open, is read on a `ScreenView` of the cursor's row, in the
order the streams come: a secret found on the row is masked before the chunk leaves (this
chunk's characters of it become `*`, the ones drawn before are drawn over).

The bastion knows neither the terminal's width nor its height, nor where the session's first
row started, nor the terminal's tab stops. So the view follows only what does not depend on
them, and the rest is changed so that the terminal does what the view follows:

- Followed: text and wide characters; LF (as CR LF); CR, BS, CUB, CUF, CHA, HPA, HPR, EL, ECH,
  DCH, ICH, ED and REP, on a *sure* row: one a line feed of this session started, whose
  characters and cursor stay within the first `NARROWEST` columns (so no terminal at least that
  wide wraps it), and moves whose target is there too. A tab becomes the spaces to the next
  tab stop (the terminal's own stops may be anywhere).
- Changed into a line break (LF): those moves on a row that is not sure (the session's first
  row, a row wider than NARROWEST, a row with a tab the view did not read, the row the user's
  typing was echoed on by their tty), and every move up or
  down, absolute move, scroll, save and restore, index and reset: the cursor then starts a new
  row, as the view does, wherever the terminal's edges are. Modes (alternate screen, insert,
  origin, autowrap, margins) and scrolling regions are removed.
- Sequences the view does not follow are removed as on a pty (`screenview.sanitized`).

A tab at the terminal's right margin draws nothing (see TAB_RUN): in plain output, each tab is
also read as nothing, and a secret it completes is masked where the chunk has it.

A CR at a chunk's end is held until the next byte shows whether it ends a line (CR LF), or
for the masker's pause.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from bastion.core.masker import SecretMasker
from bastion.core.screenview import NOT_SGR, ScreenView, sanitized
from bastion.core.terminal import (
    CUT_ESCAPE,
    ESC_SEQUENCE,
    FLAG_ESCAPE,
    FLAG_MOVES,
    FLAG_NON_ASCII,
    FLAG_UNDRAWN,
    UNDRAWN,
    screen_flags,
)

NARROWEST = 40  # columns: the narrowest terminal whose rows the view follows
WIDTH = 1024  # the view's row: longer ones are not sure anyway
HEIGHT = 24  # rows of the view (only the cursor's row is ever drawn on again)
ROW_KEPT = 1024  # bytes of the open row kept while output is plain
# Bytes that can move the cursor back or down, or overwrite: BS, VT, FF, a CR not ending a line,
# escape sequences other than colours, C1 controls (a tab only moves it forward: tabs are followed once
# a chunk is read on the view).
MOVES = re.compile(rb"[\x08\x0b\x0c]|\r(?!\n)")


# A tab with no tab stop after the cursor stops at the right margin: at the margin it draws
# nothing, and on some terminals (pyte's) one right after a character drawn in the last column
# brings the cursor back onto it. The character after it is then drawn next to (or over) the one
# before, in the last column, and the row wraps after it. So each tab, with the characters and
# escape sequences not drawn around it, is also read as nothing: what comes before it on its row
# (up to JOIN_WINDOW bytes) joined with the one character drawn after it.
HIDDEN = ESC_SEQUENCE + b"|" + UNDRAWN
HIDDENS = re.compile(HIDDEN)
TAB_RUN = re.compile(rb"\t+")
TAB_RUN_HIDDEN = re.compile(rb"\t(?:\t|" + HIDDEN + rb")*")
OPEN_TAB = re.compile(rb"\t(?:\t|" + HIDDEN + rb")*\Z")  # nothing drawn after the row's last tab yet
# The row's first tab is in the column the bytes before it reach at most (one started by a line
# feed of this session): on a terminal at least this wide, one nearer its start is not at the
# margin.
TAB_NARROWEST = 20
JOIN_WINDOW = ROW_KEPT  # bytes before a tab read joined with the character after it
FLAGS_HIDDEN = FLAG_ESCAPE | FLAG_UNDRAWN | FLAG_NON_ASCII
NON_ASCII = bytes(range(0x80, 0x100))
# A run of at least twelve digits (a space or a dash between two of them) that a tab run then
# a digit follow, directly or over single characters between tabs (or one more character first,
# drawn in the last column): the only way a card number shows once a tab draws nothing.
CARD_JOINT = re.compile(
    rb"(?<![0-9])(?<![0-9][ -])[0-9](?:[ -]?[0-9]){11,}+[^\t\n]?(?:\t+[^\t\n])*\t+(?=[0-9])")


C1 = re.compile(rb"\xc2[\x80-\x9f]")  # C1 controls written in UTF-8: some terminals act on them


def _draws_over(data: bytes, flags: int | None = None) -> bool:
    if flags is None:
        flags = screen_flags(data)
    if flags & FLAG_ESCAPE and NOT_SGR.search(data) is not None:
        return True
    if flags & FLAG_NON_ASCII and C1.search(data) is not None:
        return True
    return bool(flags & FLAG_MOVES) and MOVES.search(data) is not None


TOKEN = re.compile(
    rb"\x1b\[([<=>?]?)([0-9;:]*)([ -/]*)([@-~])"  # CSI: private marker, parameters, intermediates, final
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"  # DCS, SOS, PM, APC
    rb"|\x1b([ -/]*)([0-~])"  # other ESC sequences
    rb"|([\x08-\x0d])"  # a move, or a line feed
)
NEWLINE = b"\n"
# Modes that neither move the cursor nor change how text is drawn: cursor shown or blinking,
# application keys, mouse reports, focus events, bracketed paste, synchronized output.
KEPT_MODES = frozenset({1, 12, 25, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004, 2026})
HORIZONTAL = frozenset(b"CDGa`KXP@Jb")


@dataclass
class Drawn:
    """What goes out, in order: (stream, bytes), and what was found."""

    parts: list[tuple[int, bytes]] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    drawn: list[str] = field(default_factory=list)  # "DETECTOR (where)": found, not drawn over

    def data(self, stream: int) -> bytes:
        return b"".join(data for s, data in self.parts if s == stream)


class StreamScreen:
    """stdout and stderr of one channel without a pty, read as the row one terminal draws."""

    def __init__(self, find: Callable[[str], list[tuple[int, int, str]]],
                 opening: Callable[[str], int] | None = None,
                 may_join: Callable[[bytes], bool] | None = None,
                 across: Callable[[bytes, int], list[tuple[int, int, str]]] | None = None) -> None:
        """`may_join`, `across`: `SecretMasker.may_join` and `secrets_across`, to read a tab as
        drawing nothing (None: tabs are not read so)."""
        self._find = find
        self._opening = opening
        self._may_join = may_join if across is not None else None
        self._across = across
        self._tab_open = False  # the open row ends with a tab nothing was drawn after yet
        self._space_before = False  # the view's next character goes after a space (a tab before it)
        self._view: ScreenView | None = None
        self._row = b""  # the open row's bytes since its line feed, while output is plain
        self._row_sure = False  # a line feed of this session started it, and it has no tab
        self._last: int | None = None  # the stream that wrote last
        self._cr: int | None = None  # the stream whose CR at its chunk's end is held
        self._unsure_y: int | None = None  # the view's row that is not sure (None: the cursor's is)

    def holding_for(self, stream: int) -> bool:
        """Whether a CR of `stream` is held (released at the next byte or a pause)."""
        return self._cr == stream

    @property
    def drawing(self) -> bool:
        """Whether the cursor's row is being read on the view."""
        return self._view is not None

    def feed(self, data: bytes, stream: int, *, pause: bool = False, flags: int | None = None) -> Drawn:
        """`data`, released by `stream`'s masker: what goes out, in order. `flags`: what
        `screen_flags` finds in bytes `data` is part of, when known (it spares a pass)."""
        out = Drawn()
        if self._cr is not None:
            cr_stream, self._cr = self._cr, None
            if cr_stream == stream:
                data, flags = b"\r" + data, None
            elif data:
                self._chunk(b"\r", cr_stream, out)
            else:
                self._cr = cr_stream
        if data.endswith(b"\r") and not pause:
            data, self._cr = data[:-1], stream
        if data or pause:
            self._chunk(data, stream, out, pause=pause, flags=flags)
        return out

    def typed(self) -> None:
        """The user typed (the client's stdin): their own tty echoes it on the terminal, where
        the bastion cannot see it (a line and its line break, or keys edited away), so where the
        cursor is on its row is no longer known."""
        self._row_sure = False
        if self._view is not None:
            self._unsure_y = self._view.y

    def flush(self, stream: int) -> Drawn:
        """The stream ended: a CR it holds goes out."""
        out = Drawn()
        if self._cr == stream:
            self._cr = None
            self._chunk(b"\r", stream, out)
        return out

    # -- plain output, the usual case ----------------------------------------------------------

    def _chunk(self, data: bytes, stream: int, out: Drawn, *, pause: bool = False,
               flags: int | None = None) -> None:
        switched = self._last is not None and self._last != stream and bool(self._row)
        if data:
            self._last = stream
        if self._view is None:
            if not switched and not _draws_over(data, flags):
                data = self._joined(data, out)
                self._plain(data)
                out.parts.append((stream, data))
                return
            self._engage()
        self._drawn(data, stream, out, pause=pause)

    def _plain(self, data: bytes) -> None:
        line = data.rfind(b"\n")
        if line >= 0:
            self._row, self._row_sure = data[line + 1:][-ROW_KEPT:], True
        else:
            self._row = (self._row + data)[-ROW_KEPT:]
        tab = self._row.rfind(b"\t")
        self._tab_open = tab >= 0 and OPEN_TAB.match(self._row, tab) is not None
        if tab >= 0 or len(self._row) >= ROW_KEPT:
            self._row_sure = False

    def _engage(self) -> None:
        """Read the cursor's row on a view from now on: drawn first as the terminal shows it."""
        view = ScreenView(WIDTH, HEIGHT, self._find, self._opening, onlcr=True)
        view.reachable = self._reachable
        self._view = view
        self._unsure_y = None if self._row_sure else view.y
        if self._row:
            view.draw(sanitized(self._row.replace(b"\t", b" ")))
        # A tab the terminal got as it is ends the row: the next character drawn may be drawn
        # right after (or over) the one before it, at the margin. A space before that character
        # takes a column on every terminal (and wraps at the margin).
        self._space_before, self._tab_open = self._tab_open, False

    # -- read on the view ----------------------------------------------------------------------

    def _sure(self) -> bool:
        """The cursor's row is laid out as on every terminal at least NARROWEST wide."""
        view = self._view
        assert view is not None
        if view.y == self._unsure_y or view.x + view.wrap_pending >= NARROWEST:
            return False
        return _extent(view.rows.get(view.y)) < NARROWEST

    def _reachable(self, y: int) -> bool:
        return self._view is not None and y == self._view.y and self._sure()

    def _drawn(self, data: bytes, stream: int, out: Drawn, *, pause: bool) -> None:
        view = self._view
        assert view is not None
        cut = CUT_ESCAPE.search(data, max(0, len(data) - 4096)) if b"\x1b" in data[-4096:] else None
        if cut is not None:  # a sequence the stream's masker let go unfinished: never completed
            data = data[:cut.start()]
        data = sanitized(data)
        if self._space_before:
            data = self._after_a_tab(data)
        # After the last byte that can draw over, a line feed closes the row for good: the rest
        # of the chunk is plain output again.
        last = max([-1, *(m.start() for pattern in (NOT_SGR, MOVES) for m in pattern.finditer(data))])
        position = 0
        pieces: list[bytes] = []
        for match in TOKEN.finditer(data):
            if match.group(7) == b"\n":  # the row is read while the cursor is still on it
                self._draw(pieces, data[position:match.start()], out)
                position = match.start()
                if position > last:
                    self._view, self._row, self._row_sure, self._tab_open = None, b"", True, False
                    rest = self._joined(data[position:], out)
                    out.parts.append((stream, b"".join(pieces) + rest))
                    self._plain(rest)
                    return
                continue
            if match.group(7) == b"\t":
                self._draw(pieces, data[position:match.start()], out)
                self._draw(pieces, self._tab(), out)
                position = match.end()
                continue
            # What comes before is drawn first: the decision reads the row as it then is.
            self._draw(pieces, data[position:match.start()], out)
            position = match.start()
            decided = self._decide(match, data)
            if decided is None:
                continue
            self._draw(pieces, decided, out)
            position = match.end()
        self._draw(pieces, data[position:], out, pause=pause)
        out.parts.append((stream, b"".join(pieces)))
        if not data.endswith(b"\n"):
            return
        # The row is closed and never drawn on again: plain output costs nothing again.
        self._view, self._row, self._row_sure = None, b"", True

    def _after_a_tab(self, data: bytes) -> bytes:
        """A space before the first character `data` draws, unless a move comes first."""
        position = 0
        while (hidden := HIDDENS.match(data, position)) is not None and _still(hidden.group()):
            position = hidden.end()
        head = data[position:position + 1]
        if not head:
            return data
        self._space_before = False
        if head in b"\t\x08\n\x0b\x0c\r\x1b":
            return data
        return data[:position] + b" " + data[position:]

    # -- a tab at the right margin -------------------------------------------------------------

    def _joined(self, data: bytes, out: Drawn) -> bytes:
        """`data`, plain output going on after the open row, with the characters it draws of a
        secret that shows once a tab draws nothing masked (see TAB_RUN)."""
        if self._may_join is None or (b"\t" not in data and not self._tab_open):
            return data
        base = len(self._row)
        text = self._row + data
        first = base
        if self._tab_open:  # the run the open row ends with goes on in `data`
            opened = OPEN_TAB.search(self._row, max(0, base - 512))
            first = opened.start() if opened is not None else base
        hidden = bool(screen_flags(text) & FLAGS_HIDDEN)
        line = text.rfind(b"\n", 0, first) + 1
        if not self._suspect(text[line:], hidden):  # the usual case: one look at the whole
            return data
        runs = TAB_RUN_HIDDEN if hidden else TAB_RUN
        spans: dict[tuple[int, int], str] = {}
        while line < len(text):
            end = text.find(b"\n", line)
            end = len(text) if end < 0 else end
            joints = [run for run in runs.finditer(text, max(line, first), end)
                      if base <= run.end() < end]
            if joints and (line > 0 or self._row_sure) and joints[0].start() - line < TAB_NARROWEST - 1 and (
                    text.find(b"\t", line, joints[0].start()) < 0):
                del joints[0]  # the row's first tab, too near its start to be at any margin
            if joints and self._suspect(text[line:end], hidden):
                if not hidden and text[line:end].isascii() and not self._may_join(text[line:end]):
                    # Only a card number can be completed: at the tabs after twelve digits.
                    after_digits = {m.end() for m in CARD_JOINT.finditer(text, line, end)}
                    joints = [run for run in joints if run.end() in after_digits]
                for run in joints:
                    self._joint(text, max(line, run.start() - JOIN_WINDOW), run.start(), run.end(), spans,
                                hidden=hidden)
            line = end + 1
        if not spans:
            return data
        masked = bytearray(text)
        for (start, stop), name in sorted(spans.items(), reverse=True):
            if start >= base:
                masked[start:stop] = b"*"
            elif text[start:stop] != b"*" and f"{name} (row +0)" not in out.drawn:
                out.drawn.append(f"{name} (row +0)")
        out.masked += sorted(set(spans.values()))
        return bytes(masked[base:])

    def _suspect(self, text: bytes, hidden: bool) -> bool:
        """Whether `text` (lines, as written) may hold a secret that a tab drawing nothing
        completes: a trigger of a detector other than card numbers in it, or a run of at least
        twelve digits before a tab and a digit."""
        assert self._may_join is not None
        if hidden:
            text = HIDDENS.sub(b"", text)
        views = [text] if text.isascii() else [text, text.translate(None, NON_ASCII)]
        return any(self._may_join(view) or (self._opening is not None and CARD_JOINT.search(view) is not None)
                   for view in views)

    def _joint(self, text: bytes, begin: int, end: int, after: int,
               spans: dict[tuple[int, int], str], *, hidden: bool) -> None:
        """The secrets a tab run (`end`..`after`) drawing nothing completes: their characters
        (as byte spans of `text`) added to `spans`."""
        assert self._across is not None
        size = _char_length(text[after])
        if not hidden:  # no escape sequence, no character not drawn: bytes are characters
            for reading in _readings(text[begin:end]):
                joint = len(reading)
                for start, stop, name in self._across(reading + text[after:after + size], joint):
                    for index in range(start, stop):
                        at = begin + index if index < joint else after + index - joint
                        spans[(at, at + 1)] = name
            return
        chars = _visible(text, begin, end)
        last = (text[after:after + size].decode("utf-8", "surrogateescape"), after, after + size)
        for view in (chars, [c for c in chars if c[0].isascii()]):
            for count in _counts(view):
                drawn = [*view[:count], last]
                encoded = [c.encode("utf-8", "surrogateescape") for c, _, _ in drawn]
                starts = list(accumulate((len(e) for e in encoded), initial=0))
                for start, stop, name in self._across(b"".join(encoded), starts[count]):
                    for index in range(bisect_right(starts, start) - 1, bisect_right(starts, stop - 1)):
                        _, a, b = drawn[index]
                        spans[(a, b)] = name
            if last[0].isascii() and all(c[0].isascii() for c in chars):
                break

    def _draw(self, pieces: list[bytes], data: bytes, out: Drawn, *, pause: bool = False) -> None:
        view = self._view
        assert view is not None
        if not data and not pause:
            return
        y, feeds = view.y, data.count(b"\n")
        result = view.draw(data, pause=pause, read=True)
        pieces.append(result.data)
        out.masked += result.masked
        out.drawn += [f"{name} ({where})" for name, where in result.unreachable]
        if view.y - y > feeds:  # wrapped on the view: the row continues a longer one
            self._unsure_y = view.y
        view.rows = {view.y: view.rows[view.y]} if view.y in view.rows else {}

    def _decide(self, match: re.Match[bytes], data: bytes) -> bytes | None:  # noqa: PLR0911
        """None: draw the token as it is; else what goes out instead (a line break, spaces, or
        nothing)."""
        view = self._view
        assert view is not None
        move = match.group(7)
        if move is not None:
            if move == b"\r":
                if data[match.end():match.end() + 1] == b"\n":
                    return None
                return None if self._sure() else NEWLINE
            if move == b"\x08":
                return None if self._sure() else NEWLINE
            return NEWLINE  # VT, FF: down, keeping the column
        final = match.group(4)
        if final is not None:
            return self._csi(match.group(1), match.group(2), match.group(3), final)
        esc = match.group(6)
        if esc is None:
            return None  # OSC and strings: nothing drawn
        if match.group(5) or esc in b"=>H":
            return None  # character sets, keypad modes, a tab stop (followed by the view)
        return NEWLINE  # save, restore, index, reverse index, next line, reset

    def _tab(self) -> bytes:
        """A tab as the spaces to the view's next tab stop (the terminal's may be elsewhere)."""
        view = self._view
        assert view is not None
        stops = view.tabs if view.tabs is not None else range(0, WIDTH, 8)
        after = [s for s in stops if s > view.x]
        return b" " * ((min(after) if after else WIDTH - 1) - view.x)

    def _csi(  # noqa: PLR0911 - one rule a line
            self, private: bytes, params: bytes, intermediate: bytes, final: bytes) -> bytes | None:
        view = self._view
        assert view is not None
        parts = params.replace(b":", b";").split(b";") if params else []
        values = [int(p) if p.isdigit() else 0 for p in parts]
        first = (values[0] if values else 0) or 1
        if final in (b"m", b"n", b"c", b"q", b"t") or intermediate:
            return None  # colours, reports, cursor style: nothing moves
        if final in (b"h", b"l"):
            if private == b"?" and all(v in KEPT_MODES for v in values):
                return None
            return b""  # modes that change how the cursor moves or where text goes
        if final == b"r":
            return b""
        if final[0] not in HORIZONTAL or private:
            return NEWLINE
        if not self._sure():
            return NEWLINE
        x = view.x
        target = {ord("C"): x + first, ord("a"): x + first, ord("D"): x - first, ord("G"): first - 1,
                  ord("`"): first - 1, ord("b"): x + first}.get(final[0], x)
        if final == b"@":
            target = _extent(view.rows.get(view.y)) + first
        return None if target < NARROWEST else NEWLINE


class StreamsOutput:
    """The output of a channel without a pty: a masker per stream, then the row both draw."""

    def __init__(self, maskers: dict[int, SecretMasker], finder: SecretMasker) -> None:
        """`finder`: whose detectors read the row (its `secrets_in` keeps no state of its own)."""
        self._maskers = maskers
        self.screen = StreamScreen(*finder.view_finders(), finder.may_join, finder.secrets_across)

    def holding(self, stream: int) -> bool:
        return self._maskers[stream].holding or self.screen.holding_for(stream)

    def feed(self, data: bytes, stream: int) -> Drawn:
        masker = self._maskers[stream]
        result = masker.feed(data)
        drawn = self.screen.feed(result.data, stream, flags=masker.flags)
        drawn.masked[:0] = result.masked
        drawn.drawn[:0] = result.drawn
        return drawn

    def flush(self, stream: int, *, pause: bool = False) -> Drawn:
        """A quiet pause (`pause`: a tail may still be held) or the stream's end."""
        result = self._maskers[stream].flush(pause=pause)
        drawn = self.screen.feed(result.data, stream, pause=pause)
        if not pause:
            end = self.screen.flush(stream)
            drawn.parts += end.parts
            drawn.masked += end.masked
            drawn.drawn += end.drawn
        drawn.masked[:0] = result.masked
        drawn.drawn[:0] = result.drawn
        return drawn


def _still(sequence: bytes) -> bool:
    """A character not drawn, a colour or a string: the cursor stays where it is."""
    if not sequence.startswith(b"\x1b"):
        return True
    return sequence.startswith((b"\x1b]", b"\x1bP", b"\x1bX", b"\x1b^", b"\x1b_")) or (
        sequence.startswith(b"\x1b[") and sequence.endswith(b"m"))


def _char_length(lead: int) -> int:
    """Bytes of the UTF-8 character that starts with `lead` (1 for a byte that starts none)."""
    return 1 if lead < 0xC2 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4 if lead < 0xF5 else 1


def _readings(before: bytes) -> list[bytes]:
    """What may show before the character after a tab drawing nothing: all of `before`; without
    its last character (drawn in the last column, the tab brought the cursor back onto it); and
    so on back over a chain of single characters between tabs."""
    readings = [before]
    while before:
        cut = len(before) - 1
        while cut > 0 and 0x80 <= before[cut] < 0xC0:
            cut -= 1
        before = before[:cut]
        if not before.endswith(b"\t"):
            readings.append(before)
            break
        before = before.rstrip(b"\t")
        readings.append(before)
    return readings


def _counts(chars: list[tuple[str, int, int]]) -> list[int]:
    """`_readings` as counts of leading characters."""
    counts = [len(chars)]
    count = len(chars)
    while count:
        count -= 1
        if count == 0 or chars[count - 1][0] != "\t":
            counts.append(count)
            break
        while count and chars[count - 1][0] == "\t":
            count -= 1
        counts.append(count)
    return counts


def _visible(text: bytes, begin: int, end: int) -> list[tuple[str, int, int]]:
    """The characters `text[begin:end]` draws (escape sequences and characters not drawn left
    out), each with its bytes' span."""
    chars: list[tuple[str, int, int]] = []
    position = begin
    for hidden in [*HIDDENS.finditer(text, begin, end), None]:
        stop = end if hidden is None else hidden.start()
        segment = text[position:stop]
        for char in segment.decode("utf-8", "surrogateescape"):
            size = len(char.encode("utf-8", "surrogateescape"))
            chars.append((char, position, position + size))
            position += size
        if hidden is not None:
            position = hidden.end()
    return chars


def _extent(row: list[str] | str | None) -> int:
    """The columns a row's drawn characters reach (a wide character takes two cells, the second
    one holding "")."""
    if isinstance(row, str):
        return len(row.rstrip(" "))
    return len("".join(cell or "\x00" for cell in row or ()).rstrip(" "))
