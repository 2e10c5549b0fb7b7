"""The sftp gate without sockets: the wire format, the rules' sftp keys, and the stage against a
stand-in for its session. tests/test_sftp_gate_e2e.py drives the same through real OpenSSH."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.masker import TextMasker
from bastion.core.rules import CommandRequest, RuleSet, parse_rules
from bastion.errors import ConfigError
from bastion.rules_file import RulesHolder, load_rules
from bastion.stages import decisions as decisions_module
from bastion.stages.pipeline import SessionInfo, SessionPipeline, SessionStage, StageFailed, Stream
from bastion.stages.screening import ScreeningContext
from bastion.stages.sftpgate import SftpGateStage, normal_path
from bastion.state.approvals import ApprovalStore, Decision
from bastion.state.audit import AuditLog
from recorder import sftp
from recorder.sftp import PacketFramer, SftpProtocolError, parse_request, status_packet
from recorder.transfers import SessionKind, SftpTransferParser
from tests.support.lab import until
from tests.support.stores import live_store

MASKER = TextMasker()  # the built-in detectors

# -- building packets -----------------------------------------------------------------------


def field(value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return struct.pack(">I", value)
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def packet(kind: int, *fields: int | bytes | str) -> bytes:
    body = bytes([kind]) + b"".join(field(f) for f in fields)
    return struct.pack(">I", len(body)) + body


def opening(request_id: int, path: str, flags: int) -> bytes:
    return packet(sftp.OPEN, request_id, path, flags, 0)  # attrs: no flags


def extended(request_id: int, name: str, *fields: int | bytes | str) -> bytes:
    return packet(sftp.EXTENDED, request_id, name, *fields)


def read_status(data: bytes) -> tuple[int, int, str]:
    assert data[4] == sftp.STATUS
    request_id, code, length = struct.unpack_from(">III", data, 5)
    return request_id, code, data[17:17 + length].decode()


# -- the wire format ------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "operation", "paths"), [
    (opening(1, "/etc/hosts", sftp.FXF_READ), "read", ("/etc/hosts",)),
    (opening(1, "/tmp/x", sftp.FXF_WRITE | sftp.FXF_CREAT | sftp.FXF_TRUNC), "write", ("/tmp/x",)),
    (opening(1, "/tmp/x", sftp.FXF_READ | sftp.FXF_APPEND), "write", ("/tmp/x",)),
    (packet(sftp.REMOVE, 1, "/tmp/x"), "remove", ("/tmp/x",)),
    (packet(sftp.RMDIR, 1, "/tmp/d"), "rmdir", ("/tmp/d",)),
    (packet(sftp.MKDIR, 1, "/tmp/d", 0), "mkdir", ("/tmp/d",)),
    (packet(sftp.RENAME, 1, "/a", "/b"), "rename", ("/a", "/b")),
    (extended(1, "posix-rename@openssh.com", "/a", "/b"), "rename", ("/a", "/b")),
    (packet(sftp.SYMLINK, 1, "/a", "/b"), "symlink", ("/a", "/b")),
    (extended(1, "hardlink@openssh.com", "/a", "/b"), "link", ("/a", "/b")),
    (packet(sftp.SETSTAT, 1, "/a", 0), "setstat", ("/a",)),
    (extended(1, "lsetstat@openssh.com", "/a", 0), "setstat", ("/a",)),
    (packet(sftp.OPENDIR, 1, "/tmp"), "list", ("/tmp",)),
    # No decision of their own: metadata, and work on handles whose opening was decided.
    (packet(sftp.STAT, 1, "/etc/shadow"), "", ("/etc/shadow",)),
    (packet(sftp.REALPATH, 1, "."), "", (".",)),
    (packet(sftp.WRITE, 1, b"h", 0, 0, b"data"), "", ()),
    (packet(sftp.CLOSE, 1, b"h"), "", ()),
    (extended(1, "statvfs@openssh.com", "/"), "", ("/",)),
    (extended(1, "limits@openssh.com"), "", ()),
    # What the gate cannot read with certainty.
    (extended(1, "copy-file@example.com", "/a", "/b"), "extended", ()),
    (packet(99, 1, "/a"), "unknown", ()),
])
def test_requests_and_their_operations(data: bytes, operation: str, paths: tuple[str, ...]) -> None:
    request = parse_request(data)
    assert (request.id, request.operation, request.paths, request.malformed) == (1, operation, paths, False)


def test_fsetstat_and_handles() -> None:
    request = parse_request(packet(sftp.FSETSTAT, 7, b"\x00\x01", 0))
    assert (request.operation, request.handle, request.paths) == ("setstat", b"\x00\x01", ())


def test_init_has_no_request_id() -> None:
    assert parse_request(packet(sftp.INIT, 3)) == sftp.SftpRequest(sftp.INIT, None)


def test_cut_requests_are_malformed_and_assume_the_stronger_operation() -> None:
    cut_open = packet(sftp.OPEN, 1, "/tmp/x")  # no flags
    assert (parse_request(cut_open).operation, parse_request(cut_open).malformed) == ("write", True)
    lying = struct.pack(">IBII", 9, sftp.REMOVE, 1, 1000)  # a path longer than the packet
    assert parse_request(lying).malformed and parse_request(lying).operation == "remove"
    cut_name = struct.pack(">IBII", 9, sftp.EXTENDED, 1, 50)
    assert parse_request(cut_name).operation == "extended"
    with pytest.raises(SftpProtocolError, match="without a request id"):
        parse_request(struct.pack(">IBH", 3, sftp.REMOVE, 1))


def test_framer_keeps_one_partial_packet_and_refuses_oversized_ones() -> None:
    stream = packet(sftp.REMOVE, 1, "/a") + packet(sftp.STAT, 2, "/b")
    framer = PacketFramer()
    assert framer.feed(stream[:3]) == (b"", [])
    whole, ends = framer.feed(stream[3:20])
    assert (whole, ends) == (stream[:ends[0]], [len(packet(sftp.REMOVE, 1, "/a"))])
    whole, ends = framer.feed(stream[20:])
    assert whole == stream[len(packet(sftp.REMOVE, 1, "/a")):] and framer.pending == 0
    assert framer.feed(stream[:6]) == (b"", []) and framer.drain() == stream[:6]
    with pytest.raises(SftpProtocolError, match="of 5000000 bytes"):
        PacketFramer().feed(struct.pack(">I", 5_000_000))
    with pytest.raises(SftpProtocolError, match="of 0 bytes"):
        PacketFramer().feed(bytes(5))


def test_status_packet() -> None:
    data = status_packet(42, sftp.FX_PERMISSION_DENIED, "bastion: denied by rule 'x': nope")
    assert read_status(data) == (42, 3, "bastion: denied by rule 'x': nope")
    assert data.endswith(field(""))  # empty language tag
    assert PacketFramer().feed(data) == (data, [len(data)])


@pytest.mark.parametrize(("raw", "normal"), [
    ("/etc/passwd", "/etc/passwd"), ("//etc//passwd", "/etc/passwd"), ("/tmp/../etc/./passwd", "/etc/passwd"),
    ("/etc/", "/etc"), ("./x", "x"), ("../x", "../x"), ("", ""),
])
def test_paths_are_normalised_before_rules_see_them(raw: str, normal: str) -> None:
    assert normal_path(raw) == normal


def test_recorder_forgets_a_request_the_target_never_answered() -> None:
    marks: list[tuple[str, str]] = []
    parser = SftpTransferParser(lambda kind, text: marks.append((kind, text)))
    parser.client.feed(packet(sftp.REMOVE, 5, "/protected"))  # denied by the gate: no reply comes
    parser.client.feed(packet(sftp.SETSTAT, 5, "/tmp/x", 0))  # the client uses id 5 again
    parser.server.feed(packet(sftp.STATUS, 5, 0, "", ""))
    assert marks == []


# -- rules ----------------------------------------------------------------------------------

RULES = """
[defaults]
action = "allow"
when_unsure = "deny"

[[rule]]
name = "no-sftp-on-prod"
action = "deny"
kinds = ["sftp"]
targets = ["prod-*"]

[[rule]]
name = "keep-etc"
action = "deny"
sftp = ["remove", "rename", "write", "setstat"]
paths = ["/etc/*"]
message = "managed by config management"

[[rule]]
name = "deletes-need-approval"
action = "approve"
sftp = ["remove"]
approvers = ["dba"]

[[rule]]
name = "log-reads-of-keys"
action = "log"
sftp = ["read"]
paths = ["*.pem"]
"""


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return load_rules(path)


def operation(rules: RuleSet, op: str, *paths: str, target: str = "db-1", unsure: bool = False):  # type: ignore[no-untyped-def]
    return rules.decide(CommandRequest("alice", frozenset({"ops"}), target, "root", "sftp",
                                       " ".join([op, *paths]), unsure, operation=op, paths=paths))


@pytest.mark.parametrize(("op", "paths", "action", "rule"), [
    ("remove", ("/etc/hosts",), "deny", "keep-etc"),
    ("remove", ("/tmp/x",), "approve", "deletes-need-approval"),
    ("read", ("/etc/hosts",), "allow", None),
    ("write", ("/etc/hosts",), "deny", "keep-etc"),
    ("write", ("/tmp/etc/hosts",), "allow", None),
    ("read", ("/home/a/id.pem",), "log", "log-reads-of-keys"),
    ("mkdir", ("/etc/x",), "allow", None),
    # Both paths of a rename are decided; the stricter verdict wins.
    ("rename", ("/tmp/x", "/etc/hosts"), "deny", "keep-etc"),
    ("rename", ("/etc/hosts", "/tmp/x"), "deny", "keep-etc"),
    ("rename", ("/tmp/a", "/tmp/b"), "allow", None),
])
def test_operation_decisions(rules: RuleSet, op: str, paths: tuple[str, ...], action: str,
                             rule: str | None) -> None:
    verdict = operation(rules, op, *paths)
    assert (verdict.action, verdict.rule, verdict.unsure) == (action, rule, False)


def test_the_subsystem_and_its_operations_are_decided_by_different_rules(rules: RuleSet) -> None:
    subsystem = CommandRequest("alice", frozenset({"ops"}), "prod-1", "root", "sftp", "sftp")
    assert rules.decide(subsystem).rule == "no-sftp-on-prod"
    assert rules.decide(CommandRequest("alice", frozenset(), "db-1", "root", "sftp", "sftp")).action == "allow"
    # The whole-subsystem rule does not decide operations (the session would not exist).
    assert operation(rules, "read", "/tmp/x", target="prod-1").action == "allow"


def test_what_a_path_rule_cannot_tell_is_unsure(rules: RuleSet) -> None:
    # A relative path is resolved by the target: "/etc/*" may or may not match.
    verdict = operation(rules, "write", "hosts")
    assert (verdict.action, verdict.rule, verdict.unsure) == ("deny", "when_unsure", True)
    # ... but only where a path rule could apply: mkdir has none.
    assert operation(rules, "mkdir", "new").unsure is False
    # Unknown requests (no operation name a rule could use) are unsure, never silently allowed.
    assert operation(rules, "extended", unsure=True).action == "deny"


def test_sftp_keys_imply_kind_sftp(rules: RuleSet) -> None:
    rule = next(r for r in rules.rules if r.name == "keep-etc")
    assert rule.kinds == frozenset({"sftp"}) and rule.operations == frozenset({"remove", "rename", "write", "setstat"})
    exec_request = CommandRequest("alice", frozenset(), "db-1", "root", "exec", "rm /etc/hosts")
    assert rules.decide(exec_request).action == "allow"


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname = "x"\naction = "deny"\nsftp = ["delete"]\n', "rules.toml:1: rule 'x': sftp: unknown operation 'delete'"),
    ('\n[[rule]]\nname = "x"\naction = "deny"\nsftp = []\n', "rules.toml:2: rule 'x': sftp: name at least one operation"),
    ('[[rule]]\nname = "x"\naction = "deny"\npaths = ["etc/*"]\n', "paths: 'etc/*' can never match"),
    ('[[rule]]\nname = "x"\naction = "deny"\nsftp = ["remove"]\nprogram = "rm"\n', "write two rules"),
    ('[[rule]]\nname = "x"\naction = "deny"\nsftp = ["remove"]\nkinds = ["exec"]\n', "apply to kind sftp only"),
    ('[[rule]]\nname = "x"\naction = "deny"\npaths = "/etc/*"\nsftp = 3\n', "sftp: expected a string or a list of strings"),
])
def test_malformed_sftp_rules_name_file_line_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert message in err.value.reason and str(path) in err.value.reason


# -- the stage ------------------------------------------------------------------------------

SFTP = SessionInfo(session_id="s1", channel=0, user="alice", target="db-1", login="root",
                   client_address="127.0.0.1", client_version="SSH-2.0-test", kind=SessionKind.SUBSYSTEM,
                   subsystem="sftp", groups=frozenset({"ops"}))


class Session:
    """Collects what the stage sends either way, and what it asks of the relay."""

    def __init__(self) -> None:
        self.target: list[bytes] = []
        self.client: list[bytes] = []
        self.stderr: list[bytes] = []
        self.markers: list[tuple[str, str]] = []
        self.input_held: set[str] = set()
        self.ended: str | None = None

    def to_target(self, data: bytes) -> None:
        self.target.append(bytes(data))

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        (self.stderr if stream is Stream.STDERR else self.client).append(bytes(data))

    def say(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.to_client(data, stream)

    def end(self, reason: str) -> None:
        self.ended = reason

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        raise AssertionError("the gate holds no output back for later")

    def marker(self, kind: str, text: str = "") -> None:
        self.markers.append((kind, text))

    def hold_output(self, reason: str) -> None:
        pass

    def release_output(self, reason: str) -> None:
        pass

    def hold_input(self, reason: str) -> None:
        self.input_held.add(reason)

    def release_input(self, reason: str) -> None:
        self.input_held.discard(reason)


def gate(ruleset: RuleSet, *, approvals: ApprovalStore | None = None, info: SessionInfo = SFTP,
         ) -> tuple[SftpGateStage, Session, io.StringIO]:
    log = io.StringIO()
    stage = SftpGateStage(ScreeningContext(RulesHolder(ruleset), approvals, AuditLog(log, masker=MASKER), MASKER))
    session = Session()
    stage.start(info, session)
    return stage, session, log


def decided(log: io.StringIO) -> list[tuple[str, str]]:
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    return [(e["command"], e["action"]) for e in events if e["event"] == "command_decision"]


STREAM = [
    packet(sftp.INIT, 3),
    packet(sftp.REALPATH, 1, "."),
    opening(2, "/tmp/upload.txt", sftp.FXF_WRITE | sftp.FXF_CREAT),
    packet(sftp.WRITE, 3, b"h1", 0, b"x" * 3000),
    packet(sftp.REMOVE, 4, "/etc/hosts"),  # denied
    packet(sftp.STAT, 5, "/etc/hosts"),
    opening(6, "//etc/../etc/shadow", sftp.FXF_WRITE),  # denied, however it is spelt
    extended(7, "posix-rename@openssh.com", "/tmp/a", "/tmp/b"),
    packet(sftp.CLOSE, 8, b"h1"),
]
DENIED = {4, 6}


def test_allowed_requests_go_on_unchanged_and_denied_ones_are_answered(rules: RuleSet) -> None:
    stage, session, log = gate(rules)
    forwarded = stage.on_input(b"".join(STREAM))
    assert forwarded == b"".join(p for i, p in enumerate(STREAM) if i not in DENIED)
    answers = [read_status(reply) for reply in session.client]
    assert answers == [(4, 3, "bastion: denied by rule 'keep-etc': managed by config management"),
                       (6, 3, "bastion: denied by rule 'keep-etc': managed by config management")]
    assert session.stderr == [b"bastion: denied by rule 'keep-etc': managed by config management\r\n"] * 2
    assert decided(log) == [("write /tmp/upload.txt", "allow"), ("remove /etc/hosts", "deny"),
                            ("write /etc/shadow", "deny"), ("rename /tmp/a /tmp/b", "allow")]
    assert ("denied", "remove /etc/hosts [keep-etc]") in session.markers


@given(st.lists(st.integers(min_value=1, max_value=len(b"".join(STREAM)) - 1), max_size=30))
def test_any_chunking_gives_the_same_decisions(cuts: list[int]) -> None:
    ruleset = parse_rules({"defaults": {"when_unsure": "deny"}, "rule": [
        {"name": "keep-etc", "action": "deny", "paths": ["/etc/*"], "sftp": ["remove", "write"]}]})
    stream = b"".join(STREAM)
    stage, session, log = gate(ruleset)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    forwarded = b"".join(stage.on_input(stream[a:b]) for a, b in itertools.pairwise(bounds))
    assert forwarded == b"".join(p for i, p in enumerate(STREAM) if i not in DENIED)
    assert [read_status(reply)[0] for reply in session.client] == sorted(DENIED)
    assert [action for _, action in decided(log)] == ["allow", "deny", "deny", "allow"]


REPLIES = [packet(sftp.VERSION, 3), packet(sftp.DATA, 1, b"d" * 5000), packet(sftp.HANDLE, 2, b"H2"),
           packet(sftp.STATUS, 3, 0, "", "")]


@given(st.lists(st.integers(min_value=1, max_value=len(b"".join(REPLIES)) - 1), max_size=20))
def test_any_chunking_of_replies_gives_them_whole_and_follows_handles(cuts: list[int]) -> None:
    ruleset = parse_rules({"rule": [{"name": "keep-etc", "action": "deny", "sftp": ["setstat"],
                                     "paths": ["/etc/*"]}]})
    stage, _, _ = gate(ruleset)
    stage.on_input(packet(sftp.OPENDIR, 2, "/etc/x"))
    stream = b"".join(REPLIES)
    boundaries = set(itertools.accumulate(map(len, REPLIES), initial=0))
    bounds = [0, *sorted(set(cuts)), len(stream)]
    sent = b""
    for a, b in itertools.pairwise(bounds):
        sent += stage.on_output(stream[a:b], Stream.STDOUT)
        assert len(sent) in boundaries  # the client's stream is always between whole packets
    assert sent == stream
    assert stage.on_input(packet(sftp.FSETSTAT, 4, b"H2", 0)) == b""  # /etc/x, through its handle


def test_replies_go_out_whole_so_the_gates_answers_never_split_one(rules: RuleSet) -> None:
    stage, session, _ = gate(rules)
    reply = packet(sftp.DATA, 9, b"y" * 100)
    assert stage.on_output(reply[:50], Stream.STDOUT) == b""
    stage.on_input(packet(sftp.REMOVE, 10, "/etc/hosts"))
    assert read_status(session.client[0])[0] == 10  # between whole packets
    assert stage.on_output(reply[50:], Stream.STDOUT) == reply
    assert stage.on_output(b"warning\n", Stream.STDERR) == b"warning\n"
    stage.on_output(reply[:10], Stream.STDOUT)
    assert stage.flush_output(Stream.STDOUT) == reply[:10]  # the target ended mid-packet


def test_a_change_through_a_handle_is_decided_on_the_path_it_was_opened_with(rules: RuleSet) -> None:
    stage, session, _ = gate(rules)
    assert stage.on_input(opening(1, "/etc/hosts", sftp.FXF_READ))  # reading is allowed
    stage.on_output(packet(sftp.HANDLE, 1, b"H"), Stream.STDOUT)
    assert stage.on_input(packet(sftp.FSETSTAT, 2, b"H", 0)) == b""
    assert read_status(session.client[0])[:2] == (2, 3)
    # A handle the gate never saw opened: unsure (here: denied by when_unsure).
    assert stage.on_input(packet(sftp.FSETSTAT, 3, b"other", 0)) == b""
    assert read_status(session.client[1])[2] == (
        "bastion: denied by rule 'when_unsure': the bastion cannot tell what this runs:"
        " a change through a handle the gate never saw opened")
    # Closed handles are forgotten.
    stage.on_input(packet(sftp.CLOSE, 4, b"H"))
    assert stage.on_input(packet(sftp.FSETSTAT, 5, b"H", 0)) == b""


async def test_relative_paths_are_decided_in_the_targets_working_directory(rules: RuleSet) -> None:
    stage, session, log = gate(rules)
    upload = opening(7, "./etc/../hosts", sftp.FXF_WRITE)  # as `scp file host:` sends it
    after = packet(sftp.STAT, 8, "x")
    assert stage.on_input(upload + after) == b""
    assert session.input_held == {"sftp gate"}
    [asked] = session.target  # the gate asks the target itself, with an id of its own
    asked_id = (7 + 0x80000000) & 0xFFFFFFFF
    assert asked == sftp.realpath_packet(asked_id, ".") and parse_request(asked).paths == (".",)
    other = packet(sftp.ATTRS, 3, 0)
    answer = packet(sftp.NAME, asked_id, 1, "/etc", "drwxr-xr-x ...", 0)
    assert stage.on_output(other + answer, Stream.STDOUT) == other  # never seen by the client
    await until(lambda: not session.input_held, "reading resumed")
    assert decided(log) == [("write /etc/hosts", "deny")]
    assert read_status(session.client[0])[:2] == (7, 3)
    assert session.target[1:] == [after]
    # Known from then on: no second question.
    assert stage.on_input(opening(9, "notes.txt", sftp.FXF_READ)) == opening(9, "notes.txt", sftp.FXF_READ)
    assert decided(log)[-1] == ("read /etc/notes.txt", "allow")
    assert stage.on_input(packet(sftp.REMOVE, 10, "../etc/x")) == b""
    assert decided(log)[-1] == ("remove /etc/x", "deny") and len(session.target) == 2


async def test_a_working_directory_the_target_does_not_tell_leaves_relative_paths_unsure(rules: RuleSet) -> None:
    stage, session, log = gate(rules)
    stage.on_input(opening(1, "hosts", sftp.FXF_WRITE))
    asked_id = (1 + 0x80000000) & 0xFFFFFFFF
    assert stage.on_output(packet(sftp.STATUS, asked_id, 4, "no", ""), Stream.STDOUT) == b""
    await until(lambda: not session.input_held, "reading resumed")
    assert decided(log) == [("write hosts", "deny")]  # when_unsure = "deny"
    assert "when_unsure" in read_status(session.client[0])[2]


def test_an_oversized_packet_ends_the_session_with_one_line(rules: RuleSet) -> None:
    stage, _, _ = gate(rules)
    with pytest.raises(StageFailed) as err:
        SessionPipeline([stage]).input(struct.pack(">IB", 8 * 1024 * 1024, sftp.WRITE))
    assert str(err.value) == ("sftp-gate: an sftp request from the client of 8388608 bytes"
                              " (the limit is 4194304)")


def test_other_sessions_pass_untouched(rules: RuleSet) -> None:
    shell = SessionInfo(session_id="s2", channel=0, user="alice", target="db-1", login="root",
                        client_address="127.0.0.1", client_version="SSH-2.0-test", kind=SessionKind.EXEC,
                        command="cat")
    stage, _, log = gate(rules, info=shell)
    data = packet(sftp.REMOVE, 4, "/etc/hosts")
    assert stage.on_input(data) == data and stage.on_output(data[:3], Stream.STDOUT) == data[:3]
    assert decided(log) == []


async def test_a_held_request_and_all_after_it_wait_for_the_approval(
        rules: RuleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions_module, "POLL", 0.01)
    store = live_store(tmp_path / "state.db", masker=MASKER)
    stage, session, _ = gate(rules, approvals=store)
    before = packet(sftp.STAT, 1, "/tmp")
    held = packet(sftp.REMOVE, 2, "/tmp/old.log")
    after = [packet(sftp.STAT, 3, "/tmp"), packet(sftp.REMOVE, 4, "/etc/hosts"), packet(sftp.STAT, 5, "/")]
    assert stage.on_input(before + held + after[0]) == before
    assert stage.on_input(b"".join(after[1:])) == b""  # kept in order behind the held one
    assert session.input_held == {"sftp gate"}
    await until(store.pending, "the approval request")
    [request] = store.pending()
    assert request.command == "remove /tmp/old.log" and request.rule == "deletes-need-approval"
    # The request is written on the state database's thread, then announced on the loop.
    await until(lambda: session.stderr, "the user told what the request waits for")
    assert b"waiting for approval" in session.stderr[0] and b"Ctrl-C" not in session.stderr[0]
    store.decide(request.id, "bob", Decision.APPROVE, groups=frozenset({"dba"}))
    await until(lambda: not session.input_held, "reading resumed")
    assert session.target == [held, after[0] + after[2]]  # the denied one between them answered
    assert [read_status(reply)[0] for reply in session.client] == [4]

    # Denied by an approver: answered, never forwarded; what follows goes on.
    session.target.clear()
    assert stage.on_input(packet(sftp.REMOVE, 6, "/tmp/new.log") + packet(sftp.STAT, 7, "/")) == b""
    await until(store.pending, "the second approval request")
    store.decide(store.pending()[0].id, "bob", Decision.DENY, groups=frozenset({"dba"}))
    await until(lambda: not session.input_held, "reading resumed")
    assert session.target == [packet(sftp.STAT, 7, "/")]
    assert read_status(session.client[-1]) == (
        6, 3, "bastion: 'remove /tmp/new.log' was not approved (denied by bob)")


async def test_a_session_ending_during_a_hold_cancels_the_request(
        rules: RuleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions_module, "POLL", 0.01)
    store = live_store(tmp_path / "state.db", masker=MASKER)
    stage, session, _ = gate(rules, approvals=store)
    stage.on_input(packet(sftp.REMOVE, 1, "/tmp/x"))
    await until(store.pending, "the approval request")
    request = store.pending()[0]
    stage.on_end(None, None)
    await asyncio.sleep(0)
    assert store.state(request.id)[0] == "cancelled" and session.target == []
