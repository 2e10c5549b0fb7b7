"""The screen view: rows followed as a terminal draws them, secrets assembled there masked."""

from __future__ import annotations

import pyte

from bastion.core.masker import SecretMasker
from bastion.core.screenview import ScreenView
from tests.support.samples import AWS_ID, CARD

SECOND = AWS_ID[10:]
FIRST = AWS_ID[:10]


def pty_masker(width: int = 80, height: int = 24) -> SecretMasker:
    masker = SecretMasker()
    masker.on_screen(width, height)
    return masker


def drawn(*chunks: bytes, masker: SecretMasker | None = None, width: int = 80) -> tuple[list[str], bytes]:
    masker = masker or pty_masker(width)
    screen = pyte.Screen(width, 24)
    stream = pyte.ByteStream(screen)
    out = b""
    for chunk in chunks:
        out += masker.feed(chunk).data + masker.flush(pause=True).data
    out += masker.flush().data
    stream.feed(out)
    return screen.display, out


def test_the_second_half_first_then_the_first() -> None:
    display, _ = drawn(f"id=\x1b[14G{SECOND}".encode(), f"\rid={FIRST}\x1b[24G end\r\n".encode())
    assert display[0].startswith("id=AKIA" + "*" * 16 + " end")


def test_a_card_number_drawn_backwards_shows_no_digit_past_the_sixth() -> None:
    first, second = CARD[:8], CARD[8:]
    display, _ = drawn(f"id=\x1b[12G{second}".encode(), f"\rid={first}\r\n".encode())
    assert CARD[6:] not in display[0] and not any(d in display[0][9:19] for d in "0123456789")


def test_ordinary_redraws_are_left_alone() -> None:
    # A shell redrawing its line, a progress bar: cursor moves and no secret.
    chunks = [b"$ ls -la\x08\x08\x08   \x08\x08\x08-l\r\n", b"10%\r20%\r100%\r\n",
              b"\x1b[2J\x1b[H top - 12:00:00 up 1 day\x1b[2;1HTasks: 90 total\x1b[K\r\n"]
    display, out = drawn(*chunks)
    assert b"*" not in out
    assert "top - 12:00:00" in display[0] and "Tasks: 90 total" in display[1]


def test_masked_cells_stand_for_what_they_hid() -> None:
    # The first characters after the prefix were masked by a pause; the rest drawn at its
    # column before: still one secret.
    masker = pty_masker()
    display, _ = drawn(f"id=\x1b[14G{SECOND}\rid=AKIA{FIRST[4:5]}".encode(), f"{FIRST[5:]}\r\n".encode(),
                       masker=masker)
    assert SECOND not in display[0] and FIRST[5:] not in display[0]


def test_a_row_beyond_a_scrolling_region_with_origin_mode_is_marked_not_masked() -> None:
    """Origin mode confines the cursor to the region: the view cannot go back to a row above
    it to draw over the half drawn there. The result says so (the stage turns it into a
    `secret-drawn` marker and an audit event)."""
    masker = pty_masker()
    masker.feed(b"\x1b[2J\x1b[H\x1b[5;10r")
    masker.feed(f"\x1b[2;14H{SECOND}".encode())
    masker.flush(pause=True)
    result = masker.feed(f"\x1b[2;1Hid={FIRST}\x1b[?6h".encode())
    assert result.drawn and result.drawn[0].startswith("aws-access-key-id (row ")
    assert FIRST[4:].encode() not in result.data  # what this chunk drew is masked still


def test_an_absolute_move_before_the_screen_row_is_known_forgets_the_rows() -> None:
    view = ScreenView(80, 24, lambda text: [])
    view.draw(b"something drawn\r\n")
    view.draw(b"\x1b[5;1H")
    assert view.forgotten == 1 and view.top is not None


def test_an_escape_cut_by_a_pause_is_kept_back() -> None:
    masker = pty_masker()
    assert masker.feed(b"abc\x1b[2").data == b"abc"
    assert masker.flush(pause=True).data == b""  # a terminal waits for the rest too
    assert masker.feed(b"4Gx").data == b"\x1b[24Gx"
    assert masker.feed(b"\x1b[").data == b""
    assert masker.flush().data == b""  # the stream's end: never whole, it goes nowhere


def test_resizes_are_followed() -> None:
    masker = pty_masker(40)
    masker.resize(20, 10)
    # At width 20 the second half wraps exactly under the first: the view knows the row.
    display, _ = drawn(f"\x1b[14G{SECOND[:6]}".encode(), masker=masker, width=20)
    assert display[0].rstrip().endswith(SECOND[:6])


def test_plain_output_after_a_move_back_is_read_on_the_row() -> None:
    # Backspaces in one chunk, the text that completes the secret in the next (no moves in it).
    display, _ = drawn(f"id={FIRST}~~~~~~~~~~".encode() + b"\x08" * 10, f"{SECOND} end\r\n".encode())
    assert SECOND not in display[0]


def test_a_long_number_typed_key_by_key_shows_again_once_it_ends() -> None:
    # Each key's echo comes after a pause: from the seventh digit on, a card number may be
    # being typed, so the echo is masked; at the Enter the run ends, it is none, it comes back.
    masker = pty_masker()
    chunks = [b"$ ", *(bytes([c]) for c in b"sleep 3000000"), b"\r\n"]
    display, out = drawn(*chunks, masker=masker)
    assert display[0].rstrip() == "$ sleep 3000000"
    assert b"*" in out  # it was masked on the way


def test_a_card_number_typed_key_by_key_never_shows_past_its_sixth_digit() -> None:
    masker = pty_masker()
    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    for key in (b"$ ", *(bytes([c]) for c in CARD.encode()), b"\r\n"):
        stream.feed(masker.feed(key).data + masker.flush(pause=True).data)
        assert CARD[6:12] not in screen.display[0]
    line = screen.display[0]
    assert line.startswith("$ ") and not any(c.isdigit() for c in line[8:18]) and line[2:18].count("*") >= 10


# -- what reaches the terminal: only what the view follows --------------------------------------

ORDINARY_SEQUENCES = [
    b"\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\x1b[H\x1b[2J\x1b[?25l",  # vim starting
    b"\x1b[38:2::255:100:0mcolour\x1b[0m \x1b[38;5;208mmore\x1b[39m",  # SGR with colons
    b"\x1b]0;user@host: ~\x07\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\",  # title, link
    b"\x1b]133;A\x07$ \x1b]133;B\x07",  # prompt marks
    b"\x1b[?2004h\x1b[>4;1m\x1b[?u\x1b(B\x1b)0\x1b[ q\x1b[2 q",  # paste, keys, charsets, cursor style
    b"\x1b[3;5H\x1b[K\x1b[1;24r\x1b[r\x1b7\x1b8\x1b[s\x1b[u\x1b[999C\x1b[10;1Hok",  # moves the view follows
    "caf\u00e9 \u6f22\u5b57 \u2705 e\u0301 \u200b\U0001f600".encode(),  # text outside ASCII
]


def test_ordinary_sequences_and_text_reach_the_terminal_as_they_are() -> None:
    for data in ORDINARY_SEQUENCES:
        masker = pty_masker()
        assert masker.feed(data).data + masker.flush().data == data, data


REMOVED = [
    (b"a\x1b[5\x18b", b"ab"),  # a CSI aborted by CAN
    (b"a\x1b[\rmb", b"ab"),  # a CR inside a CSI: the CSI goes, and what it held
    (b"a\x1b[1\x1b[0mb", b"a\x1b[0mb"),  # interrupted by ESC: the next one stays
    (b"a\x1b]0;x\x1ab", b"ab"),  # an OSC aborted by SUB
    (b"a\x1b[1:1Hb", b"ab"),  # a colon outside SGR
    (b"a\x1b[?69hb", b"ab"),  # DECLRMM
    (b"a\x1b[?69;25hb", b"a\x1b[?25hb"),  # only that mode
    (b"a\x1b#3b", b"ab"),  # a double-height line
    (b"a\x1b%@b", b"ab"),  # leaving UTF-8
    (b"a\x1b[1;1;5;5;1;10;10;1$vb", b"ab"),  # DECCRA copies a rectangle
    (b"a\x1bPq#0;2;0;0;0#0!10~\x1b\\b", b"ab"),  # a sixel image
    (b"a\x1b]1337;File=inline=1:AAAA\x07b", b"ab"),  # an inline image
    (b"a\xc2\x85b", b"ab"),  # C1 NEL
    (b"a\xc2\xadb", b"a-b"),  # a soft hyphen
    (b"a\xffb", "a\ufffdb".encode()),  # not UTF-8
    ("a\u0378b".encode(), "a\ufffdb".encode()),  # unassigned
    ("a\u0600b".encode(), b"ab"),  # a format character
    (b"\x1b[00000000014G", b"\x1b[14G"),  # leading zeros
    (b"\x1b[1234567C", b"\x1b[9999C"),  # a huge parameter
    (b"\x1b[?2l", b""),  # VT52 mode
    (b"\x1b[8;50;200t", b""),  # a window resize
]


def test_what_the_view_does_not_follow_is_removed() -> None:
    for data, expected in REMOVED:
        masker = pty_masker()
        assert masker.feed(data).data + masker.flush().data == expected, data


def test_without_a_pty_nothing_is_removed() -> None:
    for data, _ in REMOVED:
        masker = SecretMasker()
        assert masker.feed(data).data + masker.flush().data == data, data


def test_forgotten_rows_mask_nothing_ordinary() -> None:
    """A move the view cannot follow (an absolute one before the screen row is known, a move up
    that may stop at the top) keeps the rows aside; ordinary output after it, a prompt, typed
    commands and their output, is not masked, over any of them."""
    masker = pty_masker()
    rows = [f"line {i} status: {'x' * i} done {i * 37:>8} items".encode() for i in range(10)]
    before = b"\r\n".join(rows) + b"\r\n"
    after = [b"\x1b[30A", b"\x1b[5;1H", b"$ ls -l\r\n", b"total 8\r\n-rw-r--r-- 1 u u 42 Nov 28 a.txt\r\n",
             b"$ echo hello\r\nhello\r\n$ ", b"\x1b[3;20Hsecret word\x1b[20;1H", b"$ "]
    out = masker.feed(before).data + masker.flush(pause=True).data
    for chunk in after:
        out += masker.feed(chunk).data + masker.flush(pause=True).data
    assert masker._view is not None and masker._view.stale
    assert out == before + b"".join(after)


def test_forgotten_rows_go_once_a_screenful_scrolled() -> None:
    masker = pty_masker(80, 24)
    masker.feed(f"id=\x1b[14G{SECOND}\x1b[1;1H".encode())
    view = masker._view
    assert view is not None and view.stale
    masker.feed(b"\x1b[24;1H" + b"x\r\n" * 24)
    assert not view.stale  # back to the cheap update of plain text
