"""How a terminal's output is built, for the cores that read it: escape sequences, zero-width
characters, the alternate screen."""

from __future__ import annotations

import re

# One literal first byte lets `re` skip straight from ESC to ESC.
ESC_SEQUENCE = (
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI (SGR colours, cursor moves)
    rb"|\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC, terminated
    rb"|[PX^_][^\x1b]*\x1b\\"  # DCS, SOS, PM, APC
    rb"|[ -/]*[0-~])"  # other ESC sequences
)
ZERO_WIDTH = rb"\xe2\x80[\x8b-\x8f]|\xe2\x81[\xa0-\xa4]|\xef\xbb\xbf"  # zero-width characters, BOM
ESC_SEQUENCES = re.compile(ESC_SEQUENCE)
ZERO_WIDTHS = re.compile(ZERO_WIDTH)
ESCAPES = re.compile(ESC_SEQUENCE + b"|" + ZERO_WIDTH)
# Full-screen programs (vim, less, top) switch to the alternate screen and back.
ALT_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
