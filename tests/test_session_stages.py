"""Session stages against a stand-in for their session: the screener at Enter, the recorder's
input masking. The e2e tests drive the same stages through real OpenSSH and bash."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bastion import screening
from bastion.approvals import ApprovalStore
from bastion.audit import AuditLog
from bastion.masking import MaskingSettings
from bastion.pipeline import SessionInfo, SessionStage, Stream
from bastion.recording import RecordingPolicy, RecordingStage
from bastion.rules import RulesHolder, parse_rules
from bastion.screening import ScreeningContext, ScreeningStage
from recorder.asciicast import load_cast
from recorder.signing import RecordingKey
from recorder.testing import MemoryStore
from recorder.writer import Recorder
from tests.test_masker import AWS_SECRET, GH

RULES = parse_rules({
    "rule": [{"name": "no-forbidden", "action": "deny", "command": "forbidden"},
             {"name": "needs-approval", "action": "approve", "command": "needs-approval",
              "approvers": ["dba"]}],
})


class Session:
    """Collects what the stage sends either way."""

    def __init__(self) -> None:
        self.target: list[bytes] = []
        self.client: list[bytes] = []

    def to_target(self, data: bytes) -> None:
        self.target.append(data)

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.client.append(data)

    def end(self, reason: str) -> None:
        raise AssertionError(f"ended: {reason}")

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        raise AssertionError("the screener holds no output")

    def marker(self, kind: str, text: str = "") -> None:
        pass

    def hold_output(self, reason: str) -> None:
        pass

    def release_output(self, reason: str) -> None:
        pass

    def hold_input(self, reason: str) -> None:
        pass

    def release_input(self, reason: str) -> None:
        pass

    def input_eof(self) -> None:
        self.target.append(b"<EOF>")


async def until(probe: Callable[[], object], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def decisions(log: io.StringIO) -> list[dict[str, object]]:
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    return [e for e in events if e["event"] == "command_decision"]


SHELL = SessionInfo(session_id="s1", channel=0, user="alice", target="db-1", login="root",
                    client_address="127.0.0.1", client_version="SSH-2.0-test", kind="shell",
                    term_type="xterm", width=80, height=24)


def shell_stage() -> tuple[ScreeningStage, Session, io.StringIO]:
    log = io.StringIO()
    stage = ScreeningStage(ScreeningContext(RulesHolder(RULES), None, AuditLog(log)))
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


async def test_enter_at_a_password_prompt_goes_through_at_once() -> None:
    stage, session, log = shell_stage()
    stage.on_target_output(b"[sudo] password for alice: ", Stream.STDOUT)
    assert stage.on_input(b"hunter2") == b"hunter2"
    assert stage.on_input(b"\r") == b""
    await until(lambda: session.target, "the Enter released: the keys never echoed")
    assert session.target == [b"\r"]
    assert decisions(log) == []


async def test_secrets_typed_or_pasted_are_recorded_masked() -> None:
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    stage = RecordingStage(recorder, RecordingPolicy(), AuditLog(io.StringIO()),
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
    stage = RecordingStage(recorder, RecordingPolicy(), AuditLog(io.StringIO()),
                           input_masker=MaskingSettings().make_masker())
    stage.start(replace(SHELL, kind="exec", command="cat > .env", term_type=None), Session())
    sent = f"GITHUB_TOKEN={GH}\nPORT=8080\n".encode()
    for at in range(0, len(sent), 7):  # nothing echoes without a terminal: recorded as it comes
        stage.on_input(sent[at:at + 7])
    rec = stage.recording
    assert rec is not None
    stage.on_end(0, None)
    recorder.stop()
    cast = load_cast(recorder.store.read(rec.name)[0])
    assert cast.input_bytes() == b"GITHUB_TOKEN=" + b"*" * len(GH) + b"\nPORT=8080\n"


class MarkedSession(Session):
    def __init__(self) -> None:
        super().__init__()
        self.markers: list[str] = []

    def marker(self, kind: str, text: str = "") -> None:
        self.markers.append(f"{kind}: {text}")


async def test_a_huge_command_is_decided_whole_and_stored_bounded(tmp_path: Path) -> None:
    log, store = io.StringIO(), ApprovalStore(tmp_path / "state.db")
    huge = "echo " + "x" * (256 << 10)  # far beyond what is stored (the issue had 4 MiB)
    stage, session = ScreeningStage(ScreeningContext(RulesHolder(RULES), store, AuditLog(log))), MarkedSession()
    denied = replace(SHELL, kind="exec", command=f"{huge} forbidden", term_type=None)
    stage.start(denied, session)
    assert "no-forbidden" in str(await stage.gate(denied, session))  # the rule matched the line's end
    stage, session = ScreeningStage(ScreeningContext(RulesHolder(RULES), store, AuditLog(log))), MarkedSession()
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
