"""The jump path end to end: real OpenSSH client -> bastion -> real OpenSSH sshd."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from tests.support.lab import LOGIN, Lab, eventually, sha256

pytestmark = pytest.mark.e2e
TARGET = f"{LOGIN}@db-1"


def test_exec_output_and_exit_code(lab: Lab) -> None:
    result = lab.ssh(TARGET, "echo hello from $(hostname -s >/dev/null; echo target); exit 7")
    assert result.stdout == b"hello from target\n"
    assert result.returncode == 7


def test_stderr_is_kept_apart_from_stdout(lab: Lab) -> None:
    result = lab.ssh(TARGET, "echo out; echo err >&2; echo out2")
    assert result.returncode == 0
    assert result.stdout == b"out\nout2\n"
    assert b"err\n" in result.stderr
    assert b"out" not in result.stderr


def test_alias_reaches_the_same_target(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@db-1.internal", "echo via-alias")
    assert result.stdout == b"via-alias\n", result.stderr


def test_binary_stdin_round_trip(lab: Lab) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    result = lab.ssh(TARGET, "cat", input=payload, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sha256(result.stdout) == sha256(payload)
    counted = lab.ssh(TARGET, "sha256sum", input=payload, timeout=120)
    assert counted.stdout.split()[0].decode() == sha256(payload)


def test_env_is_allow_listed(lab: Lab) -> None:
    env = {**os.environ, "LANG": "C.UTF-8", "LC_TIME": "C", "BASTION_SECRET_VAR": "leak"}
    result = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", "SendEnv=LANG LC_* BASTION_SECRET_VAR",
         "-J", "bastion", TARGET, "echo lang=$LANG lctime=$LC_TIME secret=$BASTION_SECRET_VAR"],
        capture_output=True, env=env, timeout=60, check=False,
    )
    assert result.stdout == b"lang=C.UTF-8 lctime=C secret=\n", result.stderr


def test_exit_signal_is_passed_back(lab: Lab) -> None:
    result = lab.ssh(TARGET, "kill -KILL $$")
    assert result.returncode == 255
    # the client may be gone before the bastion has written the session's end
    ended = eventually(lambda: [e for e in lab.events("session_ended") if e.get("command") == "kill -KILL $$"],
                       "the session's end logged")
    assert ended[-1]["exit_signal"] == "KILL"


def test_session_certificate_as_the_target_saw_it(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # ExposeAuthInfo hands the shell the exact certificate sshd accepted.
    before = time.time()
    result = lab.ssh(TARGET, 'cat "$SSH_USER_AUTH"')
    assert result.returncode == 0, result.stderr
    method, _, cert_line = result.stdout.decode().strip().partition(" ")
    assert method == "publickey"
    cert_file = tmp_path / "session-cert.pub"
    cert_file.write_text(cert_line + "\n")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert_file)], capture_output=True,
                             text=True, check=True).stdout
    assert "user certificate" in listing
    principals = listing.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == [LOGIN]
    assert 'Key ID: "bastion user=alice target=db-1 login=' + LOGIN + " session=" in listing
    valid = listing.split("Valid: from ")[1].splitlines()[0]
    start, end = (time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) for t in valid.split(" to "))
    assert end - start == 150  # 2 minutes, backdated 30 s
    assert start <= before and end >= before
    extensions = listing.split("Extensions:")[1].split()
    assert extensions == ["permit-pty"]
    # The target's own log names the same key id (LogLevel VERBOSE).
    sshd_log = lab.sandbox.servers["db-1"].log_path.read_text()
    assert "ID bastion user=alice target=db-1 login=" + LOGIN in sshd_log


def test_scp_sftp_protocol_round_trip(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "up.bin"
    src.write_bytes(payload)
    remote = f"/tmp/bastion-scp-{os.getpid()}.bin"
    up = lab.tool("scp", str(src), f"{TARGET}:{remote}")
    assert up.returncode == 0, up.stderr
    back = tmp_path / "down.bin"
    down = lab.tool("scp", f"{TARGET}:{remote}", str(back))
    assert down.returncode == 0, down.stderr
    assert sha256(back.read_bytes()) == sha256(payload)


def test_scp_legacy_protocol_round_trip(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(2 * 1024 * 1024 + 5)
    src = tmp_path / "legacy.bin"
    src.write_bytes(payload)
    remote = f"/tmp/bastion-scp-O-{os.getpid()}.bin"
    up = lab.tool("scp", "-O", str(src), f"{TARGET}:{remote}")
    assert up.returncode == 0, up.stderr
    back = tmp_path / "legacy-down.bin"
    down = lab.tool("scp", "-O", f"{TARGET}:{remote}", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == payload


def test_sftp_batch_round_trip(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(1024 * 1024 + 3)
    (tmp_path / "s.bin").write_bytes(payload)
    remote = f"/tmp/bastion-sftp-{os.getpid()}"
    batch = tmp_path / "batch"
    batch.write_text(
        f"-rm {remote}.bin\nput {tmp_path / 's.bin'} {remote}.bin\n"
        f"rename {remote}.bin {remote}.moved\nget {remote}.moved {tmp_path / 'back.bin'}\n"
        f"rm {remote}.moved\n"
    )
    result = lab.tool("sftp", "-b", str(batch), TARGET)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_control_master_carries_two_sessions(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control = tmp_path / "cm"
    opts = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=30"]
    first = lab.ssh(*opts, TARGET, "echo one")
    second = lab.ssh(*opts, TARGET, "echo two")
    assert (first.stdout, second.stdout) == (b"one\n", b"two\n")
    subprocess.run(["ssh", "-F", str(lab.ssh_config), "-o", f"ControlPath={control}", "-O", "exit",
                    "db-1"], capture_output=True, check=False, timeout=30)
    started = [e["session"] for e in lab.events("session_started")]
    # Both channels ran on one inner connection: the second session id extends the first.
    assert any(s.endswith(".2") and s[:-2] in started for s in started)


def test_port_forwarding_inside_the_jump_is_refused(lab: Lab) -> None:
    result = lab.ssh("-o", "ExitOnForwardFailure=yes", "-W", "127.0.0.1:9", TARGET)
    assert result.returncode == 255
    assert lab.events("forward_refused")


# -- refusals ---------------------------------------------------------------------------------


def test_unknown_key_is_refused(lab: Lab) -> None:
    result = lab.ssh(TARGET, "true", user="mallory")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    assert any(e["user"] == "mallory" for e in lab.events("auth_failed"))


def test_unconfigured_target_is_refused(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@127.0.0.1", "true")
    assert result.returncode == 255
    assert b"administratively prohibited" in result.stderr
    assert b"not a configured target" in result.stderr
    assert any(e["destination"] == "127.0.0.1:22" for e in lab.events("jump_refused"))


def test_target_outside_the_users_groups_is_refused(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@secret-1", "true")
    assert result.returncode == 255
    assert b"alice may not reach secret-1" in result.stderr


def test_login_not_allowed_is_permission_denied(lab: Lab) -> None:
    result = lab.ssh("not-a-login@db-1", "true")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    assert b"bastion: login 'not-a-login' is not allowed on db-1" in result.stderr


def test_target_down_says_so_in_one_line(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@down-1", "true")
    assert result.returncode == 255
    assert b"bastion: cannot reach down-1: connection refused" in result.stderr


def test_target_host_key_mismatch_fails_closed(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@moved-1", "echo should-not-run")
    assert result.returncode == 255
    assert b"should-not-run" not in result.stdout
    assert b"host key of moved-1 does not match" in result.stderr


def test_unpinned_target_fails_closed(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@nowhere-1", "true")
    assert result.returncode == 255
    assert b"no host key is pinned for nowhere-1" in result.stderr


def test_target_refusing_the_certificate_is_permission_denied_with_a_hint(lab: Lab) -> None:
    result = lab.ssh(f"{LOGIN}@untrusting-1", "true")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    failed = [e for e in lab.events("upstream_failed") if e["target"] == "untrusting-1"]
    assert failed and "TrustedUserCAKeys" in str(failed[-1]["hint"])


def test_no_key_file_is_readable_by_others(lab: Lab) -> None:
    keys_dir = lab.sandbox.directory / "hostkeys"
    private = [p for p in keys_dir.iterdir() if not p.name.endswith(".pub")]
    assert {p.name for p in private} >= {"bastion_host", "inner_host", "host_ca", "user_ca", "login_ca"}
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(lab.sandbox.log_path.stat().st_mode) & 0o077 == 0


def test_session_end_is_logged_with_bytes_and_exit_status(lab: Lab) -> None:
    lab.ssh(TARGET, "printf 12345; exit 4")
    ended = eventually(lambda: [e for e in lab.events("session_ended") if e.get("command") == "printf 12345; exit 4"],
                       "the session's end logged")
    event = ended[-1]
    assert event["exit_status"] == 4 and event["bytes_out"] == 5
    assert event["user"] == "alice" and event["target"] == "db-1" and event["login"] == LOGIN
