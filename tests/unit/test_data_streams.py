"""Streams of sessions without a pty that are data: decided once, passed unmasked, recorded as
their size and hash."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from dataclasses import replace

import pytest

from bastion.config import MaskingSettings, RecordingSettings
from bastion.core.datastream import WINDOW, Decision, Kind, StreamKinds, classify
from bastion.core.masker import TextMasker
from bastion.stages.masking import MaskingStage
from bastion.stages.pipeline import SessionInfo, SessionPipeline, Stream
from bastion.stages.recording import RecordingStage
from bastion.state.audit import AuditLog
from recorder.asciicast import Cast, load_cast
from recorder.signing import RecordingKey
from recorder.writer import Recorder
from tests.support.memory import MemoryStore
from tests.support.samples import AWS_ID
from tests.support.stages import SHELL, Session

MASKER = TextMasker()
EXEC = replace(SHELL, kind="exec", command="cat backup", term_type=None)


@pytest.mark.parametrize(("chunk", "decision"), [
    (b"hello\nworld\n", Decision(Kind.TEXT)),
    ("café ✓ naïve\n".encode(), Decision(Kind.TEXT)),
    ("ab✓".encode()[:-1], Decision(Kind.TEXT)),  # a character cut by the chunk's end
    (b"\x1b[31mred\x1b[0m\r\n", Decision(Kind.TEXT)),  # control characters are text
    (b"\0AWS_ACCESS_KEY_ID=x\n", Decision(Kind.DATA, "NUL at byte 0")),
    (b"usr/log/\0\0\0\0", Decision(Kind.DATA, "NUL at byte 8")),
    (gzip.compress(b"x" * 100), Decision(Kind.DATA, "not UTF-8 at byte 1")),
    (b"PGDMP\x01\x0e\x00\x04\x08\x01", Decision(Kind.DATA, "NUL at byte 7")),
    (b"ok\xff\0", Decision(Kind.DATA, "not UTF-8 at byte 2")),
    (b"a" * WINDOW + b"\0", Decision(Kind.TEXT)),  # past the window: not read
])
def test_a_stream_is_classified_from_its_first_chunk(chunk: bytes, decision: Decision) -> None:
    assert classify(chunk) == decision


def test_the_decision_is_made_once_per_stream_and_never_changes() -> None:
    kinds = StreamKinds()
    assert kinds.see("stdout", b"") is None  # no byte yet: undecided
    assert kinds.see("stdout", b"text first\n") == Decision(Kind.TEXT)
    assert kinds.see("stdout", b"\0\xff binary later") == Decision(Kind.TEXT)
    assert kinds.see("stderr", b"\0data first") == Decision(Kind.DATA, "NUL at byte 0")
    assert kinds.see("stderr", b"text later\n").kind is Kind.DATA  # type: ignore[union-attr]
    assert kinds.is_data("stderr") and not kinds.is_data("stdout") and not kinds.is_data("stdin")


class RelayedSession(Session):
    """Markers go to every stage, as the relay sends them."""

    def __init__(self, pipeline: SessionPipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    def marker(self, kind: str, text: str = "") -> None:
        self.pipeline.marker(kind, text)


def session(info: SessionInfo = EXEC) -> tuple[SessionPipeline, Recorder, RecordingStage, io.StringIO]:
    """Masking then recording, as the bastion orders them."""
    recorder = Recorder(MemoryStore(), None, RecordingKey.generate(), flush_interval=0.05)
    log = io.StringIO()
    masking = MaskingSettings()
    recording = RecordingStage(recorder, RecordingSettings(), AuditLog(log, masker=MASKER),
                               text_masker=MASKER, input_masker=masking.make_masker())
    pipeline = SessionPipeline([MaskingStage(masking), recording])
    pipeline.start(info, RelayedSession(pipeline))
    return pipeline, recorder, recording, log


def finish(pipeline: SessionPipeline, recorder: Recorder, stage: RecordingStage) -> Cast:
    rec = stage.recording
    assert rec is not None
    for stream in Stream:
        pipeline.flush_output(stream)
    pipeline.end(0, None)
    recorder.stop()
    return load_cast(recorder.store.read(rec.name)[0])


def audit_events(log: io.StringIO) -> list[dict[str, object]]:
    return [e for e in map(json.loads, log.getvalue().splitlines()) if e["event"] == "data_stream"]


def test_a_binary_stream_passes_unchanged_and_is_recorded_as_its_hash() -> None:
    pipeline, recorder, stage, log = session()
    payload = os.urandom(300_000) + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode()
    out = b"".join(pipeline.output(payload[at:at + 65536], Stream.STDOUT) for at in range(0, len(payload), 65536))
    assert out == payload
    cast = finish(pipeline, recorder, stage)
    digest = hashlib.sha256(payload).hexdigest()
    assert cast.output_bytes() == b""
    markers = cast.markers()
    assert markers[0].startswith("data: stdout (not UTF-8 at byte ")
    assert markers[1].startswith(f"download: stdout {len(payload)} bytes sha256 {digest} in ")
    [event] = audit_events(log)
    assert event["sha256"] == digest and event["size"] == len(payload) and event["complete"] is True
    assert event["direction"] == "download"


def test_text_without_a_pty_stays_masked_and_recorded_even_if_it_turns_binary() -> None:
    pipeline, recorder, stage, log = session()
    first = f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode()
    assert AWS_ID.encode() not in pipeline.output(first, Stream.STDOUT) + pipeline.flush_output(Stream.STDOUT)
    later = b"\0\xff" + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode()
    assert AWS_ID.encode() not in pipeline.output(later, Stream.STDOUT) + pipeline.flush_output(Stream.STDOUT)
    cast = finish(pipeline, recorder, stage)
    recorded = cast.output_bytes()
    assert b"AWS_ACCESS_KEY_ID=AKIA" in recorded and AWS_ID.encode() not in recorded
    assert not audit_events(log)


def test_a_nul_prefix_makes_data_seen_by_the_reviewer() -> None:
    # The policy in docs/recordings.md: the user gets the bytes (as `gzip -c .env` would give them),
    # and the recording and the audit log say it was data, from byte 0, with its hash.
    pipeline, recorder, stage, log = session()
    payload = b"\0" + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode()
    assert pipeline.output(payload, Stream.STDOUT) == payload
    cast = finish(pipeline, recorder, stage)
    assert AWS_ID.encode() not in cast.output_bytes()
    assert "data: stdout (NUL at byte 0)" in cast.markers()
    [event] = audit_events(log)
    assert event["reason"] == "NUL at byte 0" and event["sha256"] == hashlib.sha256(payload).hexdigest()


def test_stdout_and_stderr_and_stdin_are_decided_apart() -> None:
    pipeline, recorder, stage, log = session()
    upload = b"\x1f\x8b\x08binary upload"
    assert pipeline.input(upload) == upload
    pipeline.input_eof()
    assert pipeline.output(b"\0\x01tar", Stream.STDOUT) == b"\0\x01tar"
    pipeline.output(b"tar: removing leading '/'\n", Stream.STDERR)
    cast = finish(pipeline, recorder, stage)
    assert cast.input_bytes() == b""
    assert cast.output_bytes() == b"tar: removing leading '/'\n"
    assert {(e["stream"], e["direction"]) for e in audit_events(log)} == {("stdin", "upload"),
                                                                          ("stdout", "download")}


def test_a_stream_cut_off_by_the_sessions_end_says_so() -> None:
    pipeline, recorder, stage, log = session()
    pipeline.output(b"\0partial", Stream.STDOUT)
    rec = stage.recording
    assert rec is not None
    pipeline.end(None, "KILL")
    recorder.stop()
    [event] = audit_events(log)
    assert event["complete"] is False
    assert any(m.endswith("cut off by the session's end") for m in load_cast(recorder.store.read(rec.name)[0]).markers())


def test_a_session_with_a_pty_is_never_data() -> None:
    pipeline, recorder, stage, log = session(SHELL)
    pipeline.output(b"\0\xff" + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode(), Stream.STDOUT)
    cast = finish(pipeline, recorder, stage)
    assert AWS_ID.encode() not in cast.output_bytes() and cast.output_bytes()
    assert not audit_events(log)


def test_a_shell_without_a_pty_is_never_data() -> None:
    """`ssh -T host` then `printf '\\0'`: the rest of the shell session stays masked and recorded."""
    shell = replace(SHELL, term_type=None)
    pipeline, recorder, stage, log = session(shell)
    pipeline.output(b"\0\xff" + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode(), Stream.STDOUT)
    cast = finish(pipeline, recorder, stage)
    assert AWS_ID.encode() not in cast.output_bytes() and cast.output_bytes()
    assert not audit_events(log)


@pytest.mark.parametrize("command", ["bash", "sh -s", "python3 -", "psql", "env bash -i"])
def test_a_command_that_reads_commands_from_its_input_is_never_data(command: str) -> None:
    """`ssh host bash` is a shell without a pty by another name."""
    pipeline, recorder, stage, log = session(replace(EXEC, command=command))
    pipeline.output(b"\0\xff" + f"AWS_ACCESS_KEY_ID={AWS_ID}\n".encode(), Stream.STDOUT)
    cast = finish(pipeline, recorder, stage)
    assert AWS_ID.encode() not in cast.output_bytes() and cast.output_bytes()
    assert not audit_events(log)


@pytest.mark.parametrize("command", ["cat backup.tgz", "tar c /var/log", "pg_dump -Fc db", "bash -c 'cat x'"])
def test_commands_that_do_not_read_commands_from_their_input_may_carry_data(command: str) -> None:
    assert replace(EXEC, command=command).may_carry_data
