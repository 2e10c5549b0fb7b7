"""Session text made safe to show a person. Pure.

Anything a session produced (a command, a screen, a marker) may carry sequences meant for a
terminal: a title change (OSC), an 8-bit CSI, a right-to-left override that makes `rm -rf /`
read as something else. One definition of what is unsafe serves everyone who shows such text:
the player, the approvals CLI, the approval pages and the recording's markers.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; the invisible format characters (soft hyphen, zero-width ones,
# bidirectional marks, overrides and isolates, line and paragraph separators, BOM); lone
# surrogates, which stand for bytes that were not UTF-8 and would be written out as those
# bytes (\udc9b is an 8-bit CSI).
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8: show the byte
        code -= 0xDC00
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` with every unsafe character written as an escape (`\\x1b`, `\\x9b`, `\\u202e`):
    the reader sees that it was there, and their terminal is not told to do anything."""
    return UNSAFE.sub(_escape, text)


def printable_cell(data: str) -> str:
    """One cell of an emulated screen, which must stay one cell wide: a space if its character
    is unsafe; unsafe zero-width characters the emulator attached to it are dropped."""
    if not data or UNSAFE.match(data):
        return " "
    return UNSAFE.sub("", data) if len(data) > 1 else data
