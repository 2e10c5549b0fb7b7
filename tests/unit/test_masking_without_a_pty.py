"""Hostile output of a session without a pty (`ssh -J bastion host 'printf ...'`), drawn as the
user's terminal draws it: stdout and stderr on one pyte screen in the order they go out, LF as
CR LF (the user's tty). Each attack of tests/support/mask_attacks.py (NOPTY) split at every
offset of every write, with and without a pause there: the key is never whole on screen and
ordinary text stays. A gap still open is a strict expected failure, listed in docs/masking.md
(Known gaps)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bastion.config import MaskingSettings
from bastion.core.masker import BUILTIN_DETECTORS, Detector, SecretMasker, chosen_detectors
from bastion.core.streamscreen import NARROWEST, Drawn, StreamsOutput
from bastion.stages.masking import MaskingStage
from bastion.stages.pipeline import SessionPipeline, SessionStage, Stream
from recorder.transfers import SessionKind
from tests.support import mask_attacks
from tests.support.mask_attacks import FIRST, KEY, NOPTY, SECOND, TAIL, Terminal
from tests.support.stages import SHELL, Session
from tests.support.tabbed import tabbed_output


def streams(detectors: tuple[Detector, ...] = BUILTIN_DETECTORS) -> StreamsOutput:
    return StreamsOutput({0: SecretMasker(detectors), 1: SecretMasker(detectors)}, SecretMasker(detectors))


class StreamsApart:
    """Each stream masked on its own, as before: no row read."""

    def __init__(self) -> None:
        self._maskers = {0: SecretMasker(), 1: SecretMasker()}

    def feed(self, data: bytes, stream: int) -> Drawn:
        return Drawn([(stream, self._maskers[stream].feed(data).data)])

    def flush(self, stream: int, *, pause: bool = False) -> Drawn:
        return Drawn([(stream, self._maskers[stream].flush(pause=pause).data)])


@pytest.mark.parametrize("name", list(NOPTY))
def test_the_key_is_never_whole_on_the_users_terminal(name: str) -> None:
    tally = mask_attacks.Tally()
    mask_attacks.run_streams(name, streams, tally)
    assert tally.trials > 1
    assert (tally.leaks, tally.over_masks) == (0, 0), "\n".join(tally.examples)


def test_the_judge_sees_the_key() -> None:
    # With each stream masked on its own (the masking before the row was read), every attack
    # but one shows the key on the judge's screen: so the test above can fail. (The halves on
    # stdout then stderr are masked by stdout's masker: a prefixed token ending a write.)
    shown = []
    for name in NOPTY:
        tally = mask_attacks.Tally()
        mask_attacks.run_streams(name, StreamsApart, tally)
        shown.append((name, tally.leaks > 0))
    assert [name for name, leaked in shown if not leaked] == [
        "halves on stdout then stderr", "tab on stderr between two stdout halves"]


# -- what plain output costs: nothing, and nothing changes --------------------------------------

def test_plain_text_passes_unchanged_and_is_never_read_on_the_view() -> None:
    output = streams()
    text = b"".join(b"2026-11-28T14:00:00Z INFO request %d handled\n" % i for i in range(2000))
    out = b""
    for start in range(0, len(text), 4096):
        drawn = output.feed(text[start:start + 4096], 0)
        out += drawn.data(0)
        assert not output.screen.drawing
    out += output.flush(0).data(0)
    assert out == text


def test_crlf_line_ends_and_tabs_stay_plain() -> None:
    output = streams()
    text = b"name\tsize\r\n" + b"".join(b"file-%d\t%d\r\n" % (i, i * 7) for i in range(500))
    out = b""
    for start in range(0, len(text), 1000):  # chunks end between CR and LF too
        out += output.feed(text[start:start + 1000], 0).data(0)
        assert not output.screen.drawing
    out += output.flush(0).data(0)
    assert out == text


def test_stderr_lines_between_stdout_lines_stay_plain() -> None:
    output = streams()
    out = {0: b"", 1: b""}
    for i in range(50):
        out[0] += output.feed(b"line %d\n" % i, 0).data(0)
        out[1] += output.feed(b"warning %d\n" % i, 1).data(1)
        assert not output.screen.drawing
    assert out[0] == b"".join(b"line %d\n" % i for i in range(50))


# -- what the view changes, and why ------------------------------------------------------------

def drawn_out(*writes: tuple[int, bytes], detectors: tuple[Detector, ...] = BUILTIN_DETECTORS,
              ) -> tuple[list[bytes], list[str], list[str]]:
    output = streams(detectors)
    parts, masked, drawn = [], [], []
    for stream, data in writes:
        for result in (output.feed(data, stream), output.flush(stream, pause=True)):
            parts += [data for _, data in result.parts if data]
            masked += result.masked
            drawn += result.drawn
    for stream in (0, 1):
        end = output.flush(stream)
        parts += [data for _, data in end.parts if data]
    return parts, masked, drawn


def test_a_progress_line_is_drawn_over_as_written() -> None:
    parts, _, _ = drawn_out((1, b"\n"), (1, b" 10%\r"), (1, b" 55%\r"), (1, b"100%\n"))
    assert b"".join(parts) == b"\n 10%\r 55%\r100%\n"


def test_a_cr_on_a_row_wider_than_the_narrowest_terminal_starts_a_new_row() -> None:
    line = b"x" * NARROWEST
    parts, _, _ = drawn_out((0, b"\n" + line + b"\r" + b"done\n"))
    assert b"".join(parts) == b"\n" + line + b"\ndone\n"


def test_moves_up_and_absolute_moves_become_line_breaks_and_modes_go() -> None:
    parts, _, _ = drawn_out((0, b"\nab\x1b[Acd\x1b[3;4Hef\x1b7g\x1b8h\x1b[?1049hi\x1b[?25lj\x1b[31mk\x1b[0m\n"))
    assert b"".join(parts) == b"\nab\ncd\nef\ng\nhi\x1b[?25lj\x1b[31mk\x1b[0m\n"


def test_a_tab_read_on_the_view_becomes_spaces() -> None:
    parts, _, _ = drawn_out((0, b"\nab\rc\td\n"))
    assert b"".join(parts) == b"\nab\rc       d\n"


def test_the_first_half_is_drawn_over_when_the_second_completes_it() -> None:
    parts, masked, drawn = drawn_out((1, b"\n" + mask_attacks.AT), (0, b"\rid=" + FIRST + TAIL))
    out = b"".join(parts)
    assert SECOND in out and b"aws-access-key-id" in " ".join(masked).encode()
    screen = Terminal()
    screen.draw(Drawn([(0, out)]))
    assert not screen.leaked and drawn == []
    assert "id=AKIA" + "*" * 16 in "\n".join(mask_attacks.rows(screen.screen))


def test_a_secret_completed_on_an_unsure_row_is_masked_where_this_write_draws_it() -> None:
    # The session's first row: where it started is not known, so its first part is not drawn
    # over; the part that completes it is masked, and the recording says so.
    parts, masked, drawn = drawn_out((0, HOOK + b"T0A1B2C3/B9Z8Y7X6/abcdefgh"), (1, b"ijklmnopqrst end\n"))
    assert parts == [HOOK + b"T0A1B2C3/B9Z8Y7X6/abcdefgh", b"*" * 12 + b" end\n"]
    assert masked == ["slack-webhook"] and drawn == ["slack-webhook (row +0)"]


def test_a_secret_completed_on_a_sure_row_is_drawn_over() -> None:
    employee = chosen_detectors(custom=(("employee-id", "EMP-([0-9]{6})", 1),))
    parts, masked, drawn = drawn_out((0, b"\nid=EMP-123"), (1, b"456 end\n"), detectors=employee)
    assert parts == [b"\nid=EMP-123", b"*** end\x1b[8G*\x1b[9G*\x1b[10G*\x1b[18G\n"]
    assert masked == ["employee-id"] and drawn == []
    screen = Terminal()
    screen.draw(Drawn([(0, b"".join(parts))]))
    assert "id=EMP-****** end" in mask_attacks.rows(screen.screen)[1]


def test_a_secret_on_a_row_wider_than_the_narrowest_terminal_is_not_drawn_over() -> None:
    parts, masked, drawn = drawn_out((0, b"\n" + HOOK + b"T0A1B2C3/B9Z8Y7X6/abcdefgh"), (1, b"ijklmnopqrst end\n"))
    assert parts[1] == b"*" * 12 + b" end\n"
    assert masked == ["slack-webhook"] and drawn == ["slack-webhook (row +0)"]


HOOK = b"https://hooks.slack.com/services/"  # a secret with no prefix that is masked as it comes


def test_the_key_in_plain_output_is_masked_as_before() -> None:
    parts, masked, _ = drawn_out((0, b"key " + KEY.encode() + b" end\n"))
    assert KEY.encode() not in b"".join(parts) and masked == ["aws-access-key-id"]


def test_after_the_user_typed_a_move_back_on_the_row_becomes_a_line_break() -> None:
    # `ssh -T host` (a shell without a pty): the user's own tty echoes what they type, a line and
    # its line break the bastion never sees as output; where the cursor is on its row is unknown.
    output = streams()
    out = output.feed(b"\n$ ", 1).data(1)
    output.screen.typed()
    out += output.feed(b"id=\x1b[14G" + SECOND + b"\rid=" + FIRST + TAIL, 0).data(0)
    assert out == b"\n$ id=\n" + SECOND + b"\rid=" + FIRST + TAIL  # the CHA began a new row


# -- the stage, in a session ---------------------------------------------------------------------

class Wire(Session):
    """What reaches the client, in order, on which stream."""

    def __init__(self, pipeline: SessionPipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.sent: list[tuple[int, bytes]] = []

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        self.sent.append((int(stream), self.pipeline.output_after(stage, data, stream)))

    def output(self, data: bytes, stream: Stream) -> None:
        self.sent.append((int(stream), self.pipeline.output(data, stream)))


def test_the_masking_stage_reads_both_streams_as_one_row_in_the_order_they_go_out() -> None:
    async def run() -> list[tuple[int, bytes]]:
        pipeline = SessionPipeline([MaskingStage(MaskingSettings(hold_ms=20))])
        wire = Wire(pipeline)
        pipeline.start(replace(SHELL, kind=SessionKind.EXEC, command="sh run.sh", term_type=None), wire)
        wire.output(b"\nid=\x1b[14G" + SECOND + b"\r", Stream.STDOUT)  # its CR is held
        wire.output(b"id=" + FIRST, Stream.STDERR)  # the CR goes out first, on stdout
        await asyncio.sleep(0.1)  # a pause: what stderr's masker held goes out
        wire.output(TAIL + b"\n", Stream.STDERR)
        for stream in Stream:
            wire.sent.append((int(stream), pipeline.flush_output(stream)))
        return [(stream, data) for stream, data in wire.sent if data]

    sent = asyncio.run(run())
    assert [stream for stream, _ in sent][:3] == [0, 0, 1]
    assert sent[1] == (0, b"\r")
    screen = Terminal()
    screen.draw(Drawn(sent))
    assert not screen.leaked
    assert "id=AKIA" + "*" * 16 in "\n".join(mask_attacks.rows(screen.screen))


def test_data_streams_pass_the_stage_unread() -> None:
    pipeline = SessionPipeline([MaskingStage(MaskingSettings())])
    wire = Wire(pipeline)
    pipeline.start(replace(SHELL, kind=SessionKind.EXEC, command="cat backup", term_type=None), wire)
    payload = b"\x00\x1b[5G\r" + KEY.encode() + b"\x08" * 5
    assert pipeline.output(payload, Stream.STDOUT) == payload


def test_after_the_row_that_drew_over_itself_the_chunk_is_plain_again() -> None:
    output = streams()
    lines = b"".join(b"line %d of the log\n" % i for i in range(300))
    drawn = output.feed(b"\n 10%\r100%\n" + lines + b"id=", 0)
    assert drawn.data(0) == b"\n 10%\r100%\n" + lines + b"id=" and not output.screen.drawing
    # The open row is still known: the other stream writing on it is read with it.
    out = output.feed(KEY[:3].encode(), 0).data(0) + output.feed(KEY[3:].encode() + b" end\n", 1).data(1)
    assert KEY[4:].encode() not in out


# -- a tab at the right margin: read with the tab taken out --------------------------------------

def test_the_character_after_a_tab_at_the_margin_is_masked_with_the_key() -> None:
    key = KEY.encode()
    parts, masked, drawn = drawn_out((0, b"\n" + b"." * 80 + key[:19] + b"\t" + key[19:] + b" end\n"))
    assert parts == [b"\n" + b"." * 80 + b"AKIA" + b"*" * 15 + b"\t* end\n"]
    assert masked == ["aws-access-key-id"] and drawn == []


def test_a_tab_in_a_later_write_masks_what_it_draws_and_says_what_it_could_not() -> None:
    key = KEY.encode()
    parts, masked, drawn = drawn_out((0, b"\n" + b"." * 80 + key[:19] + b"\t"), (0, key[19:] + b" end\n"))
    assert parts == [b"\n" + b"." * 80 + key[:19] + b"\t", b"* end\n"]
    assert masked == ["aws-access-key-id"] and drawn == ["aws-access-key-id (row +0)"]


def test_a_tab_ending_a_write_then_the_other_stream_gets_a_space_first() -> None:
    # Read on the view from then on: the terminal got the tab as it is, so the next character
    # must not be drawn right after what comes before it, whatever the width.
    key = KEY.encode()
    output = streams()
    first = output.feed(b"\n" + b"." * 80 + key[:19] + b"\t", 0).data(0)
    second = output.feed(b"\x1b[31m" + key[19:] + b" end\n", 1).data(1)
    assert first == b"\n" + b"." * 80 + key[:19] + b"\t"
    assert second == b"\x1b[31m " + key[19:] + b" end\n"


def test_the_first_tab_near_a_rows_start_is_not_read_joined() -> None:
    # 13 digits that form a card number once joined: the row's first tab is in column 12, at
    # the margin of no terminal 20 columns wide or more; a later tab may be anywhere.
    first, _, _ = drawn_out((0, b"\n553760890865\t9 end\n"))
    assert b"".join(first) == b"\n553760890865\t9 end\n"
    later, masked, _ = drawn_out((0, b"\nx\t553760890865\t9 end\n"))
    assert b"".join(later) == b"\nx\t************\t* end\n" and masked == ["card-number"]


def test_tab_separated_output_is_masked_only_where_a_card_number_may_show() -> None:
    # A realistic tabbed corpus holding no secret (tests/support/tabbed.py): what the row changes
    # beyond the stream's masker is only in rows of long numbers, where two columns read
    # joined form a valid card number (a terminal whose margin that tab reaches shows it).
    data = tabbed_output(300_000)
    alone, output = SecretMasker(), streams()
    plain, read = b"", b""
    for start in range(0, len(data), 32768):
        plain += alone.feed(data[start:start + 32768]).data
        read += output.feed(data[start:start + 32768], 0).data(0)
    plain += alone.flush().data
    read += output.flush(0).data(0)
    changed = [(index % 12, a, b) for index, (a, b) in enumerate(zip(plain.split(b"\n"), read.split(b"\n"),
                                                                     strict=True)) if a != b]
    assert {kind for kind, _, _ in changed} == {7}  # the rows of numbers
    for _, a, b in changed:
        assert len(a) == len(b) and all(x == y or (y == ord("*") and chr(x).isdigit()) for x, y in zip(a, b, strict=True))
    assert 0 < len(changed) < len(plain.split(b"\n")) // 12 // 10


def test_a_long_token_at_the_margin_of_a_wide_terminal_is_read_whole() -> None:
    # A JWT of 333 characters whose signature is long enough only with the character after the
    # tab: whole on one row of a terminal wider than that.
    token = b"eyJhbGciOiJIUzI1NiJ9.eyJ" + b"a" * 300 + b"." + b"b" * 8
    parts, masked, _ = drawn_out((0, b"\n" + token[:-1] + b"\t" + token[-1:] + b" end\n"))
    out = b"".join(parts)
    assert masked == ["jwt"] and out.endswith(b"*\t* end\n") and b"a" * 300 not in out


@pytest.mark.parametrize(("before", "after"), [
    (b"447222262086740\t", b"9"),  # 15 digits, a tab at the margin, the 16th
    (b"4472 2226 2086 740\t", b"9"),  # in groups
    (b"447222262086740x\t", b"9"),  # the character before the tab drawn over
    (b"447222262086740\tx\t", b"9"),  # a single character between two tabs
    (b"447222262086740\t\t\t", b"9 and tea\tfor\ttwo"),  # several tabs; words after them
])
def test_a_card_number_completed_after_a_tab_at_the_margin_is_masked(before: bytes, after: bytes) -> None:
    """Rows of other columns read only the tabs after twelve digits for card numbers: these
    still are."""
    row = b"\nrow 1234\t" + b"." * 20
    out = streams().feed(row + before + after + b" end\n", 0).data(0)
    assert out.startswith(row) and out.endswith(after[1:] + b" end\n"), out
    assert not any(c.isdigit() for c in out[len(row):].decode()), out  # every digit of it masked
