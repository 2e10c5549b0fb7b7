"""How a terminal's output is built, for the cores that read it: escape sequences, zero-width
characters, the alternate screen."""

from __future__ import annotations

import re
from collections.abc import Callable

# One literal first byte lets `re` skip straight from ESC to ESC. As a terminal reads them: the
# C0 controls inside a CSI or an ESC sequence are acted on and the sequence goes on (only the
# moves among them show on screen); CAN and SUB abort any sequence, ESC starts a new one; a
# byte outside ASCII ends a CSI or ESC sequence. A string (OSC, DCS, SOS, PM, APC) ends at its
# terminator, CAN, SUB or ESC.
C0_INSIDE = rb"\x00-\x17\x19\x1c-\x1f\x7f"  # C0 controls and DEL inside a sequence: not CAN, SUB, ESC
_ENDS = rb"[\x18\x1a]|(?=[\x1b\x80-\xff])"  # an aborted or interrupted sequence
ESC_SEQUENCE = (
    rb"\x1b(?:\[[" + C0_INSIDE + rb"0-?]*[" + C0_INSIDE + rb" -/]*(?:[@-~]|" + _ENDS + rb")"  # CSI
    rb"|\][^\x07\x18\x1a\x1b]*(?:\x07|\x1b\\|[\x18\x1a]|(?=\x1b))"  # OSC
    rb"|[PX^_][^\x18\x1a\x1b]*(?:\x1b\\|[\x18\x1a]|(?=\x1b))"  # DCS, SOS, PM, APC
    rb"|[" + C0_INSIDE + rb" -/]*(?:[0-~]|" + _ENDS + rb"))"  # other ESC sequences
)
# Characters a terminal does not draw: C0 controls other than the moves (BS, HT, LF, VT, FF, CR)
# and ESC, DEL, C1 controls, the soft hyphen, combining marks (drawn onto the character before:
# that character still reads as itself), and the invisible format characters of Unicode
# (zero-width spaces and joiners, direction marks and isolates, word joiner, variation
# selectors, BOM, tags). Inside a secret they hide it from a detector that reads bytes, not the
# screen: detectors read the text without them.
UNDRAWN = (
    rb"[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f]"
    rb"|\xc2[\x80-\x9f\xad]|\xcc[\x80-\xbf]|\xcd[\x80-\xaf]|\xd8\x9c|\xe1\xa0\x8e"
    rb"|\xe2\x80[\x8b-\x8f\xa8-\xae]|\xe2\x81[\xa0-\xaf]|\xef\xb8[\x80-\x8f]|\xef\xbb\xbf"
    rb"|\xf3\xa0[\x80\x81][\x80-\xbf]"
)
ZERO_WIDTH = UNDRAWN  # the older name: zero-width characters are among them
ESC_SEQUENCES = re.compile(ESC_SEQUENCE)
# An escape sequence the chunk's end may have cut: a CSI without its final byte (`ESC [` alone
# also reads as a complete two-byte escape), an OSC or DCS without its terminator, a lone ESC or
# ESC with intermediates.
CUT_ESCAPE = re.compile(rb"\x1b(?:\[[" + C0_INSIDE + rb"0-?]*[" + C0_INSIDE + rb" -/]*"
                        rb"|\][^\x07\x18\x1a\x1b]*\x1b?|[PX^_][^\x18\x1a\x1b]*\x1b?"
                        rb"|[" + C0_INSIDE + rb" -/]*)\Z")
ZERO_WIDTHS = UNDRAWNS = re.compile(UNDRAWN)
ESCAPES = re.compile(ESC_SEQUENCE + b"|" + UNDRAWN)

# screen_flags(data) bits: what a chunk holds besides printable text and line ends (CR LF, LF).
FLAG_UNDRAWN = 1  # an ASCII control character no terminal draws
FLAG_ESCAPE = 2
FLAG_NON_ASCII = 4  # may hold an undrawn character (checked with UNDRAWNS) or a wide one
FLAG_MOVES = 8  # backspace, tab, vertical tab, form feed, a CR not ending a line
_UNDRAWN_ASCII = bytes([*range(0x00, 0x08), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_MOVES_ASCII = re.compile(rb"[\x08\x09\x0b\x0c]|\r(?!\n)")


def _screen_flags(data: bytes) -> int:
    """The same answer as the C `screen_flags` (bastion/core/_digits.c), slower."""
    flags = 0
    if len(data.translate(None, _UNDRAWN_ASCII)) != len(data):
        flags |= FLAG_UNDRAWN
    if b"\x1b" in data:
        flags |= FLAG_ESCAPE
    if not data.isascii():
        flags |= FLAG_NON_ASCII
    if _MOVES_ASCII.search(data):
        flags |= FLAG_MOVES
    return flags


screen_flags: Callable[[bytes], int]
try:  # bastion/core/_digits.c, built at install when a C compiler is there
    from bastion.core._digits import screen_flags as _c_screen_flags
    screen_flags = _c_screen_flags
except ImportError:  # pragma: no cover - exercised where the extension is missing
    screen_flags = _screen_flags

# Full-screen programs (vim, less, top) switch to the alternate screen and back.
ALT_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
