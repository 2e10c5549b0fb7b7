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
    assert masker.flush().data == b"\x1b["  # the stream's end releases it


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
