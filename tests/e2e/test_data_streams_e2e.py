"""Streams of sessions without a pty that are data, through the real OpenSSH client, the bastion
and a real sshd: byte-identical, unmasked, recorded as their size and hash; text stays masked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recorder.asciicast import load_cast
from tests.support.lab import LOGIN, Lab
from tests.support.recordings import recording_for
from tests.support.samples import AWS_ID

pytestmark = pytest.mark.e2e

SECRETS = f"# app settings\nAWS_ACCESS_KEY_ID={AWS_ID}\nPORT=8080\n"


def data_streams(lab: Lab, session: object) -> list[dict[str, object]]:
    return [e for e in lab.events("data_stream") if e["session"] == session]


def test_a_random_stream_arrives_byte_identical_and_is_recorded_as_its_hash(lab: Lab, tmp_path: Path) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    source = tmp_path / "backup.bin"
    source.write_bytes(payload)
    command = f"cat {source}"
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 0
    digest = hashlib.sha256(payload).hexdigest()
    assert hashlib.sha256(result.stdout).hexdigest() == digest
    path = recording_for(lab.sandbox, lambda e: e.get("command") == command)
    assert path.stat().st_size < 16 * 1024  # metadata, not 20 MB of escaped bytes
    cast = load_cast(path.read_bytes())
    assert cast.output_bytes() == b""
    markers = cast.markers()
    assert any(m.startswith("data: stdout (") for m in markers)
    assert any(m.startswith(f"download: stdout {len(payload)} bytes sha256 {digest} in ") for m in markers)
    assert markers[-1] == "exit: 0"
    [event] = data_streams(lab, path.stem)
    assert (event["sha256"], event["size"], event["complete"]) == (digest, len(payload), True)


def test_a_binary_upload_is_recorded_as_its_hash(lab: Lab) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    result = lab.ssh(f"{LOGIN}@db-1", "sha256sum", input=payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert result.returncode == 0 and result.stdout.decode().startswith(digest)
    path = recording_for(lab.sandbox, lambda e: e.get("command") == "sha256sum")
    cast = load_cast(path.read_bytes())
    assert cast.input_bytes() == b""
    assert cast.output_bytes().startswith(digest.encode())  # its text output is recorded
    [event] = data_streams(lab, path.stem)
    assert (event["stream"], event["direction"], event["sha256"]) == ("stdin", "upload", digest)


def test_text_without_a_pty_stays_masked_and_recorded(lab: Lab, tmp_path: Path) -> None:
    source = tmp_path / "app.env"
    source.write_text(SECRETS)
    command = f"cat {source}"
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 0
    assert AWS_ID[4:].encode() not in result.stdout and b"AWS_ACCESS_KEY_ID=AKIA" in result.stdout
    path = recording_for(lab.sandbox, lambda e: e.get("command") == command)
    cast = load_cast(path.read_bytes())
    assert b"PORT=8080" in cast.output_bytes() and AWS_ID[4:].encode() not in cast.output_bytes()
    assert "masked: aws-access-key-id" in cast.markers()
    assert not data_streams(lab, path.stem)


def test_a_nul_before_a_secret_makes_a_data_stream_the_reviewer_sees(lab: Lab, tmp_path: Path) -> None:
    # The policy in docs/recordings.md: a stream that starts with a NUL is data and reaches the user as the
    # target sent it (as `gzip -c` of the file would); the recording and the audit log say that
    # it was data from byte 0, with the hash of what the user got. The secret is never recorded.
    source = tmp_path / "app.env"
    source.write_text(SECRETS)
    command = f"printf '\\0'; cat {source}"
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 0
    assert result.stdout == b"\0" + SECRETS.encode()
    path = recording_for(lab.sandbox, lambda e: e.get("command") == command)
    data = path.read_bytes()
    assert AWS_ID[4:].encode() not in data
    cast = load_cast(data)
    digest = hashlib.sha256(result.stdout).hexdigest()
    assert "data: stdout (NUL at byte 0)" in cast.markers()
    assert any(m.startswith(f"download: stdout {len(result.stdout)} bytes sha256 {digest}") for m in cast.markers())
    [event] = data_streams(lab, path.stem)
    assert (event["reason"], event["sha256"]) == ("NUL at byte 0", digest)
    [ended] = [e for e in lab.events("session_ended") if e["session"] == path.stem]
    assert ended["markers"] == {"data": 1}  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("how", [["-T"], ["bash"]])
def test_a_shell_without_a_pty_stays_masked_and_recorded_after_a_nul(lab: Lab, tmp_path: Path,
                                                                     how: list[str]) -> None:
    """`ssh -T host` or `ssh host bash`, then a NUL as the shell's first output: the rest of the
    shell session must not become an unmasked, unrecorded data stream."""
    source = tmp_path / "app.env"
    source.write_text(SECRETS)
    before = {e["session"] for e in lab.events("session_ended")}
    args = ["-T", f"{LOGIN}@db-1"] if how == ["-T"] else [f"{LOGIN}@db-1", *how]
    result = lab.ssh(*args, input=f"printf '\\0'\ncat {source}\n".encode())
    assert result.returncode == 0, result.stderr
    assert AWS_ID.encode() not in result.stdout and b"PORT=8080" in result.stdout
    path = recording_for(lab.sandbox, lambda e: e["session"] not in before)
    data = path.read_bytes()
    assert AWS_ID[4:].encode() not in data and b"PORT=8080" in data
    assert not data_streams(lab, path.stem)
