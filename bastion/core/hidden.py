"""Hidden input: what the user types where the terminal does not show it (sudo, passwd,
`read -s`, a key's passphrase) is never recorded. Pure; the caller passes the clock.

The bastion cannot see the target's terminal modes, so it reads two signs from the streams;
either one hides a line:

- **a prompt**: after `Password:`, `[sudo] password for …`, `Enter passphrase …` and friends,
  the keys up to Enter (or Ctrl-C, Ctrl-D) are hidden;
- **no echo** (sessions with a terminal only): typed characters come back as output, from
  the shell or from the terminal driver. Each key is recorded once its echo came, usually
  milliseconds later. A line whose characters mostly did not come back by the line break
  that echoes its Enter, or `ECHO_GRACE` seconds after it, was typed into something that
  does not echo: its keys are hidden.

Full-screen programs (the alternate screen: vim, less, top) answer keys with redraws, not
echo: their keys are recorded as typed. A hidden line becomes a count for the caller's
marker ("hidden input, N keystrokes"); its Enter is still recorded.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import deque
from collections.abc import Callable

from bastion.core.terminal import ALT_SCREEN, ESC_SEQUENCE, ESCAPES

PROMPT = re.compile(
    rb"(?i)(?:\[sudo\] password for [^\r\n:]*|(?:^|[\r\n ])password(?: for [^\r\n:]*)?|passphrase[^\r\n:]*"
    rb"|enter pin[^\r\n:]*|verification code|one-time (?:password|code)[^\r\n:]*|otp|passcode)"
    rb": ?\Z"
)
PROMPT_ENDS = (b":", b": ")
ENDS_LINE = re.compile(rb"[\r\n\x03\x04]")
KEY_ESCAPE = re.compile(rb"\x1bO.|" + ESC_SEQUENCE, re.DOTALL)  # arrows, paste brackets, Alt+key: not echoed
ECHO_GRACE = 1.0  # seconds after Enter that a late echo (a slow link) still counts
MAX_PENDING = 4096  # keys without an Enter: decided as a line of their own past this
MAX_ECHO = 16384  # output kept to look for a line's echo
NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]+")


def echoed(typed: bytes | bytearray, echo: bytes | bytearray) -> int:
    """How many of the `typed` characters came back in `echo`, in order.

    Two readings, the better one counts. Keys echoed one for one, some replaced (a masked
    secret echoes as `*`): a key that does not match in the next few bytes is taken as
    replaced by the byte where it should be. Keys with output between them (a shell
    redrawing its line, a right prompt): each is looked for further on, and one that never
    came back is skipped without losing the ones after it.
    """
    return max(_in_order(typed, echo, 8, replaced=True), _in_order(typed, echo, 64, replaced=False))


def _in_order(typed: bytes | bytearray, echo: bytes | bytearray, reach: int, *, replaced: bool) -> int:
    count, at = 0, 0
    for byte in typed:
        found = echo.find(byte, at, at + reach)
        if found >= 0:
            count, at = count + 1, found + 1
        elif replaced:
            at += 1
    return count


class HiddenInput:
    def __init__(self, on_hidden: Callable[[int], None], *, terminal: bool = True) -> None:
        self._on_hidden = on_hidden
        self._terminal = terminal  # judge by echo: only a terminal echoes
        self._tail = b""
        self._prompted = False  # a password prompt is waiting for its line
        self._prompted_keys = 0
        self._alternate = False
        self._pending = bytearray()  # keys of the current line, not yet released
        self._typed = bytearray()  # its printable keys, which should come back as echo
        self._echo = bytearray()  # visible output since its first key (its echo, if any)
        self._ended: float | None = None  # when the pending line's Enter came (it waits for echo)
        self._at_enter = 0  # how much of `_echo` had come when the Enter was typed
        self._key_times: list[float] = []  # when each of `_typed` was typed
        self._credited = 0  # keys of the line whose echo came (and gave a latency sample)
        self._latencies: deque[float] = deque(maxlen=32)  # how long echo took, recent keys
        self._later = bytearray()  # keys typed after that Enter, behind the decision

    @property
    def deadline(self) -> float | None:
        """When `due` must be called: a line ended and is still waiting for its echo."""
        return None if self._ended is None else self._ended + ECHO_GRACE

    def output(self, data: bytes, now: float) -> bytes:
        """Read the target's output; returns keys that may be recorded now (their echo came)."""
        if self._terminal and b"\x1b[?" in data:
            for match in ALT_SCREEN.finditer(data):
                self._alternate = match.group(1) == b"h"
        released = self._echoes(data, now) if self._pending else b""
        self._tail = (self._tail + data[-200:])[-200:]  # no copy of a whole chunk
        # Every prompt ends in ":" or ": "; the regex runs only on output that could be one.
        if self._tail.endswith(PROMPT_ENDS) and PROMPT.search(self._tail):
            self._prompted = True
            if self._pending and self._ended is None:
                released += self._decide(now)  # keys before the prompt are not its answer
        elif self._prompted and not self._prompted_keys:
            self._prompted = False  # the prompt went by before anything was typed at it
        return released

    def _echoes(self, data: bytes, now: float) -> bytes:
        """Gather the echo of the pending keys; release or decide when it can."""
        # Keys are echoed before the line break that echoes their Enter; what comes after it
        # is the program's answer, which may well hold the same letters.
        line_break = data.find(b"\n") if self._ended is not None else -1
        room = MAX_ECHO - len(self._echo)
        if room > 0:  # bulk output while keys wait costs a slice, not a pass over every chunk
            part = data[: min(room * 4, line_break if line_break >= 0 else len(data))]
            self._echo += (ESCAPES.sub(b"", part) if b"\x1b" in part else part)[:room]
        if self._ended is None:
            self._sample_latency(now)
        if self._came_back() == len(self._typed):
            return self._decide(now) if self._ended is not None else self._release()
        return self._decide(now) if line_break >= 0 else b""

    def _sample_latency(self, now: float) -> None:
        """Keys whose echo just came: how long it took (the link's echo latency)."""
        came = echoed(self._typed, self._echo)
        for index in range(self._credited, min(came, len(self._key_times))):
            self._latencies.append(now - self._key_times[index])
        self._credited = max(self._credited, came)

    def _in_flight(self) -> int:
        """Of the keys typed before the Enter, the first whose echo could still be on its way
        when the Enter came (0 while no echo latency is known: any)."""
        if not self._latencies or self._ended is None:
            return 0
        window = 4 * min(max(self._latencies), ECHO_GRACE) + 0.1
        return bisect_left(self._key_times, self._ended - window)

    def _came_back(self) -> int:
        """How many of the pending keys came back as echo. Echo comes as each key arrives
        (with output between keys: a shell redrawing its line, a right prompt), or, for keys
        whose echo had not come by the Enter (a paste, a slow link), right after it and in a
        row: output after the Enter that only holds the letters scattered (`read -s b; echo
        no-prompt-done`) is the program's answer, not their echo."""
        typed, echo = self._typed, self._echo
        if self._ended is None or self._at_enter >= len(echo):
            return echoed(typed, echo)
        before = echoed(typed, echo[: self._at_enter])
        # Keys typed well before the Enter (by the echo latency seen so far) had their chance:
        # what comes after the Enter cannot be their echo.
        late = len(typed) - self._in_flight()
        return max(before, min(_in_order(typed, echo, 2, replaced=True), before + late))

    def input(self, data: bytes, now: float) -> bytes:
        """Take the user's keys; returns what may be recorded now."""
        if self._ended is not None:
            self._later += data
            return b""
        if self._prompted:
            return self._at_prompt(data, now)
        if not self._terminal or self._alternate:
            return self._release() + data
        end = ENDS_LINE.search(data)
        line = data if end is None else data[: end.start()]
        self._pending += line
        printable = NOT_PRINTABLE.sub(b"", KEY_ESCAPE.sub(b"", line) if b"\x1b" in line else line)
        self._typed += printable
        self._key_times += [now] * len(printable)
        if end is not None:
            self._ended = now
            self._at_enter = len(self._echo)
            self._later += data[end.start():]
        if echoed(self._typed, self._echo) == len(self._typed):
            return self._decide(now)  # nothing (more) to wait for: arrows, Ctrl keys, an empty line
        if end is None and len(self._pending) > MAX_PENDING:
            return self._decide(now)
        return b""

    def due(self, now: float) -> bytes:
        """A line still waiting for its echo at its `deadline` is decided."""
        deadline = self.deadline
        return self._decide(now) if deadline is not None and now >= deadline else b""

    def flush(self, now: float) -> bytes:
        """The session ended: decide whatever is pending."""
        released = b""
        while self._pending or self._later or self._ended is not None:
            released += self._decide(now)
        return released

    def _at_prompt(self, data: bytes, now: float) -> bytes:
        end = ENDS_LINE.search(data)
        if end is None:
            self._prompted_keys += len(data)
            return b""
        self._prompted_keys += end.start()
        self._on_hidden(self._prompted_keys)
        self._prompted, self._prompted_keys, self._tail = False, 0, b""
        return data[end.start(): end.start() + 1] + self.input(data[end.start() + 1:], now)

    def _release(self) -> bytes:
        released = bytes(self._pending)
        self._pending.clear()
        self._typed.clear()
        self._key_times.clear()
        self._credited = 0
        self._echo.clear()
        return released

    def _decide(self, now: float) -> bytes:
        typed, came_back, keys = len(self._typed), self._came_back(), len(self._pending)
        released = self._release()
        if came_back * 2 < typed:  # most of it never came back: typed where it is not shown
            self._on_hidden(keys)
            released = b""
        later, self._later, self._ended = bytes(self._later), bytearray(), None
        # The Enter itself is recorded; what came after it is a new line.
        return released + later[:1] + (self.input(later[1:], now) if len(later) > 1 else b"")
