"""What a key does to the line being edited at a shell prompt. Pure.

The bastion cannot read the shell's key bindings, so it trusts only a small set of keys whose
effect under the default bindings it knows: printable text and editing keys pass; Enter, Ctrl-J,
Ctrl-M and Ctrl-O submit; a key that opens an editor whose text then runs (Ctrl-X Ctrl-E, vi's
`v`) submits something the bastion cannot see; every other key *may* submit, so the line is
screened before it is forwarded. Input is split into keys first: an escape sequence is one key.
"""

from __future__ import annotations

import re
from enum import Enum


class Key(Enum):
    TEXT = "text"  # inserts itself
    EDIT = "edit"  # moves, deletes, recalls: changes the line, never runs it
    SUBMIT = "submit"  # runs the line
    EDITOR = "editor"  # opens an editor; what is saved there runs
    INTERRUPT = "interrupt"  # Ctrl-C: the shell drops the line
    OTHER = "other"  # unknown effect: may run the line


# One key: an escape sequence (CSI, SS3, Meta-key), a UTF-8 character, or one byte.
KEY = re.compile(
    rb"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI: arrows, Home, Delete, F-keys, paste markers
    rb"|\x1bO[\x20-\x7e]"  # SS3 arrows
    rb"|\x1b[\x00-\x7f]?"  # Meta-key (or a lone ESC)
    rb"|\x18[\x00-\x7f]?"  # Ctrl-X prefix and its key
    rb"|[\xc2-\xf4][\x80-\xbf]{1,3}"  # a UTF-8 character
    rb"|[\x00-\xff]",
    re.S,
)
TEXT_RUN = re.compile(rb"[\x20-\x7e]{2,}")  # typed text, taken as one key (outside vi's command mode)
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
INTERRUPT = b"\x03"

# Default emacs-mode bindings whose effect is only to edit or move (readline and zsh's ZLE).
_EMACS_EDIT = frozenset(
    [bytes([c]) for c in (0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0B, 0x0C, 0x0E, 0x10, 0x12,
                          0x13, 0x14, 0x15, 0x17, 0x19, 0x1A, 0x1C, 0x1F, 0x7F)]
    + [b"\x1b" + bytes([c]) for c in b"bfdBFD.<>_uUlLcCtTy\x7f\x08"]
)
_SUBMIT = frozenset({b"\r", b"\n", b"\x0f"})
_EDITOR = frozenset({b"\x18\x05", b"\x18\x0e"})  # Ctrl-X Ctrl-E (bash), Ctrl-X Ctrl-N-ish variants
_CSI_EDIT = re.compile(rb"\x1b(?:\[(?:(?:1;[2-8])?[ABCDFH]|[1-8]~|200~|201~|[IO])|O[ABCDFH])")
# vi command mode: motions, edits, history; `v` (edit-and-execute) and `#` (comment, submit) are not here.
_VI_COMMAND_EDIT = frozenset(b"hjklwbeWBE0$^xXrRpPuUdDyYcCsSiIaA~;,fFtTnN/?+-G|%.123456789 \x7f\x08")
_VI_INSERT = frozenset(b"iIaAsScCRo")


class KeyReader:
    """Classifies keys one by one, following vi's insert and command modes when asked to."""

    def __init__(self, *, vi: bool = False) -> None:
        self.vi = vi
        self.command_mode = False
        self._pending_arg = False  # vi's f, F, t, T, r take the next key as their argument
        self._prefix = b""  # a lone ESC or Ctrl-X: the next key completes it

    def classify(self, key: bytes) -> Key:
        if self._prefix:
            key, self._prefix = self._prefix + key, b""
        elif key in (b"\x18", b"\x1b") and not (key == b"\x1b" and self.vi):
            self._prefix = key  # typed apart, the two keys still act as one
            return Key.OTHER
        return self._classify(key)

    def _classify(self, key: bytes) -> Key:  # noqa: PLR0911 - one return per kind of key
        if key == INTERRUPT:
            self.command_mode = False
            return Key.INTERRUPT
        if key in _SUBMIT:
            self.command_mode = False
            return Key.SUBMIT
        if key in _EDITOR:
            return Key.EDITOR
        if self.vi and self.command_mode:
            return self._vi_command(key)
        if key == b"\x1b" and self.vi:
            self.command_mode = True
            return Key.EDIT
        if key.startswith(PASTE_START) or _printable(key):
            return Key.TEXT
        if key in _EMACS_EDIT or _CSI_EDIT.fullmatch(key):
            return Key.EDIT
        return Key.OTHER

    def _vi_command(self, key: bytes) -> Key:
        if self._pending_arg:
            self._pending_arg = False
            return Key.EDIT
        if key == b"v":
            return Key.EDITOR
        if len(key) == 1 and key[0] in _VI_COMMAND_EDIT:
            if key[0] in _VI_INSERT:
                self.command_mode = False
            if key in (b"f", b"F", b"t", b"T", b"r"):
                self._pending_arg = True
            return Key.EDIT
        if key == b"\x1b" or _CSI_EDIT.fullmatch(key):
            return Key.EDIT
        return Key.OTHER


def _printable(key: bytes) -> bool:
    if len(key) == 1:
        return 0x20 <= key[0] <= 0x7E
    return key[0] >= 0xC2 or bool(TEXT_RUN.fullmatch(key))  # a UTF-8 character, or typed text


def split_keys(data: bytes, *, vi: bool = False) -> list[bytes]:
    """Input as keys; a bracketed paste stays one piece of text. In vi mode ESC is a key of
    its own (it leaves insert mode), never a Meta prefix."""
    keys: list[bytes] = []
    i = 0
    while i < len(data):
        if data.startswith(PASTE_START, i):
            end = data.find(PASTE_END, i)
            stop = len(data) if end < 0 else end + len(PASTE_END)
            keys.append(data[i:stop])
            i = stop
            continue
        match = None if vi else TEXT_RUN.match(data, i)
        match = match or KEY.match(data, i)
        assert match is not None  # the last alternative takes any byte
        key = match.group()
        if vi and len(key) == 2 and key[0] == 0x1B:
            key = b"\x1b"
        keys.append(key)
        i += len(key)
    return keys
