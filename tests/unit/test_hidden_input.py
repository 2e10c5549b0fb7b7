"""Hidden input, read from the streams: a prompt, or keys that never come back as echo."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.core.hidden import ECHO_GRACE, HiddenInput


class Keys:
    """A HiddenInput with a clock; collects what it lets the recording have."""

    def __init__(self, *, terminal: bool = True) -> None:
        self.hidden: list[int] = []
        self.check = HiddenInput(self.hidden.append, terminal=terminal)
        self.recorded = b""
        self.now = 100.0

    def type(self, data: bytes) -> None:
        self.recorded += self.check.input(data, self.now)

    def show(self, data: bytes) -> None:
        self.recorded += self.check.output(data, self.now)

    def wait(self, seconds: float) -> None:
        self.now += seconds
        deadline = self.check.deadline
        if deadline is not None and self.now >= deadline:
            self.recorded += self.check.due(self.now)

    def end(self) -> None:
        self.recorded += self.check.flush(self.now)


def test_echoed_keys_are_recorded_as_their_echo_comes() -> None:
    k = Keys()
    k.show(b"$ ")
    k.type(b"l")
    assert k.recorded == b""  # not yet: its echo has not come
    k.show(b"l")
    assert k.recorded == b"l"
    k.type(b"s")
    k.show(b"s")
    k.type(b"\r")
    assert k.recorded == b"ls\r" and k.hidden == []


def test_keys_that_never_echo_are_hidden() -> None:
    k = Keys()
    k.show(b"$ read -s pw\r\n")  # read -s, no prompt
    k.type(b"hunter2")
    k.type(b"\r")
    assert k.recorded == b"" and k.check.deadline == k.now + ECHO_GRACE
    k.wait(ECHO_GRACE)
    assert k.recorded == b"\r" and k.hidden == [7]


def test_the_programs_answer_after_the_line_break_is_not_echo() -> None:
    k = Keys()
    k.type(b"hunter2\r")
    k.show(b"\r\nhunter2 accepted\r\n$ ")  # the same letters, after the Enter's line break
    assert k.recorded == b"\r" and k.hidden == [7]


def test_a_late_echo_on_a_slow_link_still_counts() -> None:
    k = Keys()
    k.type(b"ls")
    k.type(b"\r")
    k.wait(ECHO_GRACE / 2)
    k.show(b"ls\r\n")
    assert k.recorded == b"ls\r" and k.hidden == []


def test_escape_keys_and_paste_brackets_need_no_echo() -> None:
    k = Keys()
    k.type(b"\x1b[A\x1b[B\x1bOA")  # arrows (both modes): no echo expected, recorded at once
    assert k.recorded == b"\x1b[A\x1b[B\x1bOA"
    k.type(b"\x1b[200~echo hi\x1b[201~")
    k.show(b"\x1b[32mecho\x1b[0m hi")  # colours in the echo do not matter
    k.type(b"\r")
    assert k.recorded.endswith(b"\x1b[200~echo hi\x1b[201~\r") and k.hidden == []


def test_a_prompt_hides_the_line_even_if_it_echoed() -> None:
    k = Keys()
    k.show(b"[sudo] password for alice: ")
    k.type(b"s3cret")
    k.show(b"******")  # pwfeedback
    k.type(b"\r")
    assert k.recorded == b"\r" and k.hidden == [6]
    k.show(b"\r\n$ ")
    k.type(b"id")
    k.show(b"id")
    assert k.recorded == b"\rid"


def test_keys_after_an_enter_wait_behind_its_decision() -> None:
    k = Keys()
    k.type(b"pw\rls")
    k.show(b"\r\n")  # the line break came with nothing echoed: the line was hidden
    assert k.hidden == [2] and k.recorded == b"\r"
    k.show(b"ls")
    assert k.recorded == b"\rls"


def test_mostly_masked_echo_hides_the_line_mostly_echoed_records_it() -> None:
    k = Keys()
    k.type(b"export T=abcdefghijklmnopqrstuvwxyz\r")
    k.show(b"export T=" + b"*" * 26 + b"\r\n")  # the echo itself was masked
    assert k.recorded == b"\r" and k.hidden == [35]
    k.type(b"curl -H 'X-Token: abcdef' https://example.com\r")
    k.show(b"curl -H 'X-Token: ******' https://example.com\r\n")
    assert k.recorded.endswith(b"curl -H 'X-Token: abcdef' https://example.com\r")  # masked later


def test_full_screen_programs_and_sessions_without_a_terminal_record_keys_as_typed() -> None:
    k = Keys()
    k.show(b"\x1b[?1049h")
    k.type(b"dd:wq")
    assert k.recorded == b"dd:wq"
    k.show(b"\x1b[?1049l$ ")
    plain = Keys(terminal=False)
    plain.type(b"data with no echo\n")
    assert plain.recorded == b"data with no echo\n" and plain.hidden == []


def test_a_line_left_without_an_enter_is_decided_at_the_end() -> None:
    k = Keys()
    k.type(b"echo a")
    k.show(b"echo a")
    k.type(b"bc")  # never echoed, never entered
    k.end()
    assert k.recorded == b"echo a" and k.hidden == [2]


@given(st.lists(st.binary(min_size=1, max_size=12), max_size=30), st.randoms(use_true_random=False))
def test_recorded_keys_keep_their_order_and_nothing_is_invented(chunks: list[bytes], rnd) -> None:  # type: ignore[no-untyped-def]
    k = Keys()
    for chunk in chunks:
        k.type(chunk)
        if rnd.random() < 0.7:
            k.show(chunk.replace(b"\r", b"\r\n"))  # echo as a terminal would
        k.wait(rnd.choice([0.0, 0.3, ECHO_GRACE]))
    k.end()
    typed = b"".join(chunks)
    # What is recorded is what was typed with whole hidden lines taken out, in order.
    at = 0
    for byte in k.recorded:
        at = typed.find(bytes([byte]), at) + 1
        assert at > 0
    assert len(k.recorded) + sum(k.hidden) == len(typed)


def _typed_without_echo(k: Keys, password: bytes) -> None:
    for key in password:  # key by key, as typed: no echo comes between them
        k.type(bytes([key]))
        k.wait(0.15)
    k.type(b"\r")


def test_output_after_enter_holding_the_keys_letters_is_not_their_echo() -> None:
    """`read -s b; echo no-prompt-done`: the answer's letters hold the password's in order.
    Echo comes as each key arrives, or right after the Enter for a pasted line; output that
    only holds the letters scattered is not it."""
    for password, answer in ((b"nodone", b"no-prompt-done\r\n$ "), (b"Nets", b"# Network services, Internet style\r\n"),
                             (b"tcp", b"tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer\r\n")):
        k = Keys()
        k.show(b"$ ")
        for key in b"read -s b":  # the command, typed and echoed: the link's echo latency
            k.type(bytes([key]))
            k.wait(0.01)
            k.show(bytes([key]))
        k.type(b"\r")
        k.show(b"\r\n")
        _typed_without_echo(k, password)
        k.show(answer)
        k.wait(ECHO_GRACE)
        assert password not in k.recorded and k.hidden == [len(password)], (password, k.recorded)
        assert k.recorded == b"read -s b\r\r"


def test_a_pasted_line_echoed_after_its_enter_is_recorded() -> None:
    k = Keys()
    k.show(b"$ ")
    k.type(b"echo pasted\r")
    k.show(b"echo pasted\r\npasted\r\n$ ")
    assert k.recorded == b"echo pasted\r" and k.hidden == []


def test_a_slow_links_echo_finishing_after_enter_is_recorded() -> None:
    k = Keys()
    k.show(b"$ ")
    for key in b"uptime":
        k.type(bytes([key]))
    k.show(b"upt")  # the echo of the first keys came while typing
    k.type(b"\r")
    k.show(b"ime\r\n 12:00:00 up 1 day\r\n$ ")
    assert k.recorded == b"uptime\r" and k.hidden == []
