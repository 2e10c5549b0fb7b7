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

A CR at a chunk's end is held until the next byte shows whether it ends a line (CR LF), or
for the masker's pause.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.core.masker import SecretMasker
from bastion.core.screenview import NOT_SGR, ScreenView, sanitized
from bastion.core.terminal import CUT_ESCAPE, FLAG_ESCAPE, FLAG_MOVES, FLAG_NON_ASCII, screen_flags

NARROWEST = 40  # columns: the narrowest terminal whose rows the view follows
WIDTH = 1024  # the view's row: longer ones are not sure anyway
HEIGHT = 24  # rows of the view (only the cursor's row is ever drawn on again)
ROW_KEPT = 1024  # bytes of the open row kept while output is plain
# Bytes that can move the cursor back or down, or overwrite: BS, VT, FF, a CR not ending a line,
# escape sequences other than colours, C1 controls (a tab only moves it forward: tabs are followed once
# a chunk is read on the view).
MOVES = re.compile(rb"[\x08\x0b\x0c]|\r(?!\n)")


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
                 opening: Callable[[str], int] | None = None) -> None:
        self._find = find
        self._opening = opening
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
        if b"\t" in self._row or len(self._row) >= ROW_KEPT:
            self._row_sure = False

    def _engage(self) -> None:
        """Read the cursor's row on a view from now on: drawn first as the terminal shows it."""
        view = ScreenView(WIDTH, HEIGHT, self._find, self._opening, onlcr=True)
        view.reachable = self._reachable
        self._view = view
        self._unsure_y = None if self._row_sure else view.y
        if self._row:
            view.draw(sanitized(self._row.replace(b"\t", b" ")))

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
                    rest = data[position:]
                    out.parts.append((stream, b"".join(pieces) + rest))
                    self._view, self._row, self._row_sure = None, b"", True
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
        self.screen = StreamScreen(*finder.view_finders())

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


def _extent(row: list[str] | str | None) -> int:
    """The columns a row's drawn characters reach (a wide character takes two cells, the second
    one holding "")."""
    if isinstance(row, str):
        return len(row.rstrip(" "))
    return len("".join(cell or "\x00" for cell in row or ()).rstrip(" "))
