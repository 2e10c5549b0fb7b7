"""The audit log's lines: each event defined once, written as the tests and operators read it."""

from __future__ import annotations

import io
import json

from bastion.core.masker import TextMasker
from bastion.core.rules import Action
from bastion.core.stored import HEAD, stored_command
from bastion.state import events
from bastion.state.audit import AuditLog
from recorder.log import RECORDER_EVENTS, IndexFailed, LogEvent, RecordingFailure
from recorder.messages import Log
from recorder.signing import RecordingKey
from recorder.transfers import SessionKind
from recorder.writer import Recorder
from tests.support.memory import MemoryStore

MASKER = TextMasker()


def written(event: LogEvent) -> dict[str, object]:
    stream = io.StringIO()
    AuditLog(stream, masker=MASKER).write(event)
    [line] = stream.getvalue().splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


def every_event() -> list[type[LogEvent]]:
    found, todo = [], [LogEvent]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if "name" in vars(sub):
                found.append(sub)
    return found


def test_every_event_has_a_name_of_its_own() -> None:
    names = [event.name for event in every_event()]
    assert len(names) == len(set(names)) and len(names) > 40
    assert {"command_decision", "session_ended", "recording_failed", "approval_cancelled"} <= set(names)
    assert all(name.islower() and " " not in name for name in names)


def test_fields_keep_their_order_and_none_is_left_out() -> None:
    line = written(events.UpstreamFailed(error="upstream_auth", reason="refused", user="alice", target="db-1",
                                         login="root", session="S1"))
    assert list(line) == ["ts", "event", "error", "reason", "user", "target", "login", "session"]
    assert line["event"] == "upstream_failed" and "hint" not in line


def test_a_stored_command_is_written_with_its_length_and_hash_when_cut() -> None:
    command = "echo " + "x" * HEAD + " --password=S3cretPassw0rd"
    line = written(events.CommandDecision(
        session="S1", user="alice", target="db-1", login="root", kind="shell",
        command=stored_command(command, MASKER), action=Action.DENY, rule="no-echo",
        part=stored_command("rm -rf /", MASKER), unsure=None))
    assert list(line) == ["ts", "event", "session", "user", "target", "login", "kind", "command", "command_length",
                          "command_sha256", "action", "rule", "part"]
    assert line["command_length"] == len(command) and len(str(line["command"])) == HEAD
    assert (line["action"], line["part"]) == ("deny", "rm -rf /")


def test_commands_are_masked_in_every_event() -> None:
    line = written(events.SessionEnded(session="S1", user="alice", target="db-1", login="root", kind=SessionKind.EXEC,
                                       command="mysql --password=S3cretPassw0rd", key_id="k", bytes_in=0,
                                       bytes_out=0, duration=0.0, markers={"denied": 1}))
    assert "S3cret" not in json.dumps(line) and line["markers"] == {"denied": 1}


def test_a_wait_for_approval_ends_with_the_event_of_its_state() -> None:
    ended = {state: event(request="7F3A1B", session="S1").name for state, event in events.APPROVAL_ENDED.items()}
    assert ended == {"approved": "approval_approved", "denied": "approval_denied",
                     "expired": "approval_expired", "cancelled": "approval_cancelled"}


def test_the_recorders_events_cross_from_its_writer_by_name() -> None:
    event = RecordingFailure(session="S1", reason="disk full")
    assert RECORDER_EVENTS[event.name](**event.fields()) == event
    heard: list[LogEvent] = []
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), log=heard.append)
    recorder._reply(Log("index_failed", {"session": "S1", "reason": "locked"}))
    assert heard == [IndexFailed(session="S1", reason="locked")]
    assert written(heard[0])["event"] == "index_failed"
