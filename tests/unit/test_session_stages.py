"""Session stages against a stand-in for their session: the screener at Enter, the recorder's
input masking. The e2e tests drive the same stages through real OpenSSH and bash."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import pyte
import pytest

from bastion.config import MaskingSettings, RecordingSettings
from bastion.core import linetrack
from bastion.core.linetrack import LineTracker
from bastion.core.masker import TextMasker
from bastion.core.rules import parse_rules
from bastion.rules_file import RulesHolder
from bastion.stages import screening
from bastion.stages.pipeline import Stream
from bastion.stages.recording import RecordingStage
from bastion.stages.screening import ScreeningContext, ScreeningStage
from bastion.state.audit import AuditLog
from recorder.asciicast import load_cast
from recorder.signing import RecordingKey
from recorder.transfers import SessionKind, Transfer, transfer_of
from recorder.writer import Recorder
from tests.support.lab import until
from tests.support.memory import MemoryStore
from tests.support.samples import AWS_SECRET, GH
from tests.support.stages import SHELL, MarkedSession, Session
from tests.support.stores import live_store

RULES = parse_rules({
    "rule": [{"name": "no-forbidden", "action": "deny", "command": "forbidden"},
             {"name": "needs-approval", "action": "approve", "command": "needs-approval",
              "approvers": ["dba"]}],
})
MASKER = TextMasker()  # the built-in detectors


def decisions(log: io.StringIO) -> list[dict[str, object]]:
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    return [e for e in events if e["event"] == "command_decision"]


def shell_stage() -> tuple[ScreeningStage, Session, io.StringIO]:
    log = io.StringIO()
    stage = ScreeningStage(ScreeningContext(RulesHolder(RULES), None, AuditLog(log, masker=MASKER), MASKER))
    session = Session()
    stage.start(SHELL, session)
    return stage, session, log


async def test_a_line_typed_ahead_of_a_slow_shell_waits_for_its_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screening, "ECHO_WAIT", 0.05)
    stage, session, log = shell_stage()
    # The user types before the target printed anything; the login banner comes with the echo.
    assert stage.on_input(b"PS1='x> '\r") == b"PS1='x> '"
    stage.on_target_output(b"PS1='x> 'Last login: today\r\nWelcome\r\n", Stream.STDOUT)
    await asyncio.sleep(0.2)  # the shell starts slower than an ordinary echo takes
    assert session.target == []  # Enter still held: the shell has not shown the line yet
    stage.on_target_output(b"root@db-1:~# PS1='x> '", Stream.STDOUT)
    await until(lambda: session.target, "the Enter released")
    assert session.target == [b"\r"]
    [decision] = decisions(log)
    assert decision["command"] == "PS1='x> '" and decision["action"] == "allow"
    assert "unsure" not in decision


async def test_typed_ahead_lines_are_still_screened() -> None:
    stage, session, _ = shell_stage()
    assert stage.on_input(b"touch forbidden\r") == b"touch forbidden"
    stage.on_target_output(b"touch forbidden\r\nLast login: today\r\n$ touch forbidden", Stream.STDOUT)
    await until(lambda: session.target, "a decision")
    assert session.target == [b"\x03"]  # interrupted at the target, never submitted
    assert any(b"denied by rule 'no-forbidden'" in line for line in session.client)
    stage.on_input(b"ls\r")  # typed before the line is seen gone: held
    stage.on_target_output(b"^C\r\n$ ", Stream.STDOUT)
    await until(lambda: len(session.target) > 1, "the keys typed after it")
    assert session.target[1] == b"ls"


async def run_line(stage: ScreeningStage, session: Session, line: bytes, prompt: bytes = b"$ ") -> None:
    """Type a line at the stand-in shell's prompt and see its Enter released."""
    before = len(session.target)
    stage.on_target_output(prompt, Stream.STDOUT)
    assert stage.on_input(line + b"\r") == line
    stage.on_target_output(line, Stream.STDOUT)
    await until(lambda: len(session.target) > before, f"{line!r} released")
    assert session.target[-1] == b"\r", session.client
    stage.on_target_output(b"\r\n", Stream.STDOUT)


async def test_the_wait_for_an_echo_follows_the_sessions_own_echo_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A distant target or a loaded machine: every echo comes late. The first line's echo shows
    it; the next line, typed and submitted at once, waits for its echo instead of being unsure."""
    monkeypatch.setattr(screening, "ECHO_WAIT", 0.05)
    stage, session, log = shell_stage()
    stage.on_target_output(b"$ ", Stream.STDOUT)
    assert stage.on_input(b"l") == b"l"
    await asyncio.sleep(0.15)
    stage.on_target_output(b"l", Stream.STDOUT)  # the echo: 0.15 s, three times ECHO_WAIT
    assert stage.on_input(b"s\r") == b"s"
    stage.on_target_output(b"s", Stream.STDOUT)
    await until(lambda: session.target, "the first Enter released")
    stage.on_target_output(b"\r\nfile\r\n$ ", Stream.STDOUT)
    assert stage.on_input(b"echo hi\r") == b"echo hi"
    await asyncio.sleep(0.2)  # later than ECHO_WAIT, sooner than ECHO_MARGIN times the echo delay
    stage.on_target_output(b"echo hi", Stream.STDOUT)
    await until(lambda: len(session.target) > 1, "the second Enter released")
    assert session.target[1] == b"\r", session.client
    assert [(d["command"], d["action"], "unsure" in d) for d in decisions(log)] == [
        ("ls", "allow", False), ("echo hi", "allow", False)]


def test_the_echo_wait_is_bounded_both_ways() -> None:
    assert screening.echo_wait(0.0) == screening.ECHO_WAIT
    assert screening.echo_wait(0.3) == pytest.approx(0.3 * screening.ECHO_MARGIN)
    assert screening.echo_wait(60.0) == screening.ECHO_WAIT_MAX


def test_a_late_echo_raises_the_estimate_at_once_and_early_ones_lower_it_slowly() -> None:
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"$ ")

    def key_echoed_after(seconds: float) -> None:
        now[0] += 1
        tracker.typed(b"x")
        now[0] += seconds
        tracker.output(b"x")

    key_echoed_after(0.4)
    assert tracker.echo_delay == pytest.approx(0.4)
    key_echoed_after(0.0)
    assert tracker.echo_delay == pytest.approx(0.32)
    key_echoed_after(1.0)
    assert tracker.echo_delay == pytest.approx(1.0)
    key_echoed_after(60.0)  # no key's echo takes a minute: something else answered
    assert tracker.echo_delay == linetrack.ECHO_DELAY_CAP


def test_output_after_enter_is_not_an_echo() -> None:
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"$ ")
    now[0] += 1
    tracker.typed(b"\x01")  # Ctrl-A at the line's start: nothing to draw
    tracker.entered()
    now[0] += 3
    tracker.output(b"\r\n$ ")
    assert tracker.echo_delay == 0.0


async def test_a_denial_the_shell_does_not_redraw_after_gives_the_prompt_back() -> None:
    """Ctrl-X Ctrl-E on an empty line: nothing reaches the shell, so it draws nothing; the user
    sees why the key did not run, then their prompt again where the shell's cursor is."""
    stage, session, log = shell_stage()
    stage.on_target_output(b"\x1b[32mdb-1\x1b[0m$ ", Stream.STDOUT)
    assert stage.on_input(b"\x18\x05") == b""
    await until(lambda: any(b"bastion: " in line for line in session.client), "the bastion's answer")
    assert session.target == []
    assert session.client[-1] == b"db-1$ ", session.client
    [decision] = decisions(log)
    assert decision["action"] != "allow" and decision["unsure"] is True


async def test_enter_at_a_password_prompt_goes_through_at_once() -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"sudo -k true")  # something in the foreground may ask
    stage.on_target_output(b"[sudo] password for alice: ", Stream.STDOUT)
    assert stage.on_input(b"hunter2") == b"hunter2"
    assert stage.on_input(b"\r") == b""
    await until(lambda: len(session.target) > 1, "the Enter released: the keys never echoed")
    assert session.target[1:] == [b"\r"]
    assert [d["command"] for d in decisions(log)] == ["sudo -k true"]


async def test_secrets_typed_or_pasted_are_recorded_masked() -> None:
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    stage = RecordingStage(recorder, RecordingSettings(), AuditLog(io.StringIO(), masker=MASKER), text_masker=MASKER,
                           input_masker=MaskingSettings().make_masker())
    stage.start(SHELL, Session())
    typed = f"git remote add x https://{GH}@example.com/a.git\r".encode()
    for key in typed:  # typed by hand: one key per read, each echoed; the token is still seen whole
        assert stage.on_input(bytes([key])) == bytes([key])  # the target gets every key unchanged
        stage.on_output(bytes([key]) if key != 13 else b"\r\n$ ", Stream.STDOUT)
    text = f"aws_secret_access_key = {AWS_SECRET}"
    pasted = f"\x1b[200~{text}\x1b[201~".encode()
    assert stage.on_input(pasted) == pasted
    stage.on_output(text.encode(), Stream.STDOUT)
    stage.on_input(b"\r")
    stage.on_output(b"\r\n$ ", Stream.STDOUT)
    stage.on_input(b"1234")
    stage.on_output(b"1234", Stream.STDOUT)  # recorded only at the end: it could be a card number
    rec = stage.recording
    assert rec is not None
    stage.on_end(0, None)
    recorder.stop()
    cast = load_cast(recorder.store.read(rec.name)[0])
    recorded = cast.input_bytes()
    assert GH[4:].encode() not in recorded and AWS_SECRET.encode() not in recorded
    assert recorded.startswith(b"git remote add x https://ghp_****") and recorded.endswith(b"\r1234")
    assert len(recorded) == len(typed + pasted + b"\r1234")
    assert {"masked: github-token (input)", "masked: aws-secret-access-key (input)"} <= set(cast.markers())
    assert not any(m.startswith("hidden-input") for m in cast.markers())


def test_a_file_sent_on_stdin_is_recorded_masked() -> None:
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    stage = RecordingStage(recorder, RecordingSettings(), AuditLog(io.StringIO(), masker=MASKER), text_masker=MASKER,
                           input_masker=MaskingSettings().make_masker())
    stage.start(replace(SHELL, kind=SessionKind.EXEC, command="cat > .env", term_type=None), Session())
    sent = f"GITHUB_TOKEN={GH}\nPORT=8080\n".encode()
    for at in range(0, len(sent), 7):  # nothing echoes without a terminal: recorded as it comes
        stage.on_input(sent[at:at + 7])
    rec = stage.recording
    assert rec is not None
    stage.on_end(0, None)
    recorder.stop()
    cast = load_cast(recorder.store.read(rec.name)[0])
    assert cast.input_bytes() == b"GITHUB_TOKEN=" + b"*" * len(GH) + b"\nPORT=8080\n"


@pytest.mark.parametrize("command", ["", "   ", "\t"])
def test_a_blank_exec_command_is_recorded_and_not_taken_for_scp(command: str) -> None:
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    stage = RecordingStage(recorder, RecordingSettings(), AuditLog(io.StringIO(), masker=MASKER),
                           text_masker=MASKER)
    stage.start(replace(SHELL, kind=SessionKind.EXEC, command=command, term_type=None), Session())
    assert stage.recording is not None
    stage.on_end(0, None)
    recorder.stop()
    assert transfer_of(SessionKind.EXEC, command) is None


@pytest.mark.parametrize(("kind", "command", "subsystem", "transfer"), [
    (SessionKind.SUBSYSTEM, None, "sftp", Transfer.SFTP),
    (SessionKind.EXEC, "scp -t /tmp", None, Transfer.SCP),
    (SessionKind.EXEC, "scp -r -f 'my files'", None, Transfer.SCP),
    (SessionKind.EXEC, "/usr/bin/scp -t .", None, Transfer.SCP),
    (SessionKind.EXEC, "  scp -f x", None, Transfer.SCP),
    (SessionKind.EXEC, "rsync --server -vlogDtpre.iLsfxCIvu . /srv/", None, Transfer.RSYNC),
    (SessionKind.EXEC, "rsync --server --sender -vlogDtpre.iLsfxCIvu . /srv/", None, Transfer.RSYNC),
    (SessionKind.EXEC, "scp a b", None, None),  # an scp run on the target: its own client, a terminal's output
    (SessionKind.EXEC, "rsync -a /src/ /dst/", None, None),
    (SessionKind.EXEC, "echo scp -t", None, None),
    (SessionKind.EXEC, "", None, None),
    (SessionKind.SHELL, "scp -t /tmp", None, None),
    (SessionKind.SUBSYSTEM, None, "other", None),
])
def test_which_sessions_are_file_transfers(kind: SessionKind, command: str | None, subsystem: str | None,
                                           transfer: Transfer | None) -> None:
    assert transfer_of(kind, command, subsystem) is transfer
    info = replace(SHELL, kind=kind, command=command, subsystem=subsystem, term_type=None)
    assert info.transfer is transfer


def test_an_rsync_session_is_recorded_as_a_transfer_not_as_terminal_output() -> None:
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    stage = RecordingStage(recorder, RecordingSettings(), AuditLog(io.StringIO(), masker=MASKER), text_masker=MASKER,
                           input_masker=MaskingSettings().make_masker())
    command = "rsync --server -vlogDtpre.iLsfxCIvu . /srv/backup/"
    stage.start(replace(SHELL, kind=SessionKind.EXEC, command=command, term_type=None), Session())
    contents = f"GITHUB_TOKEN={GH}\n".encode()
    assert stage.on_input(b"\x1f\x00\x00\x00" + contents) == b"\x1f\x00\x00\x00" + contents
    assert stage.on_output(b"\x1f\x00\x00\x00" + contents, Stream.STDOUT) == b"\x1f\x00\x00\x00" + contents
    rec = stage.recording
    assert rec is not None
    stage.on_end(0, None)
    recorder.stop()
    cast = load_cast(recorder.store.read(rec.name)[0])
    assert cast.input_bytes() == b"" and cast.output_bytes() == b""
    assert not any(m.startswith("hidden-input") for m in cast.markers())


async def test_a_huge_command_is_decided_whole_and_stored_bounded(tmp_path: Path) -> None:
    log, store = io.StringIO(), live_store(tmp_path / "state.db", masker=MASKER)
    huge = "echo " + "x" * (256 << 10)  # far beyond what is stored (the issue had 4 MiB)
    stage, session = ScreeningStage(ScreeningContext(RulesHolder(RULES), store, AuditLog(log, masker=MASKER), MASKER)), MarkedSession()
    denied = replace(SHELL, kind=SessionKind.EXEC, command=f"{huge} forbidden", term_type=None)
    stage.start(denied, session)
    assert "no-forbidden" in str(await stage.gate(denied, session))  # the rule matched the line's end
    stage, session = ScreeningStage(ScreeningContext(RulesHolder(RULES), store, AuditLog(log, masker=MASKER), MASKER)), MarkedSession()
    held = replace(denied, command=f"{huge} needs-approval")
    stage.start(held, session)
    gate = asyncio.get_running_loop().create_task(stage.gate(held, session))
    await until(store.pending, "the approval request")
    stage.on_end(None, None)
    assert "cancelled" in str(await gate)
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert {e["event"] for e in events} == {"command_decision", "approval_requested", "approval_cancelled"}
    assert all(len(line) < 4096 for line in log.getvalue().splitlines())
    for event, command in zip(events, [denied.command, held.command, held.command], strict=False):
        assert event["command_length"] == len(command)
        assert event["command_sha256"] == hashlib.sha256(command.encode()).hexdigest()
    [request] = store.recent(10)
    assert len(request.command) + len(request.screen) < 4096
    assert request.command_hash == hashlib.sha256(held.command.encode()).hexdigest()
    assert session.markers and all(len(marker) < 2048 for marker in session.markers)


class EndingSession(Session):
    def __init__(self) -> None:
        super().__init__()
        self.ended = ""

    def end(self, reason: str) -> None:
        self.ended = reason


def stage_for(session: Session) -> tuple[ScreeningStage, io.StringIO]:
    log = io.StringIO()
    stage = ScreeningStage(ScreeningContext(RulesHolder(RULES), None, AuditLog(log, masker=MASKER), MASKER))
    stage.start(SHELL, session)
    return stage, log


@pytest.mark.parametrize("setup", [b"stty -echo; PS1='Password: '", b"set +o emacs +o vi; PS1='Password: '",
                                   b"cat /dev/null; PS1='Password: '"])
async def test_a_prompt_that_looks_like_a_password_prompt_is_screened(setup: bytes) -> None:
    """Only a program the last line started can be asking: a shell's own prompt never is."""
    stage, session, log = shell_stage()
    await run_line(stage, session, setup)
    stage.on_target_output(b"Password: ", Stream.STDOUT)
    assert stage.on_input(b"touch forbidden") == b"touch forbidden"  # typed without an echo
    assert stage.on_input(b"\r") == b""
    await until(lambda: len(session.target) > 1, "a decision")
    assert session.target[1:] == [b"\x03"]
    assert decisions(log)[-1]["action"] == "deny"


async def test_several_lines_in_one_write_are_each_decided_from_the_screen() -> None:
    """Ctrl-A in an unbracketed paste moves the cursor: the keys alone do not tell the line."""
    stage, session, log = shell_stage()
    stage.on_target_output(b"$ ", Stream.STDOUT)
    assert stage.on_input(b" forbidden\x01touch\recho two\r") == b" forbidden\x01touch"
    stage.on_target_output(b"\r$ touch forbidden", Stream.STDOUT)  # readline's redraw
    await until(lambda: session.target, "the first line decided")
    assert session.target == [b"\x03"]  # interrupted; the second line waits for the prompt
    stage.on_target_output(b"^C\r\n$ ", Stream.STDOUT)
    await until(lambda: len(session.target) > 1, "the second line forwarded")
    assert session.target[1] == b"echo two"
    stage.on_target_output(b"echo two", Stream.STDOUT)
    await until(lambda: len(session.target) > 2, "the second line released")
    assert session.target[2] == b"\r"
    assert [(d["command"], d["action"]) for d in decisions(log)] == [("touch forbidden", "deny"),
                                                                     ("echo two", "allow")]


async def test_a_paste_with_control_characters_is_unsure() -> None:
    stage, _session, log = shell_stage()
    stage.on_target_output(b"$ ", Stream.STDOUT)
    pasted = b"\x1b[200~touch forbidden #\x15\necho pasted\x1b[201~"
    assert stage.on_input(pasted) == pasted
    stage.on_target_output(b"touch forbidden #^U\r\n> echo pasted", Stream.STDOUT)
    stage.on_input(b"\r")
    await until(lambda: decisions(log), "a decision")
    decision = decisions(log)[0]
    assert decision["unsure"] and "control characters" in str(decision["why"])


def test_an_edited_multi_line_paste_is_unsure() -> None:
    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"$ ")
    tracker.typed(b"echo a\nforbidden\x1b[D")
    tracker.output(b"echo a\r\n> forbidden")
    line = tracker.submitted()
    assert line.unsure and "multi-line" in line.why


async def test_backspace_may_be_a_character_of_the_line_in_cooked_mode() -> None:
    """`stty -echoctl` with erase on DEL: ^H stays in the line, and `#` no longer starts a comment."""
    stage, session, log = shell_stage()
    stage.on_target_output(b"$ ", Stream.STDOUT)
    keys = b"echo x\x08# ; touch forbidden"
    assert stage.on_input(keys + b"\r") == keys
    stage.on_target_output(keys, Stream.STDOUT)  # the terminal moves back: the screen shows `echo #`
    await until(lambda: session.target, "a decision")
    assert session.target == [b"\x03"]
    assert [d["action"] for d in decisions(log)] == ["allow", "deny"]  # the literal reading is stricter


def test_output_that_overwrites_an_edited_line_makes_it_unsure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linetrack, "EDIT_QUIET", 0.05)
    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"P> ")
    tracker.typed(b"touch forbidden")
    tracker.output(b"touch forbidden")
    time.sleep(0.1)
    tracker.output(b"\r\x1b[KP> echo harmless")  # a background job draws a fake line
    line = tracker.submitted()
    assert line.unsure and "typing did not cause" in line.why
    tracker.entered()
    # Keys typed ahead of a prompt echo late, with the prompt: not a doubt.
    tracker.output(b"\r\n")
    tracker.typed(b"ls")
    tracker.output(b"ls")
    time.sleep(0.1)
    tracker.output(b"\r\nP> ls")
    assert not tracker.submitted().unsure
    tracker.entered()
    # Overwritten within a second of the last key, then moved over: the keys and the screen
    # no longer hold the same characters.
    tracker.output(b"\r\nP> ")
    tracker.typed(b"touch forbidden")
    tracker.output(b"touch forbidden")
    tracker.typed(b"\x1b[D\x1b[C")
    tracker.output(b"\r\x1b[KP> echo harmless")
    line = tracker.submitted()
    assert line.unsure and "disagree" in line.why


async def test_a_denied_line_ends_the_session_once_ctrl_c_is_trapped() -> None:
    session = EndingSession()
    stage, _ = stage_for(session)
    await run_line(stage, session, b"trap '' INT")
    stage.on_target_output(b"$ ", Stream.STDOUT)
    stage.on_input(b"touch forbidden\r")
    stage.on_target_output(b"touch forbidden", Stream.STDOUT)
    await until(lambda: session.ended, "the session ended")
    assert "trap" in session.ended and b"\x03" not in session.target


async def test_ctrl_c_keeps_a_continued_command_once_it_is_trapped() -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"trap '' INT")
    await run_line(stage, session, b"if true; then")
    stage.on_target_output(b"> ", Stream.STDOUT)
    assert stage.on_input(b"\x03") == b"\x03"
    await run_line(stage, session, b"echo x; fi", prompt=b"^C> ")
    assert decisions(log)[-1]["command"] == "if true; then\necho x; fi"


@pytest.mark.parametrize("launch", [b"git --version; printf '\\033[?1049h'", b"printf '\\033[?1049h'; vim -u NONE"])
async def test_the_alternate_screen_is_exempt_only_for_full_screen_programs(launch: bytes) -> None:
    stage, session, _log = shell_stage()
    await run_line(stage, session, launch)
    stage.on_target_output(b"\x1b[?1049h$ ", Stream.STDOUT)
    assert stage.on_input(b"touch forbidden\r") == b"touch forbidden"
    stage.on_target_output(b"touch forbidden", Stream.STDOUT)
    await until(lambda: len(session.target) > 1, "a decision")
    assert session.target[1] == b"\x03"


@pytest.mark.parametrize(("row", "command", "unsure"), [
    (":!touch forbidden", "touch forbidden", False),
    (":sil !touch forbidden", "touch forbidden", False),
    (":silent! !touch forbidden #!", "touch forbidden #!", True),
    (":.!sort", "sort", False),
    (":r !date", ":r !date", True),
    (":w !sh", ":w !sh", True),
    (":terminal rm -rf x", ":terminal rm -rf x", True),
    (":call system('rm -rf x')", ":call system('rm -rf x')", True),
    ("=systemlist('id')", "=systemlist('id')", True),
    (":exe 'sil !rm -rf x'", ":exe 'sil !rm -rf x'", True),
    (":py3 import os", ":py3 import os", True),
    (":set shell=/tmp/x", ":set shell=/tmp/x", True),
    (":make", ":make", True),
    ("!touch forbidden", "touch forbidden", False),
    ("!!", None, False),
    ("|arm -rf x", "rm -rf x", False),
    (":q!", None, False),
    (":w", None, False),
    (":e foo.py", None, False),
    ("/forbidden", None, False),
])
def test_a_programs_way_into_a_shell(row: str, command: str | None, unsure: bool) -> None:
    found, why = screening._program_command(row)
    assert (found, bool(why)) == (command, unsure)


@pytest.mark.parametrize(("keys", "drawn"), [(b":sil !touch forbidden\n", b":sil !touch forbidden"),
                                             (b":call system('touch x')\r", b":call system('touch x')")])
async def test_vim_shell_commands_are_screened_whatever_the_submit_key(keys: bytes, drawn: bytes) -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"vim notes")
    stage.on_target_output(b"\x1b[?1049h", Stream.STDOUT)
    assert stage.on_input(keys) == keys[:-1]  # the submit key waits for the program's echo
    stage.on_target_output(b"\x1b[24;1H" + drawn, Stream.STDOUT)
    await until(lambda: any(b"bastion: " in line for line in session.client), "the denial shown")
    assert decisions(log)[-1]["action"] in ("deny", "approve")
    await asyncio.sleep(0.1)
    assert session.target[1:] == []  # the program never gets the submit key


async def test_vim_shell_without_arguments_ends_the_exemption() -> None:
    stage, session, _ = shell_stage()
    await run_line(stage, session, b"vim notes")
    stage.on_target_output(b"\x1b[?1049h\x1b[24;1H:terminal", Stream.STDOUT)
    assert stage.on_input(b"\r") == b""
    await until(lambda: session.target[1:] == [b"\r"], "the Enter released")
    assert stage.on_input(b"touch forbidden\r") == b"touch forbidden"  # a shell now: screened


async def test_a_program_line_typed_with_its_enter_in_one_write_is_read_once_drawn() -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"vim notes")
    stage.on_target_output(b"\x1b[?1049h\x1b[24;1H", Stream.STDOUT)
    assert stage.on_input(b":!touch forbidden\r:q\r") == b":!touch forbidden"
    stage.on_target_output(b":!touch forbidden", Stream.STDOUT)
    await until(lambda: any(b"bastion: " in line for line in session.client), "the denial shown")
    await until(lambda: session.target[1:] == [b":q"], "what followed, screened in turn")
    stage.on_target_output(b"\x1b[24;1H:!touch forbidden:q", Stream.STDOUT)  # still the same command line
    await asyncio.sleep(0.2)
    assert session.target[1:] == [b":q"]
    assert [d["action"] for d in decisions(log)][-2:] == ["deny", "deny"]


async def test_rebound_keys_are_unsure() -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"bind '\"\\C-g\": edit-and-execute-command'")
    stage.on_target_output(b"$ ", Stream.STDOUT)
    assert stage.on_input(b"echo x\x07") == b"echo x"
    stage.on_target_output(b"echo x", Stream.STDOUT)
    await until(lambda: len(decisions(log)) > 1, "a decision")
    assert decisions(log)[-1]["unsure"] and "rebound" in str(decisions(log)[-1]["why"])


async def test_a_rebound_key_on_an_empty_line_is_unsure() -> None:
    stage, session, log = shell_stage()
    await run_line(stage, session, b"bind -x '\"\\C-g\": true'")
    stage.on_target_output(b"$ ", Stream.STDOUT)
    assert stage.on_input(b"\x07") == b""
    await until(lambda: len(decisions(log)) > 1, "a decision")
    assert decisions(log)[-1]["unsure"]


@pytest.mark.parametrize("sequence", [b"\x1b[>4;2m", b"\x1b[?4m", b"\x1b[?1A", b"\x1b[?5;5H", b"\x1b[?r",
                                      b"\x1b[?1g", b"\x1b[?6n", b"\x1b[?3@", b"\x1b[?2K", b"\x1b[?1049h"])
def test_private_csi_sequences_do_not_break_the_tracker(sequence: bytes) -> None:
    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"$ " + sequence)
    tracker.typed(b"ls")
    tracker.output(b"ls")
    assert tracker.submitted().text == "ls"
    assert tracker.cursor_row().endswith("ls")


async def test_a_line_in_doubt_that_reads_empty_on_screen_is_still_decided() -> None:
    """Output that typing did not cause cleared the row: the screen says "nothing", the shell
    holds the keys. The keys are a reading of the line too; it is not released unscreened."""
    session = EndingSession()
    stage, log = stage_for(session)
    stage.on_target_output(b"$ ", Stream.STDOUT)
    assert stage.on_input(b"touch forbidden") == b"touch forbidden"
    stage.on_target_output(b"touch forbidden", Stream.STDOUT)
    assert stage.on_input(b"\x1b[D") == b"\x1b[D"
    stage.on_target_output(b"\x08\r\x1b[K$ ", Stream.STDOUT)  # drawn by something else
    assert stage.on_input(b"\r") == b""
    await until(lambda: b"\x03" in session.target, "the line interrupted")
    assert any(d["action"] == "deny" and d["unsure"] for d in decisions(log))
    assert b"\r" not in session.target


def test_keys_typed_ahead_without_line_editing_echo_before_the_prompt() -> None:
    """Cooked mode: the terminal echoes typed-ahead keys at once, the shell's prompt follows. A
    key binding the bastion never saw could have drawn the same: the line is unsure."""
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"$ sleep 1\r\n")
    tracker.typed(b"echo hi")
    now[0] += 0.01
    tracker.output(b"echo hi$ ")
    now[0] += linetrack.SETTLE_QUIET
    assert tracker.echoed()
    assert tracker.submitted().unsure


def test_keys_typed_before_the_previous_enter_echoed_are_typed_ahead() -> None:
    """Keys that reach the bastion before the echo of the previous Enter start on that row."""
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"# ")
    tracker.typed(b"PS1=x")
    tracker.output(b"PS1=x")
    tracker.entered()
    tracker.typed(b"echo hi")  # before the terminal echoed the Enter
    now[0] += 0.01
    tracker.output(b"\r\necho hi$ ")
    now[0] += linetrack.SETTLE_QUIET
    assert tracker.echoed()  # the wait ends ...
    assert tracker.submitted().unsure  # ... and what the line holds cannot be read


def test_text_a_line_editor_holds_after_typed_ahead_keys_is_not_ignored() -> None:
    """A widget that fills the line and leaves the cursor before the text (zsh's zle-line-init
    with CURSOR=0): the keys come first on screen, but the line runs what follows them too."""
    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"\r\n")
    tracker.typed(b"echo hi")
    tracker.output(b"echo hi; rm -rf /x\r\x1b[7C")
    line = tracker.submitted()
    assert line.unsure, line


def test_text_after_typed_ahead_keys_that_looks_like_a_prompt_is_not_taken_for_one() -> None:
    """A macro from an .inputrc the bastion never saw appends a command and a `#`."""
    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"$ sleep 1\r\n")
    tracker.typed(b"echo hi")
    tracker.output(b"echo hi; rm -rf /x #")
    assert tracker.submitted().unsure


def test_typed_ahead_keys_after_the_previous_output() -> None:
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"$ echo two")
    tracker.typed(b"echo two")
    tracker.entered()
    tracker.typed(b"echo three")  # before the Enter's echo: the command's output comes first
    now[0] += 0.01
    tracker.output(b"\r\ntwo\r\necho three$ ")
    assert not tracker.echoed()  # a line editor may still draw the keys after its prompt
    now[0] += linetrack.SETTLE_QUIET
    assert tracker.echoed()
    assert tracker.submitted().unsure


def test_typed_ahead_keys_the_terminal_never_echoed() -> None:
    """Keys that came while a leaving line editor had echo off: the new shell's prompt only."""
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.output(b"$ exec sh")
    tracker.typed(b"exec sh")
    tracker.entered()
    tracker.typed(b"PS1=x")
    assert not tracker.echoed()
    now[0] += 0.01
    tracker.output(b"\r\n# ")
    now[0] += linetrack.SETTLE_QUIET
    assert tracker.echoed()
    assert tracker.submitted().unsure


def test_keys_typed_ahead_that_a_line_editor_draws_after_its_prompt_are_read_as_typed() -> None:
    """The terminal echoed the keys while the shell started; then bash prompts and readline
    draws them again, a write later (a loaded machine: much later). That line is certain."""
    now = [10.0]
    tracker = LineTracker(80, 24, clock=lambda: now[0])
    tracker.typed(b"PS1=x")
    now[0] += 0.1
    tracker.output(b"PS1=xLast login: today\r\nroot@db-1:~# ")
    now[0] += linetrack.SETTLE_QUIET / 2
    assert not tracker.echoed()
    tracker.output(b"PS1=x")
    assert tracker.echoed()
    line = tracker.submitted()
    assert (line.text, line.unsure) == ("PS1=x", False)


def test_masking_the_recording_only_follows_the_screen_too() -> None:
    """sinks = "recording": the user sees the real output, the recording is masked, and its
    masker follows the pty's rows as the user's does (a secret drawn backwards is masked)."""
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    log = io.StringIO()
    stage = RecordingStage(recorder, RecordingSettings(), AuditLog(log, masker=MASKER), text_masker=MASKER,
                           masker=MaskingSettings().make_masker())
    stage.start(SHELL, Session())
    second, first = GH[20:], GH[:20]
    drawn = f"id=\x1b[{3 + len(first) + 1}G{second}\rid={first}\x1b[{3 + len(GH) + 1}G end\r\n".encode()
    assert stage.on_output(drawn, Stream.STDOUT) == drawn  # the user's copy is untouched
    rec = stage.recording
    assert rec is not None
    stage.on_end(0, None)
    recorder.stop()
    cast = load_cast(recorder.store.read(rec.name)[0])
    screen = pyte.Screen(80, 24)
    pyte.ByteStream(screen).feed(cast.output_bytes())
    assert screen.display[0].startswith("id=ghp_" + "*" * (len(GH) - 4) + " end")
    assert "masked: github-token" in cast.markers()
