"""Running it as a service: the metrics listener scraped during real sessions (and its
exposition checked by Prometheus's own promtool), /healthz and /readyz."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, Lab, eventually, need

RULES = """\
[[rule]]
name = "no-rm-rf-root"
action = "deny"
program = "rm"
args = ["-*[rR]*", "/"]
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str]]:
    need("ssh", "sshd")
    sandbox = Sandbox(tmp_path_factory.mktemp("ops"))
    (sandbox.directory / "rules.toml").write_text(RULES)
    port = free_port()
    sandbox.extra.update({"rules_file": "rules.toml", "metrics": {"listen": f"127.0.0.1:{port}"}})
    sandbox.add_user("alice", ["ops"])
    sandbox.add_user("mallory", ["ops"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    sandbox.users["mallory"]["keys"] = []  # her key is known to nobody
    ssh_config = sandbox.write_ssh_config("alice")
    try:  # the target sshd runs already: stopped even if the bastion does not start
        sandbox.start_bastion()
        yield Lab(sandbox, ssh_config), f"http://127.0.0.1:{port}"
    finally:
        sandbox.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(seen: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return seen.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool() -> str:
    found = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
    if not Path(found).exists():
        pytest.fail("promtool is missing: scripts/test installs it")
    return found


def test_counters_move_with_real_sessions_and_promtool_accepts_the_exposition(ops: tuple[Lab, str]) -> None:
    lab, url = ops
    status, text = get(f"{url}/metrics")
    assert status == 200
    before = samples(text)

    assert lab.ssh(f"{LOGIN}@db-1", "echo hello").stdout == b"hello\n"
    masked = lab.ssh(f"{LOGIN}@db-1", "echo AKIAIOSFODNN7EXAMPLE")
    assert b"AKIAIOSFODNN7EXAMPLE" not in masked.stdout and masked.stdout.startswith(b"AKIA")
    denied = lab.ssh(f"{LOGIN}@db-1", "rm -rf /")
    assert denied.returncode == 1 and b"denied by rule" in denied.stderr
    assert lab.ssh(f"{LOGIN}@db-1", "true", user="mallory").returncode == 255

    def moved() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        seen = samples(get(f"{url}/metrics")[1])
        return seen if value(seen, "bastion_session_bytes_total", direction="out") > \
            value(before, "bastion_session_bytes_total", direction="out") else None

    after = eventually(moved, "session bytes counted")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("bastion_sessions_total", kind="exec") == 3
    assert delta("bastion_authentications_total", method="publickey", result="success") >= 3
    assert delta("bastion_authentications_total", method="publickey", result="failure") >= 1
    assert delta("bastion_connections_total", result="accepted") >= 4
    assert delta("bastion_screening_decisions_total", action="deny", rule="no-rm-rf-root") == 1
    assert delta("bastion_screening_decisions_total", action="allow", rule="") == 2
    assert delta("bastion_masking_hits_total", detector="aws-access-key-id", direction="output") == 1
    assert delta("bastion_certificates_issued_total", kind="session") == 3
    assert delta("bastion_session_setup_seconds_count") == 3
    assert delta("bastion_session_bytes_total", direction="out") >= len(b"hello\n")
    assert value(after, "bastion_sessions_active", kind="exec") == 0
    assert value(after, "bastion_approvals_pending") == 0
    assert value(after, "bastion_recorder_backlog_bytes") >= 0
    assert ("bastion_event_loop_lag_seconds", ()) in after
    assert value(after, "process_open_fds") > 0

    check = subprocess.run([promtool(), "check", "metrics"], input=get(f"{url}/metrics")[1],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""  # not even a naming warning


def test_health_and_readiness(ops: tuple[Lab, str]) -> None:
    lab, url = ops
    assert get(f"{url}/healthz") == (200, '{"alive": true}')
    status, body = get(f"{url}/readyz")
    assert status == 200, body
    assert json.loads(body) == {"ready": True, "checks": {"keys": "ok", "state_db": "ok", "listening": "ok",
                                                          "recorder": "ok", "recordings_dir": "ok"}}
    db = lab.sandbox.directory / "bastion.db"
    aside = db.with_name("bastion.db.aside")
    db.rename(aside)
    try:
        status, body = get(f"{url}/readyz")
    finally:
        aside.rename(db)
    assert status == 503
    assert json.loads(body)["checks"]["state_db"].startswith(f"{db}: unable to open database file")
    assert get(f"{url}/readyz")[0] == 200


def test_systemd_notify_the_listening_line_the_file_limit_and_log_reopening(tmp_path: Path) -> None:
    """As systemd runs it (Type=notify): READY=1 on a real NOTIFY_SOCKET datagram socket once
    it listens, STOPPING=1 when the drain starts; the listening line on stdout though the log
    goes to a file; the soft RLIMIT_NOFILE raised to the hard one; SIGUSR1 and SIGHUP reopen the
    log file that logrotate moved away."""
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "box")
    (box.directory / "rules.toml").write_text(RULES)
    box.extra["rules_file"] = "rules.toml"
    box.add_user("alice", ["ops"])
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    process: subprocess.Popen[str] | None = None
    try:
        box.add_target("db-1", logins=[LOGIN], groups=["ops"])
        lab = Lab(box, box.write_ssh_config("alice"))
        config = box.write_config()
        process = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(config)],
                                   env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=lower_limit)  # noqa: PLW1509 - only setrlimit, before exec
        ready = notify.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in ready.splitlines())
        assert fields["READY"] == "1" and fields["MAINPID"] == str(process.pid)
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == (f"listening on 127.0.0.1:{box.port}, 1 target, recording to "
                        f"{box.directory / 'recordings'}, log to {box.log_path}")
        assert fields["STATUS"] == line
        limit = lab.events("open_files_limit")
        assert limit == [{**limit[0], "was": low, "soft": limit[0]["hard"],
                          "sessions": (limit[0]["hard"] - 64) // 2}]
        assert lab.ssh(f"{LOGIN}@db-1", "echo one").stdout == b"one\n"

        rotated = box.log_path.with_name("bastion.log.1")
        box.log_path.rename(rotated)
        process.send_signal(signal.SIGUSR1)
        eventually(box.log_path.exists, "the log file opened again")
        assert lab.ssh(f"{LOGIN}@db-1", "echo two").stdout == b"two\n"
        eventually(lambda: lab.events("session_ended"), "the session logged in the new file")
        assert "session_ended" in rotated.read_text()  # the first session's, before the rotation

        box.log_path.rename(rotated)
        process.send_signal(signal.SIGHUP)
        eventually(lambda: lab.events("rules_reloaded"), "SIGHUP: reopened, and the rules reloaded")

        process.send_signal(signal.SIGTERM)
        stopping = notify.recv(4096).decode()
        assert stopping.splitlines()[0] == "STOPPING=1"
        assert process.wait(timeout=60) == 0
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        notify.close()
        box.stop()


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (the unit is verified where it is)")
    unit = (Path(__file__).parents[2] / "contrib" / "systemd" / "bastion.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "User=bastion"):
        assert f"\n{line}\n" in unit
    assert "ReadWritePaths=/var/lib/bastion /var/log/bastion" in unit and "LimitNOFILE=" in unit
    # verify wants the commands to exist: this checkout's bastion stands in for the installed one.
    here = tmp_path / "bastion.service"
    here.write_text(unit.replace("/usr/local/bin/bastion", str(Path(sys.executable).parent / "bastion")))
    result = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_bastions_own_words_to_the_user_are_in_the_replay(ops: tuple[Lab, str]) -> None:
    """A denial is not only a marker: the recording holds the line the user read, as output."""
    lab, _ = ops
    denied = lab.ssh(f"{LOGIN}@db-1", "rm -rf / # replay-me")
    assert denied.returncode == 1
    said = denied.stderr.decode().strip()
    assert said.startswith("bastion: denied by rule 'no-rm-rf-root'")
    decision = eventually(lambda: [e for e in lab.events("command_decision") if "replay-me" in str(e["command"])],
                          "the decision")
    session = str(decision[0]["session"])
    eventually(lambda: [e for e in lab.events("session_ended") if e["session"] == session], "the session's end")
    cast = next((lab.sandbox.directory / "recordings").rglob(f"{session}.cast"))

    def written() -> list[Any]:
        """The cast's events once the recorder process wrote the denial (it writes behind the relay)."""
        events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
        return events if any(e[1] == "o" and "denied by rule" in e[2] for e in events) else []

    events = eventually(written, "the denial in the recording")
    output = "".join(e[2] for e in events if e[1] == "o")
    assert said in output
    stderr_at = next(i for i, e in enumerate(events) if e[1] == "m" and e[2] == "stderr")
    said_at = next(i for i, e in enumerate(events) if e[1] == "o" and "denied by rule" in e[2])
    assert stderr_at < said_at  # without a pty, stderr stays told apart
