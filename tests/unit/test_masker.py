from __future__ import annotations

import re
import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import MaskingSettings
from bastion.core.masker import (
    _WORD_OR_DASH,
    BUILTIN_DETECTORS,
    CARD_RUN,
    SecretMasker,
    TextMasker,
    _hyperscan_pattern,
    _raw_trigger,
    card_ok,
    card_spans,
    custom_detector,
    digit_run,
    luhn_ok,
)
from tests.support.samples import ALNUM, AWS_ID, AWS_SECRET, CARD, GH, pem, rand

# (text, secret) pairs: the secret must vanish, the rest must stay.
TRUE_CASES = [
    (f"aws_access_key_id = {AWS_ID}\n", AWS_ID),
    (f"aws_secret_access_key = {AWS_SECRET}\n", AWS_SECRET),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}\n', AWS_SECRET),
    (f"export GITHUB_TOKEN={GH}\n", GH),
    (f"token {'github_pat_' + rand(ALNUM + '_', 60)} ok\n", None),
    (f"glpat-{rand(ALNUM, 20)}\n", None),
    (f"SLACK=xoxb-{rand(string.digits, 12)}-{rand(ALNUM, 24)}\n", None),
    (f"sk_live_{rand(ALNUM, 24)}\n", None),
    (f"key=AIza{rand(ALNUM + '-_', 35)}\n", None),
    (f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{rand(ALNUM + '-_', 43)}\n", None),
    (f"Authorization: Bearer {rand(ALNUM, 32)}\r\n", None),
    ("postgres://app:s3cr3t-Pa55@db.internal:5432/app\n", "s3cr3t-Pa55"),
    ("DB_PASSWORD=hunter2hunter2\n", "hunter2hunter2"),
    ('password: "correct-horse-battery"\n', "correct-horse-battery"),
    ('password: "correct horse"\n', "correct horse"),
    ("  api_key: 9f8e7d6c5b4a\n", "9f8e7d6c5b4a"),
    ('{"client_secret": "abc123def456"}\n', "abc123def456"),
    (f"card {CARD} ok\n", CARD),
    (f"card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]} ok\n", f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"),
    (f"card {CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]} ok\n", f"{CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}"),
    # Prefixes with an underscore or a dash, glued to what comes before them.
    (f"GITHUB_TOKEN{GH} next\n", GH[4:]),
    (f"Xxoxb-{rand(string.digits, 12)}-{rand(ALNUM, 24)} next\n", None),
    (f"aglpat-{rand(ALNUM, 20)} next\n", None),
]
FALSE_CASES = [
    "commit 9fceb02d0ae598e95dc970b74764f0b7f4d1a2e3\n",
    f"id {uuid.uuid4()}\n",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBvcmRpbmFyeSBiYXNlNjQgdGV4dA==\n",
    "2026-11-28T14:00:00.123Z INFO took 1234567890123 ns\n",
    "number 4111111111111112 fails luhn\n",
    "-rw-r--r-- 1 root root 1234567 Nov 28 14:00 file\n",
    "Password: \n",
    "token: null\n",
    "The password is stored in the vault.\n",
    "ls -la /etc/ssh\n",
    "read -s -p 'Password: ' pw; echo; echo length-${#pw}\n",
]


def mask_all(masker: SecretMasker, chunks: list[bytes]) -> tuple[bytes, list[str]]:
    out, names = [], []
    for chunk in chunks:
        result = masker.feed(chunk)
        out.append(result.data)
        names += result.masked
    final = masker.flush()
    return b"".join(out) + final.data, names + final.masked


def secret_of(text: str, secret: str | None) -> str:
    if secret:
        return secret
    return max(re.split(r"[\s=:\"'{}]+", text), key=len)


@pytest.mark.parametrize(("text", "secret"), TRUE_CASES)
def test_detectors_mask_secrets(text: str, secret: str | None) -> None:
    out, names = mask_all(SecretMasker(), [text.encode()])
    hidden = secret_of(text, secret)
    assert hidden.encode() not in out, out
    assert len(out.decode()) == len(text)  # width kept
    assert names


@pytest.mark.parametrize("text", FALSE_CASES)
def test_ordinary_output_is_untouched(text: str) -> None:
    out, names = mask_all(SecretMasker(), [text.encode()])
    assert out == text.encode() and names == []
    data = text.encode()
    for cut in range(1, len(data)):  # cut anywhere: a placeholder (`token: null`) is held, not masked
        assert mask_all(SecretMasker(), [data[:cut], data[cut:]]) == (data, []), cut


@pytest.mark.parametrize("kind", ["openssh", "pkcs8"])
def test_private_key_blocks_are_masked_across_lines(kind: str) -> None:
    key = pem(kind)
    text = f"$ cat id\n{key}$ \n"
    out, names = mask_all(SecretMasker(), [text.encode()])
    body = [line for line in key.splitlines() if not line.startswith("-----")]
    for line in body:
        assert line.encode() not in out
    assert b"-----BEGIN" in out and b"PRIVATE KEY-----" in out  # header and footer stay
    assert out.count(b"\n") == text.count("\n")
    assert "private-key" in names
    # Streamed in small chunks, too, and cut anywhere (inside the header, a body line, the footer).
    data = text.encode()
    chunked, _ = mask_all(SecretMasker(), [data[i:i + 7] for i in range(0, len(data), 7)])
    assert chunked == out
    for cut in range(1, len(data)):
        assert mask_all(SecretMasker(), [data[:cut], data[cut:]])[0] == out, cut


@pytest.mark.parametrize(("text", "secret"), TRUE_CASES[:8] + TRUE_CASES[12:14] + TRUE_CASES[17:18])
def test_a_secret_split_at_every_offset_is_still_masked(text: str, secret: str | None) -> None:
    data, hidden = text.encode(), secret_of(text, secret).encode()
    reference, _ = mask_all(SecretMasker(), [data])
    for cut in range(1, len(data)):
        out, _ = mask_all(SecretMasker(), [data[:cut], data[cut:]])
        assert hidden not in out
        assert out == reference, cut


@pytest.mark.parametrize(("text", "secret"), TRUE_CASES)
def test_a_coloured_secret_in_small_chunks_is_masked_and_counted_once(text: str, secret: str | None) -> None:
    # Colour right before the secret: a chunk ending inside the escape sequence (`ESC [` alone
    # also reads as a whole two-byte escape) must not glue its parameters onto the secret.
    hidden = secret_of(text, secret)
    at = text.index(hidden)
    data = (text[:at] + "\x1b[38;5;208m" + text[at:]).encode()
    reference, names = mask_all(SecretMasker(), [data])
    assert hidden.encode() not in reference and len(names) == 1, names
    for size in range(1, 8):
        out, names = mask_all(SecretMasker(), [data[i:i + size] for i in range(0, len(data), size)])
        assert hidden.encode() not in out, (size, out)
        assert out == reference, size
        # A quoted value with spaces can be named twice: its first word masked provisionally,
        # then the whole value once its closing quote came.
        assert len(names) == 1 or (" " in hidden and set(names) == {"password-assignment"}), (size, names)


INVISIBLE = ["\x1b[1;31m", "\x1b[0m", "\x1b[38;5;208m", "\x1b[K", "\u200b", "\ufeff", "\x1b]8;;https://x\x07"]


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(TRUE_CASES), st.lists(st.tuples(st.integers(0, 200), st.sampled_from(INVISIBLE)), max_size=3),
       st.lists(st.integers(1, 200), max_size=12))
def test_escapes_anywhere_and_chunks_cut_anywhere_never_let_a_secret_through(
        case: tuple[str, str | None], inserts: list[tuple[int, str]], cuts: list[int]) -> None:
    text = case[0]
    # Colours, line clears, zero-width characters, links: between characters of the text,
    # never inside one another.
    for at, sequence in sorted(((p % (len(text) + 1), q) for p, q in inserts), reverse=True):
        text = text[:at] + sequence + text[at:]
    data = text.encode()
    bounds = sorted({cut % len(data) for cut in cuts} - {0})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    out, _ = mask_all(SecretMasker(), chunks)
    whole, _ = mask_all(SecretMasker(), [data])
    assert out == whole, chunks  # how the output was cut changes nothing


@pytest.mark.parametrize(("text", "secret"), [TRUE_CASES[0], TRUE_CASES[3], TRUE_CASES[16]])
def test_colour_codes_inside_a_secret_do_not_defeat_it(text: str, secret: str) -> None:
    start = text.index(secret)
    for offset in range(1, len(secret)):
        position = start + offset
        coloured = (text[:position] + "\x1b[1;31m" + text[position:]).encode()
        out, _ = mask_all(SecretMasker(), [coloured])
        assert b"\x1b[1;31m" in out  # the sequence passes through
        plain = out.replace(b"\x1b[1;31m", b"")
        assert secret.encode()[:offset] + secret.encode()[offset:] not in plain
        assert plain.count(b"*") >= len(secret) - 4


def test_zero_width_characters_inside_a_secret_do_not_defeat_it() -> None:
    text = f"key {AWS_ID[:6]}\u200b{AWS_ID[6:]} end\n".encode()
    out, _ = mask_all(SecretMasker(), [text])
    assert AWS_ID[6:].encode() not in out
    assert "\u200b".encode() in out


def test_one_byte_chunks() -> None:
    text = "".join(t for t, _ in TRUE_CASES).encode()
    reference, _ = mask_all(SecretMasker(), [text])
    out, _ = mask_all(SecretMasker(), [bytes([b]) for b in text])
    for t, s in TRUE_CASES:
        assert secret_of(t, s).encode() not in out
    assert len(out.decode()) == len(text.decode())
    # Streaming one byte at a time masks the same as all at once, except a quoted value with
    # a space in it, whose second word goes out before the closing quote shows it was one value.
    spaced = [i for i, (t, _) in enumerate(TRUE_CASES) if '"correct horse"' in t]
    lines_ref, lines_out = reference.split(b"\n"), out.split(b"\n")
    assert [r for i, r in enumerate(lines_ref) if i not in spaced] == [o for i, o in enumerate(lines_out) if i not in spaced]


def test_slow_output_never_shows_a_secret_whole() -> None:
    """A program printing a key one character at a time (the stage flushes only when quiet)."""
    for text, secret in [(f"key: {AWS_ID}\n", AWS_ID), (f"TOKEN={GH}\n", GH), (f"pay {CARD} now\n", CARD)]:
        masker = SecretMasker()
        screen = b""
        for char in text.encode():
            screen += masker.feed(bytes([char])).data
            assert secret.encode() not in screen
        screen += masker.flush().data
        assert secret.encode() not in screen
        assert screen.endswith(b"\n")


def test_ordinary_interactive_echo_is_not_held() -> None:
    masker = SecretMasker()
    for char in b"ls -la /var/log && echo done":
        assert masker.feed(bytes([char])).data == bytes([char])


def test_luhn_and_cards() -> None:
    assert luhn_ok(b"4111111111111111") and not luhn_ok(b"4111111111111112")
    assert card_ok(b"4111 1111 1111 1111") and not card_ok(b"4111-1111 1111 1111")
    assert not card_ok(b"1111111111111117")  # no issuer starts with 1


def test_custom_detector() -> None:
    masker = SecretMasker([custom_detector("employee-id", r"EMP-([0-9]{6})", 1)])
    out, names = mask_all(masker, [b"user EMP-123456 logged in\n"])
    assert out == b"user EMP-****** logged in\n" and names == ["employee-id"]
    with pytest.raises(ValueError, match="no group 2"):
        custom_detector("bad", r"(x)", 2)


def test_one_marker_per_secret_when_detectors_overlap() -> None:
    # A GitHub token in an assignment: both detectors see it; one secret, one marker.
    out, names = mask_all(SecretMasker(), [f"GITHUB_TOKEN={GH}\n".encode()])
    assert GH[4:].encode() not in out and names == ["github-token"]
    out, names = mask_all(SecretMasker(), [f"token={GH} other_token={GH}\n".encode()])
    assert names == ["github-token", "github-token"]


def test_stored_text_is_masked_with_the_configured_detectors() -> None:
    command = "curl -u EMP-123456 https://x 4111 1111 1111 1111"
    assert TextMasker().mask(command) == "curl -u EMP-123456 https://x " + "*" * 19  # the built-ins
    settings = MaskingSettings(enabled=False, disable=("card-number",),
                               custom=(("employee-id", r"EMP-([0-9]{6})", 1),))
    assert settings.text_masker().mask(command) == "curl -u EMP-****** https://x 4111 1111 1111 1111"
    assert MaskingSettings().text_masker() == TextMasker()  # the same detector objects
    assert TextMasker().mask("") == ""


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_any_output_keeps_its_length_in_characters_and_never_grows_unbounded(data: bytes, size: int) -> None:
    masker = SecretMasker()
    out = b"".join(masker.feed(data[i:i + size]).data for i in range(0, len(data), size)) + masker.flush().data
    assert len(out) <= len(data) + data.count(b"\x1b") * 0 + len(data)
    assert masker.holding is False


def test_masks_of_bytes_that_are_not_utf8_keep_their_width() -> None:
    # A terminal shows one replacement character per bad byte sequence: one star each.
    masker = SecretMasker()
    out = masker.feed(b"PWD=\xde\xaa!\x07\xb8\xf8rest\n").data + masker.flush().data
    assert out.startswith(b"PWD=") and b"\xde" not in out and b"\xb8" not in out
    # The BEL is not drawn: it passes between the stars, which keep the width of what is drawn.
    before, after = (part.decode("utf-8", "replace") for part in (b"\xde\xaa!", b"\xb8\xf8rest"))
    assert out == b"PWD=" + b"*" * len(before) + b"\x07" + b"*" * len(after) + b"\n"


# -- the fast paths agree with the full one -----------------------------------------------

COLOURED_LINES = [
    "2026-11-28T14:00:00.123Z INFO api request handled path=/v1/items/{n} status=200 ms={n}\n",
    "\x1b[01;34mdir-{n}\x1b[0m  \x1b[01;32mscript-{n}.sh\x1b[0m  notes.txt  \x1b[31mcore\x1b[0m\n",
    "-rw-r--r-- 1 root root {n:>9} Nov 28 14:00 file-{n}.log\n",
    "\x1b[33mcommit 9fceb02d0ae598e95dc970b74764f0b7f4d1a2e3\x1b[0m\n",
    "card \x1b[1m" + CARD + "\x1b[0m paid\n",
    f"card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]} ok\n",
    "\x1b[32mexport\x1b[0m DB_PASSWORD=hunter2hunter2\n",
    f"key \x1b[1m{AWS_ID[:7]}\x1b[0m{AWS_ID[7:]} end\n",
    "id 1234567890123 ns, then 41111111\x1b[0m11111111 and \x1b[7m5555 5555 5555 4444\x1b[0m\n",
]


COLOURED_FILLER = "".join(COLOURED_LINES[i % 4].format(n=i * 7919) for i in range(30))


@pytest.mark.parametrize("line", COLOURED_LINES[3:])
def test_coloured_chunks_cut_anywhere_mask_the_same_on_the_fast_path(line: str) -> None:
    """Coloured chunks with no trigger skip the projection; cut at every offset of a line with a
    secret or a number, they must come out exactly as the full path masks them."""
    data = (COLOURED_FILLER + line + COLOURED_FILLER[:300]).encode()
    start = len(COLOURED_FILLER)
    for cut in range(start - 2, start + len(line.encode()) + 2):
        chunks = [data[:cut], data[cut:]]
        fast, slow = SecretMasker(), SecretMasker()
        slow._fast_path = False
        assert mask_all(fast, chunks) == mask_all(slow, chunks), cut


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(COLOURED_LINES) - 1), st.integers(0, 10**9)), min_size=40,
                max_size=120),
       st.lists(st.integers(min_value=2048, max_value=6000), min_size=1, max_size=8))
def test_coloured_chunks_mask_the_same_on_the_fast_path(lines: list[tuple[int, int]], sizes: list[int]) -> None:
    """Coloured chunks with no trigger skip the projection; they must come out exactly as the
    full path masks them, wherever the chunks are cut (a number cut at the end is held)."""
    data = "".join(COLOURED_LINES[kind].format(n=n) for kind, n in lines).encode()
    chunks, offset, turn = [], 0, 0
    while offset < len(data):
        size = sizes[turn % len(sizes)]
        chunks.append(data[offset:offset + size])
        offset, turn = offset + size, turn + 1
    fast, slow = SecretMasker(), SecretMasker()
    slow._fast_path = False
    assert mask_all(fast, chunks) == mask_all(slow, chunks)


# -- the digit-run check ahead of the card trigger -------------------------------------------

CSI_BEFORE = re.compile(rb"\x1b\[[\x20-\x3f]*[\x40-\x7e]\Z")


def digit_run_reference(data: bytes, count: int) -> bool:
    """bastion/core/_digits.c's definition, spelled out slowly."""
    def word(position: int) -> bool:
        return position >= 0 and re.fullmatch(rb"\w", data[position:position + 1]) is not None
    for match in re.finditer(rb"[0-9](?:[ -]?[0-9])*", data):
        run = match.group()
        if sum(c in b"0123456789" for c in run) < count:
            continue
        if b" " in run or b"-" in run:
            return True
        start, end = match.span()
        if (not word(start - 1) or CSI_BEFORE.search(data[:start])) and not word(end):
            return True
    return False


CARDISH = st.lists(st.sampled_from([b"4", b"1", b"0", b"9", b" ", b"-", b"  ", b"a", b"Z", b"_", b"m",
                                    b"\x1b[", b"\x1b[0m", b"\x1b[1;31m", b";", b"\n", b"4111", b"5555 ",
                                    b"41111111", b"4111111111111"]),
                   max_size=40).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(CARDISH)
def test_digit_run_is_its_definition_and_holds_wherever_the_card_trigger_matches(data: bytes) -> None:
    card = next(d for d in BUILTIN_DETECTORS if d.name == "card-number")
    assert digit_run is not None, "bastion/core/_digits.c was not built"
    assert digit_run(data, card.digits) == digit_run_reference(data, card.digits)
    for trigger in (_hyperscan_pattern(card.trigger), _raw_trigger(_hyperscan_pattern(card.trigger))):
        if re.search(trigger, data):
            assert digit_run(data, card.digits), (trigger, data)


def test_digit_run_finds_card_layouts_and_passes_over_ordinary_numbers() -> None:
    for text in [b"4111111111111111", b"x 4111 1111 1111 1111 y", b"4111-1111-1111-1111", b"3782 822463 10005",
                 b"\x1b[1m4111111111111111\x1b[0m", b"ab12 3456 7890 1234"]:
        assert digit_run(text, 12), text
    for text in [b"2026-11-28T14:00:00.123Z", b"commit 5170929415455f0", b"a4111111111111111 ",
                 b"-rw-r--r-- 1 root root  12345678 Nov 28", b"4111 1111 111", b""]:
        assert not digit_run(text, 12), text


def _card_spans_run_by_run(text: bytes) -> list[tuple[int, int]]:
    """card_spans as it read every run of digits, however short: the reference for the faster
    search that passes over runs of fewer than 13 digits."""
    found = []
    for match in CARD_RUN.finditer(text):
        run_start, run_end = match.span()
        if run_start > 0 and text[run_start - 1] in _WORD_OR_DASH:
            continue
        if run_end < len(text) and text[run_end] in _WORD_OR_DASH and text[run_end] != 0x2D:
            continue
        run = match.group()
        if sum(c.isdigit() for c in run.decode()) < 13:
            continue
        found += [(run_start + begin, run_start + end) for begin, end in card_spans(run)]
    return found


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["4", "0", "5", "1", " ", "-", ",", "\t", "a", "\n", "4472 2226 2086 7409",
                                 "4472222620867409", "1234567890123"]), max_size=40))
def test_card_numbers_are_found_as_when_every_run_of_digits_was_read(pieces: list[str]) -> None:
    text = "".join(pieces).encode()
    assert card_spans(text) == _card_spans_run_by_run(text)
