"""What screening stores of what users submit: masked, and bounded however long it was. Pure.

A decision reads the whole line. What outlives it (the audit event, the approval request, the
recording's markers) keeps the line's head, its full length and a SHA-256 of the whole, so a
4 MiB paste costs a few kilobytes in each place, and two long lines can still be told apart.
Masking uses the masker it is given: the config's detectors, even with the streams' masking
off (a stored secret would outlive the session).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from bastion.core.masker import TextMasker
from recorder.printable import printable

HEAD = 1024  # characters of a command that are stored
# The head is masked with this much of what follows it, so a secret the cut goes through is
# still seen whole (a private key's body is the longest the detectors know).
MARGIN = 4096


def command_hash(command: str) -> str:
    """SHA-256 of a command exactly as submitted (what an approval is bound to)."""
    return hashlib.sha256(command.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class StoredCommand:
    text: str  # masked; only the head when the command is longer than HEAD
    length: int  # characters in the whole command
    sha256: str | None = None  # of the whole command, when `text` is only its head

    def __str__(self) -> str:
        if self.sha256 is None:
            return self.text
        return f"{self.text}… [{self.length} characters, sha256 {self.sha256}]"

    def fields(self, name: str = "command") -> dict[str, Any]:
        """For an audit event: the text, and the whole's length and hash when it was cut."""
        if self.sha256 is None:
            return {name: self.text}
        return {name: self.text, f"{name}_length": self.length, f"{name}_sha256": self.sha256}


def stored_command(command: str, masker: TextMasker) -> StoredCommand:
    if len(command) <= HEAD:
        return StoredCommand(masker.mask(command), len(command))
    head = masker.mask(command[:HEAD + MARGIN])[:HEAD]
    return StoredCommand(head, len(command), command_hash(command))


def stored_keys(keys: bytes, count: int, masker: TextMasker) -> str:
    """Keystrokes that never reached the target, for a marker: masked, escaped (they are
    mostly control keys), bounded. `keys` is what was kept of them, `count` how many bytes
    came in all."""
    shown = printable(masker.mask(keys.decode("utf-8", "surrogateescape")))
    cut = "…" if len(shown) > HEAD or count > len(keys) else ""
    return f"{count} bytes: {shown[:HEAD]}{cut}"


def stored_screen(screen: str, width: int, masker: TextMasker) -> str:
    """A terminal screen's text, masked with each wrapped row joined to the next: a secret the
    terminal wrapped at its edge is still seen whole."""
    rows = screen.split("\n")
    # A row as wide as the screen went on in the next one.
    ends = ["" if len(row) >= width else "\n" for row in rows[:-1]] + [""]
    joined = "".join(row + end for row, end in zip(rows, ends, strict=True))
    masked = masker.mask(joined)
    if len(masked) != len(joined):  # masking changed the length: keep it, unwrapped
        return masked
    pieces, at = [], 0
    for row, end in zip(rows, ends, strict=True):
        pieces.append(masked[at:at + len(row)])
        at += len(row) + len(end)
    return "\n".join(pieces)
