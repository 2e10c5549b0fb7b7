"""`workers = N`: `bastion serve` runs N worker processes on the same ports (SO_REUSEPORT), each
an instance of the service; the real OpenSSH client jumps through them to a real sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, eventually, need

SESSIONS = 24  # all on one of two workers by chance: 2 in 2**24


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    need("ssh", "sshd")
    (tmp_path / "box").mkdir(mode=0o700)
    (tmp_path / "box" / "rules.toml").write_text('[defaults]\naction = "allow"\n')
    # SESSIONS at once from one address: more than the default per-source bound, held across workers
    sandbox = Sandbox(tmp_path / "box", extra={"workers": 2, "rules_file": "rules.toml",
                                               "limits": {"unauthenticated_per_source": 2 * SESSIONS}})
    sandbox.add_user("alice", ["ops"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    sandbox.write_ssh_config("alice")
    sandbox.start_bastion()
    eventually(lambda: len(events(sandbox, "instance_started")) == 2, "both workers started")
    yield sandbox
    sandbox.stop()


def events(box: Sandbox, name: str) -> list[dict[str, Any]]:
    if not box.log_path.exists():
        return []
    found = [json.loads(line) for line in box.log_path.read_text().splitlines() if line.strip()]
    return [e for e in found if e["event"] == name]


def workers(box: Sandbox) -> list[int]:
    assert box.process is not None
    found = subprocess.run(["pgrep", "-P", str(box.process.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def jump(box: Sandbox, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion",
                             f"{LOGIN}@db-1", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def cli(box: Sandbox, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bastion", *args, "-c", str(box.config_path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_sessions_spread_over_the_workers_and_each_is_recorded_by_its_own(box: Sandbox) -> None:
    assert len(workers(box)) == 2
    sessions = [jump(box, f"echo served-{n}") for n in range(SESSIONS)]
    for n, session in enumerate(sessions):
        out, err = session.communicate(timeout=120)
        assert (session.returncode, out) == (0, f"served-{n}\n".encode()), err
    rows = [json.loads(line) for line in cli(box, "recordings", "list", "--json").splitlines()]
    assert len(rows) == SESSIONS
    started = {e["instance"] for e in events(box, "instance_started")}
    assert {row["instance"] for row in rows} == started  # both workers served, each indexed its own


def test_a_worker_that_dies_is_started_again_and_the_other_serves_on(box: Sandbox) -> None:
    victim, survivor = workers(box)
    os.kill(victim, signal.SIGKILL)
    [exited] = eventually(lambda: events(box, "worker_exited"), "worker_exited")
    assert exited["pid"] == victim and exited["status"] == -signal.SIGKILL
    eventually(lambda: len(events(box, "instance_started")) == 3, "the worker started again")
    now = workers(box)
    assert survivor in now and victim not in now and len(now) == 2
    for n in range(8):
        out, err = jump(box, f"echo after-{n}").communicate(timeout=120)
        assert out == f"after-{n}\n".encode(), err


def test_reload_and_stop_reach_every_worker(box: Sandbox) -> None:
    assert box.process is not None
    pids = workers(box)
    before = len(events(box, "rules_reloaded"))
    box.process.send_signal(signal.SIGHUP)
    eventually(lambda: len(events(box, "rules_reloaded")) == before + 2, "each worker reloaded its rules")
    held = jump(box, "sleep 1; echo drained")
    eventually(lambda: events(box, "session_started"), "a session running")
    box.process.send_signal(signal.SIGTERM)
    out, _ = held.communicate(timeout=60)
    assert out == b"drained\n"  # its worker let it finish
    assert box.process.wait(timeout=60) == 0
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert len(events(box, "bastion_stopped")) == 2


def test_a_worker_that_cannot_start_fails_serve_with_its_reason(tmp_path: Path) -> None:
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "bad", extra={"workers": 2, "recordings_dir": "/proc/recordings"})
    box.add_user("alice", ["ops"])
    box.write_config()
    done = subprocess.run([sys.executable, "-m", "bastion", "serve", "-c", str(box.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "recordings_dir" in done.stderr and "worker 0 did not start" in done.stderr
    assert not done.stdout  # it never said it listened
