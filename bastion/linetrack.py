"""What the user is submitting at a shell prompt, read from a terminal emulator. Pure.

The output (already masked) feeds a pyte screen; the keystrokes since the last Enter are kept
too. At Enter the submitted line is the text between where the prompt ended (the cursor when
the first key of the line was typed) and the end of the input on screen, so line editing,
history recall and completion are all accounted for. When only plain typing happened, the
keystrokes must agree with the screen; if they do not (or the prompt is gone), the line is
`unsure`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pyte

ALT_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
PLAIN_KEYS = re.compile(rb"[\x20-\x7e\x7f\x08\x15\x17]*")


@dataclass
class SubmittedLine:
    text: str
    unsure: bool = False
    why: str = ""


MAX_SIDE = 1000  # a client may claim any window size; the emulator's cost grows with it
UNFED_LIMIT = 256 * 1024  # output held for the emulator before only its end is kept
UNFED_KEEP = 64 * 1024


def _clamp(width: int, height: int) -> tuple[int, int]:
    return min(max(width, 20), MAX_SIDE), min(max(height, 5), MAX_SIDE)


def replay_keys(keys: bytes) -> str:
    """The line plain typing produces: printable keys, backspace, Ctrl-U, Ctrl-W."""
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
        elif 0x20 <= byte <= 0x7E:
            line.append(chr(byte))
    return "".join(line)


class LineTracker:
    def __init__(self, width: int, height: int) -> None:
        width, height = _clamp(width, height)
        self.screen = pyte.Screen(width, height)
        self.stream = pyte.ByteStream(self.screen)
        self.alternate = False
        self.keys = b""
        self._prompt: tuple[int, int, str] | None = None  # row, column, text before the cursor
        self._key_at = 0.0
        self._output_at = 0.0
        # Output waits here until the screen is looked at (a key, an Enter): bulk output that
        # nobody types into costs an append, not an emulator pass over every byte.
        self._unfed: list[bytes] = []
        self._unfed_bytes = 0
        self._overflowed = False

    def output(self, data: bytes) -> None:
        for match in ALT_SCREEN.finditer(data):
            self.alternate = match.group(1) == b"h"
        self._unfed.append(data)
        self._unfed_bytes += len(data)
        if self._unfed_bytes > UNFED_LIMIT:
            # Only the end can still matter for a prompt: keep that much, start from a blank screen.
            tail = b"".join(self._unfed)[-UNFED_KEEP:]
            self._unfed, self._unfed_bytes, self._overflowed = [tail], len(tail), True
        self._output_at = time.monotonic()

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

    def typed(self, data: bytes) -> None:
        self._sync()
        if not self.keys:
            y, x = self.screen.cursor.y, self.screen.cursor.x
            self._prompt = (y, x, self.screen.display[y][:x])
        self.keys += data
        self._key_at = time.monotonic()

    def echoed(self, quiet: float = 0.02) -> bool:
        """Has the screen caught up with the keys? Plain typing: the screen shows it. Edits
        (arrows, completion, history): output came after the last key and then paused."""
        if not self.keys:
            return True
        if not PLAIN_KEYS.fullmatch(self.keys):
            return self._output_at > self._key_at and time.monotonic() - self._output_at >= quiet
        typed, shown = replay_keys(self.keys), self._screen_text()
        return shown is not None and (shown == typed or shown.endswith(typed))

    def _screen_text(self) -> str | None:
        """The text from the end of the prompt to the end of the input, or None without a prompt."""
        if self._prompt is None:
            return None
        self._sync()
        row, column, prompt = self._prompt
        display = self.screen.display
        cursor = self.screen.cursor.y
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

    def submitted(self) -> SubmittedLine:
        """The line Enter would submit now."""
        keys = self.keys
        plain = bool(PLAIN_KEYS.fullmatch(keys))
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
            if text == typed or (typed and text.endswith(typed)):
                return SubmittedLine(typed)
            return SubmittedLine(typed, unsure=True, why="the screen and the keystrokes disagree")
        return SubmittedLine(text)

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
        """Whether this line's first key came with nothing before the cursor on its row: keys
        typed ahead of a shell that has not prompted yet."""
        return self._prompt is not None and not self._prompt[2].strip()

    @property
    def prompt(self) -> str:
        """What stood before the cursor when this line's first key was typed."""
        return self._prompt[2] if self._prompt else ""

    def entered(self) -> None:
        """Enter went through: the next key starts a new line."""
        self.keys = b""
        self._prompt = None
