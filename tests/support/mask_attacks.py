"""Hostile output that makes a key readable on a terminal (tmux, drawing what a real OpenSSH
client received through the bastion) while the masker lets it through: each a list of writes,
with a pause after each, printed on a pty. Known gaps, listed in docs/masking.md."""

from __future__ import annotations

KEY = "AKIA" + "Q7ZX3MPLW2RT8YKD"  # an AWS access key id's shape; made up
FIRST, SECOND = KEY[:10].encode(), KEY[10:].encode()
TAIL = b"\x1b[30G end"  # the first half never ends a write: a pause there masks a prefixed token
AT = b"id=\x1b[14G" + SECOND  # the second half at its column: row "id=          PLW2RT8YKD"

LEAKS = {
    # Bytes a terminal does not draw that the masker takes for characters.
    "invalid UTF-8 byte inside": [b"id=" + FIRST + b"\xff" + SECOND + b" end"],
    "overlong NUL inside": [b"id=" + FIRST + b"\xc0\x80" + SECOND + b" end"],
    "unassigned code point inside": [b"id=" + FIRST + "\u0378".encode() + SECOND + b" end"],
    "combining mark U+20D0 inside": [b"id=" + FIRST + "\u20d0".encode() + SECOND + b" end"],
    "combining mark U+0483 inside": [b"id=" + FIRST + "\u0483".encode() + SECOND + b" end"],
    "variation selector supplement inside": [b"id=" + FIRST + "\U000e0100".encode() + SECOND + b" end"],
    "format char U+0600 inside": [b"id=" + FIRST + "\u0600".encode() + SECOND + b" end"],
    # The view's cursor parts from the terminal's.
    "alternate screen 47 keeps the cursor": [AT, b"\x1b[?47h\r\x1b[?47l", b"id=" + FIRST + TAIL],
    "alternate screen 1047 keeps the cursor": [AT, b"\x1b[?1047h\r\x1b[?1047l", b"id=" + FIRST + TAIL],
    "DL before the row is known": [b"x\r\n" + AT + b"\x1b[A\r\x1b[M", b"id=" + FIRST + TAIL],
    "C1 NEL then CUU": [AT, b"\xc2\x85", b"\x1b[A\rid=" + FIRST + TAIL],
    "CAN aborts a CSI": [AT, b"\x1b[5\x18\rid=" + FIRST + TAIL],
    "CR inside a CSI": [AT, b"\x1b[\rm", b"id=" + FIRST + TAIL],
    "ESC inside a CSI": [AT, b"\x1b[1\x1b[0m\rid=" + FIRST + TAIL],
    "CUP with a colon is ignored by the terminal": [AT, b"\x1b[1:1H", b"\rid=" + FIRST + TAIL],
    "OSC aborted by SUB": [AT, b"\x1b]0;x\x1a\rid=" + FIRST + TAIL],
    "leading zeros in CHA": [b"id=\x1b[00000000014G" + SECOND, b"\rid=" + FIRST + TAIL],
    # Sequences that make the view forget its rows while the terminal keeps them; DECRC comes
    # back to where the cursor was.
    "DECLRMM on (no margins set)": [AT, b"\x1b[?69h\rid=" + FIRST + TAIL],
    "double-height line ESC # 3": [AT, b"\x1b#3", b"\rid=" + FIRST + TAIL],
    "DECSC, CUP home, DECRC": [AT, b"\x1b7\x1b[1;1H\x1b8", b"\rid=" + FIRST + TAIL],
    "DECSC, scrolling region set and reset, DECRC": [AT, b"\x1b7\x1b[5;10r\x1b[r\x1b8", b"\rid=" + FIRST + TAIL],
    # Widths the view and the terminal disagree on: a soft hyphen takes a column in the
    # terminal (none in the view); U+1FAE8 takes none in the terminal (two in the view).
    "soft hyphen moves the terminal's cursor": [b"id=" + "\u00ad".encode() + b"\x1b[9C" + SECOND,
                                                b"\rid=" + FIRST + TAIL],
    "U+1FAE8 moves the view's cursor": [b"id=" + "\U0001fae8".encode() + b"\x1b[10C" + SECOND,
                                        b"\rid=" + FIRST + TAIL],
}
