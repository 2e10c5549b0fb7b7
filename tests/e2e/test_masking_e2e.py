"""Secrets printed on a real target never reach the real client or the recording."""

from __future__ import annotations

import re
import time

import pytest

from recorder.asciicast import load_cast
from tests.support.lab import LOGIN, Lab, need
from tests.support.recordings import recording_for
from tests.support.samples import AWS_ID, AWS_SECRET, CARD, GH, pem
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e

SECRETS_FILE = f"""\
# app settings
AWS_ACCESS_KEY_ID={AWS_ID}
aws_secret_access_key = {AWS_SECRET}
GITHUB_TOKEN={GH}
DATABASE_URL=postgres://app:Sup3r-S3cret@db.internal/app
card: {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}
commit 9fceb02d0ae598e95dc970b74764f0b7f4d1a2e3
{pem("openssh")}"""
KEY_BODY = [line for line in SECRETS_FILE.splitlines()[8:] if not line.startswith("-----")]
HIDDEN = [AWS_ID[4:], AWS_SECRET, GH[4:], "Sup3r-S3cret", f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}", *KEY_BODY]


def test_cat_of_a_secrets_file(lab: Lab) -> None:
    remote = f"/tmp/secrets-{time.monotonic_ns()}.env"
    put = lab.ssh(f"{LOGIN}@db-1", f"cat > {remote}", input=SECRETS_FILE.encode())
    assert put.returncode == 0
    result = lab.ssh(f"{LOGIN}@db-1", f"cat {remote}; rm {remote}")
    assert result.returncode == 0
    out = result.stdout.decode()
    for secret in HIDDEN:
        assert secret not in out, secret
    assert "commit 9fceb02d0ae598e95dc970b74764f0b7f4d1a2e3" in out  # ordinary output intact
    assert "-----BEGIN OPENSSH PRIVATE KEY-----" in out
    assert len(out.splitlines()) == len(SECRETS_FILE.splitlines())
    cast_path = recording_for(lab.sandbox, lambda e: e.get("command") == f"cat {remote}; rm {remote}")
    recorded = cast_path.read_text()
    for secret in HIDDEN:
        assert secret not in recorded
    markers = load_cast(cast_path.read_bytes()).markers()
    assert {"masked: aws-access-key-id", "masked: aws-secret-access-key", "masked: github-token",
            "masked: url-password", "masked: card-number", "masked: private-key"} <= set(markers)
    # The file went up on stdin: that session's recording holds its input, masked the same way.
    sent = recording_for(lab.sandbox, lambda e: e.get("command") == f"cat > {remote}")
    recorded = sent.read_text()
    for secret in HIDDEN:
        assert secret not in recorded
    assert "commit 9fceb02d0ae598e95dc970b74764f0b7f4d1a2e3" in load_cast(sent.read_bytes()).input_bytes().decode()
    assert "masked: private-key (input)" in load_cast(sent.read_bytes()).markers()


def test_a_secret_printed_slowly_never_appears_whole(lab: Lab) -> None:
    command = f"for c in $(echo {GH} | fold -w1); do printf %s $c; sleep 0.01; done; echo"
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 0
    assert GH[4:].encode() not in result.stdout
    assert result.stdout.startswith(b"ghp_") and result.stdout.count(b"*") == len(GH) - 4


def test_typed_passwords_are_not_recorded(lab: Lab) -> None:
    need("tmux")
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1"])
    try:
        pane.type("PS1='h''p> '")
        pane.send("Enter")
        pane.wait_for("hp>")
        pane.type("read -s -p 'Pass''word: ' pw; echo; echo length-${#pw}")
        pane.send("Enter")
        pane.wait_for("Password:")
        pane.type("Tr0ub4dor&3")
        pane.send("Enter")
        pane.wait_for("length-11")
        # No prompt at all: the keys never come back as echo, so they are not recorded either.
        pane.type("tty; read -s pw; echo got-${#pw}")
        pane.send("Enter")
        tty = re.search(r"^(/dev/pts/\d+)$", pane.wait_for("\n/dev/pts/"), re.M)
        assert tty is not None
        pane.wait_for_echo_off(tty.group(1))
        pane.type("c0rrect-h0rse")
        pane.send("Enter")
        pane.wait_for("got-13")
        # A token on the command line: its echo is masked, the line is recorded with it masked.
        pane.type(f"echo {GH} | wc -c; echo typed-with-a-token")
        pane.send("Enter")
        pane.wait_for(f"{len(GH) + 1}\ntyped-with-a-token")
        pane.exit_shell()
    finally:
        pane.close()
    cast_path = recording_for(lab.sandbox, lambda e: e.get("kind") == "shell")
    cast = load_cast(cast_path.read_bytes())
    assert b"Tr0ub4dor" not in cast.input_bytes() and b"c0rrect" not in cast.input_bytes()
    assert b"length-11" in cast.output_bytes()
    assert "hidden-input: 11 keystrokes" in cast.markers() and "hidden-input: 13 keystrokes" in cast.markers()
    assert b"read -s" in cast.input_bytes()  # ordinary typing is still recorded
    assert GH[4:].encode() not in cast.input_bytes() and GH[4:] not in cast_path.read_text()
    assert b"echo ghp_****" in cast.input_bytes() and "masked: github-token (input)" in cast.markers()


def test_masking_the_recording_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bastion.demo.sandbox import Sandbox

    need("ssh", "sshd")
    custom = {"name": "employee-id", "regex": "EMP-([0-9]{6})", "group": 1}
    box = Sandbox(tmp_path / "box", extra={"masking": {"sinks": "recording", "custom": [custom]}})
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    config = box.write_ssh_config("alice")
    try:
        box.start_bastion()
        import subprocess

        command = f"echo key={AWS_ID} EMP-314159"
        result = subprocess.run(["ssh", "-F", str(config), "-J", "bastion", f"{LOGIN}@db-1", command],
                                capture_output=True, timeout=60, check=False)
        assert AWS_ID.encode() in result.stdout  # the user sees the real output
        cast_path = recording_for(box, lambda e: str(e.get("command", "")).startswith("echo key=AKIA"))
        # The command itself carried the key and an id of the custom kind: stored masked in the
        # header, index and log, with the same detectors as the streams.
        for stored in (cast_path.read_text(), box.log_path.read_text()):
            assert AWS_ID[4:] not in stored and "314159" not in stored
        assert "EMP-******" in cast_path.read_text()
        markers = load_cast(cast_path.read_bytes()).markers()
        assert {"masked: aws-access-key-id", "masked: employee-id"} <= set(markers)
    finally:
        box.stop()


def test_file_transfers_are_never_masked(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A secrets file and binary noise that happens to hold `PWD=`: sftp and scp carry files, and
    # a masked file would be a corrupted file (a mask that changes the byte count would even
    # break the transfer protocol's framing).
    import hashlib
    import os

    payload = SECRETS_FILE.encode() + os.urandom(4096) + b"xPwD=\xde\xaa!\x07\xb8\xf8\xf0\x7f*q\xee" + os.urandom(4096)
    remote = f"/tmp/transfer-{time.monotonic_ns()}.bin"
    assert lab.ssh(f"{LOGIN}@db-1", f"cat > {remote}", input=payload).returncode == 0
    for flags in ([], ["-O"]):  # the sftp protocol, then the legacy scp protocol
        local = tmp_path / f"copy{len(flags)}.bin"
        result = lab.tool("scp", *flags, f"{LOGIN}@db-1:{remote}", str(local))
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256(local.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest(), flags
    lab.ssh(f"{LOGIN}@db-1", f"rm {remote}")
