"""A shell's input without a terminal, cut into the commands it will run. Pure.

`echo 'cmd' | ssh db-1`, `ssh -T db-1`, `ssh db-1 bash -s < script`: the shell reads lines and
runs each command once it is complete. `ShellInput` holds the bytes until a command is complete
(a continued line, an open quote or here-document, a loop without its `done` wait for more),
then hands back those bytes with the text to screen. Nothing reaches the shell unscreened.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.core.shellscope import Analysis, Scope, analyze

MAX_PENDING = 1024 * 1024  # longest command held while waiting for its end (a here-document)
MAX_CONTINUED = 64 * 1024  # ... when it is not a here-document (each new line re-reads it all)


@dataclass
class InputCommand:
    data: bytes  # exactly what the client sent for it
    text: str
    analysis: Analysis
    final: bool = False  # the input ended with it (incomplete commands run as far as they go)


class TooLong(Exception):
    pass


class ShellInput:
    def __init__(self, scope: Scope | None = None) -> None:
        self.scope = scope or Scope(history_expansion=False)
        self._held = bytearray()  # bytes of the command being read
        self._scanned = 0  # how far `_held` was already searched for a line end
        self._until = b""  # an open here-document's end: lines before it cannot complete anything
        self._line_start = 0

    def feed(self, data: bytes) -> list[InputCommand]:
        """The commands `data` completes, in order; the rest is held."""
        self._held += data
        if len(self._held) > MAX_PENDING:
            raise TooLong(f"a command longer than {MAX_PENDING // 1024} KiB")
        out: list[InputCommand] = []
        while True:
            end = self._held.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._held)
                return out
            line = bytes(self._held[self._line_start:end]).lstrip(b"\t")
            self._scanned = self._line_start = end + 1
            if self._until and line != self._until:
                continue
            text = _text(bytes(self._held[:end + 1]))
            analysis = analyze(text, self.scope)
            if analysis.incomplete:
                self._until = analysis.until.encode("utf-8", "surrogateescape")
                if not self._until and end > MAX_CONTINUED:
                    raise TooLong(f"a continued command longer than {MAX_CONTINUED // 1024} KiB")
                continue
            self._until = b""
            out.append(InputCommand(bytes(self._held[:end + 1]), text, analysis))
            del self._held[:end + 1]
            self._scanned = self._line_start = 0

    def finish(self) -> InputCommand | None:
        """The input ended: what is held runs now, complete or not."""
        if not self._held:
            return None
        text = _text(bytes(self._held))
        command = InputCommand(bytes(self._held), text, analyze(text, self.scope), final=True)
        self._held.clear()
        self._scanned = self._line_start = 0
        self._until = b""
        return command

    def ran(self, command: InputCommand) -> None:
        """`command` was forwarded: what it defined holds for the next ones."""
        self.scope = command.analysis.scope

    @property
    def holding(self) -> bool:
        return bool(self._held)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
