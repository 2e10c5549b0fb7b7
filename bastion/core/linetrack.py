"""What the user is submitting at a shell prompt, read from a terminal emulator. Pure.

The output (already masked) feeds a pyte screen; the keystrokes since the last Enter are kept
too. At Enter the submitted line is the text between where the prompt ended (the cursor when
the first key of the line was typed) and the end of the input on screen, so line editing,
history recall and completion are all accounted for. When only plain typing happened, the
keystrokes must agree with the screen; if they do not (or the prompt is gone), the line is
`unsure`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyte

from bastion.core.terminal import ALT_SCREEN

# The alternate screen (vim, less, top) switched on (h) or off (l).
# Incremental history search replaces the prompt: the line Enter runs is the match shown.
SEARCH = re.compile(
    r"^\((?:reverse-i-search|i-search|bck-i-search|fwd-i-search|failed [a-z-]+)\)`[^']*': (.*)$")
PROMPT_END = re.compile(r"[$#>%:\]] ?$")  # how shell prompts end (PS1, PS2, zsh, python's >>>)
# Keys that only move the cursor (default bindings), and lines typed with only those and text.
MOVES = re.compile(rb"\x1b(?:\[(?:1;[35])?[CDHF]|O[CDHF]|\[[14]~|[bf])|[\x01\x02\x05\x06]")
MOVES_ONLY = re.compile(rb"(?:" + MOVES.pattern + rb"|[\x20-\x7e])*")
_EDITS = re.compile(rb"[\x7f\x08\x15\x17]")
PLAIN_KEYS = re.compile(rb"[\x20-\x7e\x7f\x08\x15\x17\n]*")  # newlines come only from pastes


@dataclass
class SubmittedLine:
    text: str
    unsure: bool = False
    why: str = ""


FOREIGN_CHECK_EVERY = 0.25
SETTLE_QUIET = 0.5  # a prompt after keys typed ahead, and no more output this long: nothing else comes
ECHO_DELAY_CAP = 5.0  # an answer later than this was not an echo (a key that draws nothing)
EDIT_QUIET = 1.0  # output this long after the last key, once the keys had echoed, was not typing's


class TrackedScreen(pyte.Screen):
    """A pyte screen that takes every CSI sequence a terminal takes. pyte passes a handler all
    the parameters it parsed (`CSI 1;1 A`, `CSI 1;1;1 H`) and private ones as `private=True`
    (`CSI ? 4 m`), which most handlers do not accept; a terminal ignores the extra parameters
    and the private sequences it does not know, and an exception here would end an honest
    session (any output can bring one: a file someone else wrote, shown with `cat`)."""

    # pyte stops with an error on an erase it does not know (`CSI 3 K`, `CSI 6 J`); a terminal
    # ignores it.
    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        if how in (0, 1, 2):
            super().erase_in_line(how, private)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how in (0, 1, 2, 3):
            super().erase_in_display(how, *args, **kwargs)

    def cursor_to_line(self, line: int | None = None) -> None:
        """VPA. pyte asserts a scrolling region in origin mode; without one a terminal counts
        rows from the screen's top."""
        if pyte.modes.DECOM in self.mode and self.margins is None:
            self.cursor.y = (line or 1) - 1
            self.ensure_vbounds()
        else:
            super().cursor_to_line(line)

    def report_device_status(self, mode: int) -> None:
        """Never answered (and pyte asserts a scrolling region to answer in origin mode)."""


def _tolerant(name: str) -> None:
    handler = getattr(TrackedScreen, name)
    parameters = list(inspect.signature(handler).parameters.values())[1:]
    takes_private = any(p.name == "private" or p.kind is p.VAR_KEYWORD for p in parameters)
    limit = None if any(p.kind is p.VAR_POSITIONAL for p in parameters) else sum(
        p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "private" for p in parameters)

    def accepting(self: pyte.Screen, *args: int, private: bool = False) -> None:
        if private and not takes_private:
            return
        if limit is not None:
            args = args[:limit]
        if private:
            handler(self, *args, private=True)
        else:
            handler(self, *args)

    setattr(TrackedScreen, name, accepting)


for _name in set(pyte.Stream.csi.values()):
    _tolerant(_name)


MAX_SIDE = 1000  # a client may claim any window size; the emulator's cost grows with it
UNFED_LIMIT = 256 * 1024  # output held for the emulator before only its end is kept
UNFED_KEEP = 64 * 1024


def _clamp(width: int, height: int) -> tuple[int, int]:
    return min(max(width, 20), MAX_SIDE), min(max(height, 5), MAX_SIDE)


LITERAL_EDITS = re.compile(rb"[\x08\x7f\x15\x17]")


def literal_keys(keys: bytes) -> str:
    """The line a terminal in cooked mode may hold instead: where the tty's erase and kill are
    other keys, backspace, DEL, Ctrl-U and Ctrl-W are characters of the line, not edits."""
    return keys.decode("utf-8", "replace")


_NOT_TEXT = bytes(b for b in range(256) if not (0x20 <= b <= 0x7E or b == 0x0A))
MAX_KEYS = 256 * 1024


def replay_keys(keys: bytes) -> str:
    """The line plain typing produces: printable keys, backspace, Ctrl-U, Ctrl-W."""
    if not _EDITS.search(keys):
        return keys.translate(None, _NOT_TEXT).decode("ascii")  # no edits: one pass in C
    line: list[str] = []
    for byte in keys:
        if byte in (0x7F, 0x08):
            if line:
                line.pop()
        elif byte == 0x15:
            line.clear()
        elif byte == 0x17:
            while line and line[-1] == " ":
                line.pop()
            while line and line[-1] != " ":
                line.pop()
        elif 0x20 <= byte <= 0x7E or byte == 0x0A:
            line.append(chr(byte))
    return "".join(line)


class LineTracker:
    def __init__(self, width: int, height: int, *, clock: Callable[[], float]) -> None:
        self._clock = clock  # seconds, monotonic: when keys and output came decides how to read them
        width, height = _clamp(width, height)
        self.screen = TrackedScreen(width, height)
        self.stream = pyte.ByteStream(self.screen)
        self.alternate = False
        self.keys = b""
        self._prompt: tuple[int, int, str] | None = None  # row, column, text before the cursor
        self.last_prompt = ""  # the previous line's prompt: text after it was already in the line
        self._entered_at = 0.0
        self._at_prompt = False  # the line's first key came after the shell drew something
        self._key_at = 0.0
        self._output_at = 0.0
        self._unanswered_key_at: float | None = None  # a key at the prompt no output followed yet
        self.echo_delay = 0.0  # how long this session's keys take to echo (fast up, slow down)
        # Output waits here until the screen is looked at (a key, an Enter): bulk output that
        # nobody types into costs an append, not an emulator pass over every byte.
        self._unfed: list[bytes] = []
        self._unfed_bytes = 0
        self._overflowed = False
        self.doubt = ""  # why this line cannot be read with certainty, whatever the screen says
        self._foreign_checked_at = 0.0

    def output(self, data: bytes) -> None:
        now = self._clock()
        if self.keys and not self.doubt and now - self._key_at > EDIT_QUIET and \
                self._output_at > self._key_at and not self._on_a_blank_row() and \
                now - self._foreign_checked_at >= FOREIGN_CHECK_EVERY:
            # Looked at a few times a second at most: reading the screen feeds the emulator, and
            # a flood of output must stay an append (see _unfed).
            self._foreign_checked_at = now
            if self.echoed():
                # The keys had echoed and the user paused: whatever draws now (a background job)
                # can overwrite the line on screen without changing what the shell holds.
                self.doubt = "output that typing did not cause arrived while the line was edited"
        if self._unanswered_key_at is not None:
            self._echo_took(now - self._unanswered_key_at)
            self._unanswered_key_at = None
        for match in ALT_SCREEN.finditer(data):
            self.alternate = match.group(1) == b"h"
        self._unfed.append(data)
        self._unfed_bytes += len(data)
        if self._unfed_bytes > UNFED_LIMIT:
            # Only the end can still matter for a prompt: keep that much, start from a blank screen.
            tail = b"".join(self._unfed)[-UNFED_KEEP:]
            self._unfed, self._unfed_bytes, self._overflowed = [tail], len(tail), True
        self._output_at = now

    def _sync(self) -> None:
        """Bring the emulator up to date with the output so far."""
        if self._overflowed:
            self.screen.reset()
            self._overflowed = False
        for chunk in self._unfed:
            self.stream.feed(chunk)
        self._unfed.clear()
        self._unfed_bytes = 0

    def resize(self, width: int, height: int) -> None:
        self._sync()  # what came before the resize was drawn at the old size
        width, height = _clamp(width, height)
        self.screen.resize(height, width)
        self._key_at = self._clock()  # the shell redraws the line: output this causes is expected

    def typed(self, data: bytes) -> None:
        self._sync()
        if not self.keys:
            y, x = self.screen.cursor.y, self.screen.cursor.x
            self._prompt = (y, x, self.screen.display[y][:x])
            self._at_prompt = self._output_at > self._entered_at
        if len(self.keys) + len(data) > MAX_KEYS:
            # Past this the line is not kept to be read: it is decided unsure (and reading it
            # again at every poll would cost every session on the bastion).
            self.doubt = self.doubt or f"a line of more than {MAX_KEYS // 1024} KiB of keys"
            data = data[:max(0, MAX_KEYS - len(self.keys))]
        self.keys += data
        self._key_at = self._clock()
        if self._at_prompt and not self._on_a_blank_row() and self._unanswered_key_at is None:
            self._unanswered_key_at = self._key_at

    def _echo_took(self, seconds: float) -> None:
        """A key typed at a prompt was answered (its echo, or a redraw) after `seconds`: a late
        echo raises the estimate at once, an early one lowers it a fifth of the way."""
        seconds = min(seconds, ECHO_DELAY_CAP)
        self.echo_delay = seconds if seconds > self.echo_delay else 0.8 * self.echo_delay + 0.2 * seconds

    def echoed(self, quiet: float = 0.02) -> bool:
        """Has the screen caught up with the keys? Plain typing: the screen shows it. Edits
        (arrows, completion, history): output came after the last key and then paused."""
        if not self.keys:
            return True
        if not PLAIN_KEYS.fullmatch(self.keys):
            return self._output_at > self._key_at and self._clock() - self._output_at >= quiet
        typed, shown = replay_keys(self.keys).rsplit("\n", 1)[-1], self._screen_text()
        return shown is not None and (self._shows(shown, typed) or self._settled_ahead(shown, typed))

    @staticmethod
    def _shows(shown: str, typed: str) -> bool:
        """Does the screen's line show plain typing (after text typed ahead of the prompt)?"""
        return shown == typed or (bool(typed) and shown.endswith(typed))

    def _settled_ahead(self, shown: str, typed: str) -> bool:
        """Keys typed ahead of a shell that had not prompted: has it prompted since? Without line
        editing the terminal echoes the keys as they come, among what the previous command
        prints, or not at all (they came while a leaving line editor had echo off), and the
        prompt comes last. The screen then cannot say what the line holds (a key binding the
        bastion never saw reads the same): the wait ends, and the line is unsure. With line
        editing the editor draws the keys right after the prompt, in a write of its own: the
        prompt counts as the last word once the shell has been quiet for SETTLE_QUIET."""
        if not typed or not self.typed_ahead or self._output_at <= self._key_at:
            return False
        if self._clock() - self._output_at < SETTLE_QUIET:
            return False
        after = shown[shown.rindex(typed) + len(typed):] if typed in shown else shown
        return bool(PROMPT_END.search(after)) and self._at_input_end()

    def _screen_text(self) -> str | None:
        """The text from the end of the prompt to the end of the input, or None without a prompt."""
        if self._prompt is None:
            return None
        self._sync()
        row, column, prompt = self._prompt
        display = self.screen.display
        cursor = self.screen.cursor.y
        search = SEARCH.match(display[cursor].rstrip())
        if search:
            return search.group(1).rstrip()
        # The prompt row may have scrolled up while a long line wrapped: look for it.
        start = next((r for r in range(min(row, cursor), -1, -1) if display[r][:column] == prompt), None)
        if start is None:
            return None
        last = max(cursor, start)
        # A line edited in the middle may continue on rows below the cursor (wrapped rows are full).
        while last + 1 < len(display) and display[last][-1:] != " " and display[last + 1].strip():
            last += 1
        pieces = [display[start][column:]] + [display[r] for r in range(start + 1, last + 1)]
        return "".join(pieces).rstrip()

    def submitted(self) -> SubmittedLine:  # noqa: PLR0911 - one return per way of reading it
        """The line Enter would submit now, from where its first key was typed."""
        keys = self.keys
        plain = bool(PLAIN_KEYS.fullmatch(keys))
        if self.doubt:
            return SubmittedLine(replay_keys(keys), unsure=True, why=self.doubt)
        if not plain and b"\n" in keys:
            return SubmittedLine(replay_keys(keys), unsure=True,
                                 why="a pasted multi-line text was edited (the screen wraps it its own way)")
        if self._prompt is None:
            return SubmittedLine(replay_keys(keys), unsure=not plain, why="no prompt seen")
        if not plain and self.alternate:
            return SubmittedLine(replay_keys(keys), unsure=True, why="a full-screen program")
        text = self._screen_text()
        if text is None:
            return SubmittedLine(replay_keys(keys), unsure=True, why="the prompt is no longer on screen")
        if plain:
            # Plain typing is exactly what a line editor receives: decide on the keys. A longer
            # screen line ending with them only means they were typed ahead of the prompt.
            typed = replay_keys(keys)
            if "\n" in typed:
                return SubmittedLine(typed)  # a pasted multi-line text: the screen wraps it its own way
            if self._shows(text, typed):
                return SubmittedLine(typed)
            return SubmittedLine(typed, unsure=True, why="the screen and the keystrokes disagree")
        if MOVES_ONLY.fullmatch(keys):
            # Typing and cursor moves only: the line holds exactly the typed characters, in
            # some order. Anything else on screen was drawn by something other than the keys.
            typed = "".join(chr(b) for b in MOVES.sub(b"", keys))
            if sorted(text.replace(" ", "")) != sorted(typed.replace(" ", "")) and not text.endswith(typed):
                return SubmittedLine(text, unsure=True, why="the screen and the keystrokes disagree")
        return SubmittedLine(text)

    def cursor_row(self) -> str:
        """The row the cursor is on, as text."""
        self._sync()
        return self.screen.display[self.screen.cursor.y].rstrip()

    def before_cursor(self) -> str:
        """What the cursor's row shows left of the cursor (a prompt, and the line typed so far)."""
        self._sync()
        return self.screen.display[self.screen.cursor.y][:self.screen.cursor.x]

    def snapshot(self) -> str:
        """The screen as text (trailing blanks trimmed): what the user saw at this moment."""
        self._sync()
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    @property
    def last_output(self) -> float:
        return self._output_at

    @property
    def typed_ahead(self) -> bool:
        """Whether this line's first key came before the shell prompted for it: with nothing
        before the cursor on its row, or before any output answered the previous Enter."""
        return self._on_a_blank_row() or (self._prompt is not None and not self._at_prompt)

    def _on_a_blank_row(self) -> bool:
        """This line's first key came with nothing before the cursor on its row."""
        return self._prompt is not None and not self._prompt[2].strip()

    def _at_input_end(self) -> bool:
        """Nothing stands right of the cursor on its row or below it."""
        self._sync()
        display, y, x = self.screen.display, self.screen.cursor.y, self.screen.cursor.x
        return not display[y][x:].strip() and not any(row.strip() for row in display[y + 1:])

    @property
    def prompt(self) -> str:
        """What stood before the cursor when this line's first key was typed."""
        return self._prompt[2] if self._prompt else ""

    def prefilled(self) -> str:  # noqa: PLR0911 - one return per way of reading it
        """Text that stood in the line before its first key: what a line editor was handed
        (zsh's print -z, a pasted text, a rebound key) after the usual prompt."""
        self._sync()
        last = self.last_prompt
        if self._prompt is not None:
            if not self._at_prompt:
                return ""  # typed ahead of the previous line's echo: the row holds that line
            before = self._prompt[2]
            if last.strip() and before.startswith(last) and before[len(last):].strip():
                return before[len(last):]
            return ""
        # Enter with no key typed: what is left of the cursor is a prompt, or a line to run.
        if self._output_at <= self._entered_at:
            return ""
        y, x = self.screen.cursor.y, self.screen.cursor.x
        before = self.screen.display[y][:x]
        if last.strip() and before.startswith(last):
            return before[len(last):] if before[len(last):].strip() else ""
        if not before.strip() or PROMPT_END.search(before):
            return ""  # a prompt of its own (the first, or one that changed), nothing after it
        return before

    def echoes_keys(self) -> bool:
        """Whether the keys typed show on screen after the prompt (a password prompt's do not)."""
        typed = replay_keys(self.keys).strip()
        shown = self._screen_text()
        return bool(typed) and shown is not None and typed in shown

    def line_cleared(self, line: str, since: float, quiet: float = 0.05) -> bool:
        """After a discard sent at `since`: has the shell redrawn a prompt with an empty line?"""
        if self._output_at <= since or self._clock() - self._output_at < quiet:
            return False
        self._sync()
        y, x = self.screen.cursor.y, self.screen.cursor.x
        row = self.screen.display[y]
        if row[x:].strip():
            return False
        tail = " ".join(line.split())[-40:]
        return not tail or not " ".join(row[:x].split()).endswith(tail)

    def quiet_after(self, since: float, quiet: float) -> bool:
        """Output came after `since`, then nothing for `quiet` seconds."""
        return self._output_at > since and self._clock() - self._output_at >= quiet

    def entered(self) -> None:
        """Enter went through: the next key starts a new line."""
        if self._prompt is not None and self._at_prompt:
            self.last_prompt = self._prompt[2]
        self.keys = b""
        self.doubt = ""
        self._prompt = None
        self._unanswered_key_at = None  # what answers now is the line's output, not an echo
        self._entered_at = self._clock()
