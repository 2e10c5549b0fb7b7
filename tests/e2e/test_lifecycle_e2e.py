"""A bastion of its own: graceful stop, allowed port forwarding, bounded memory under back-pressure."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, eventually, need

pytestmark = pytest.mark.e2e


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "box", extra={"grace_period": "3s",
                                            "session": {"allow_port_forwarding": True}})
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.write_ssh_config("alice")
    box.start_bastion()
    try:
        yield box
    finally:
        box.stop()


def ssh(box: Sandbox, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,  # type: ignore[call-overload]
    )


def wait_for_events(box: Sandbox, name: str, count: int, timeout: float = 20) -> None:
    eventually(lambda: sum(e["event"] == name for e in box.events()) >= count, f"{count} {name} events",
               timeout)


def test_sigterm_drains_then_ends_sessions(sandbox: Sandbox) -> None:
    short = ssh(sandbox, f"{LOGIN}@db-1", "sleep 1; echo finished")
    long = ssh(sandbox, f"{LOGIN}@db-1", "sleep 60; echo never")
    wait_for_events(sandbox, "session_started", 2)
    assert sandbox.process is not None
    sandbox.process.send_signal(signal.SIGTERM)
    wait_for_events(sandbox, "bastion_stopping", 1)
    refused = ssh(sandbox, f"{LOGIN}@db-1", "true")
    assert refused.wait(30) == 255  # no longer accepting
    out, _ = short.communicate(timeout=30)
    assert (short.returncode, out) == (0, b"finished\n")
    out, err = long.communicate(timeout=30)
    assert long.returncode == 255 and b"never" not in out
    assert b"bastion: the bastion is shutting down" in err
    assert sandbox.process.wait(30) == 0
    assert sandbox.events()[-1]["event"] == "bastion_stopped"


def test_port_forwarding_when_allowed(sandbox: Sandbox) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def echo_once() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        threading.Thread(target=echo_once, daemon=True).start()
        proc = ssh(sandbox, "-W", f"127.0.0.1:{port}", f"{LOGIN}@db-1", stdin=subprocess.PIPE)
        out, err = proc.communicate(b"ping through the target\n", timeout=30)
    assert out == b"PING THROUGH THE TARGET\n", err


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_stalled_reader_does_not_grow_bastion_memory(sandbox: Sandbox) -> None:
    assert sandbox.process is not None
    pid = sandbox.process.pid
    warm = ssh(sandbox, f"{LOGIN}@db-1", "head -c 20000000 /dev/zero")
    warm.communicate(timeout=60)
    before = _rss_kib(pid)
    # 200 MB offered, nobody reads: the target must be paused, not buffered in the bastion.
    stalled = ssh(sandbox, f"{LOGIN}@db-1", "head -c 200000000 /dev/zero | tr '\\0' x")
    time.sleep(4)
    during = _rss_kib(pid)
    assert stalled.stdout is not None
    total = 0
    while chunk := stalled.stdout.read(1 << 20):
        total += len(chunk)
    stalled.wait(60)
    assert total == 200_000_000
    assert during - before < 64 * 1024, f"bastion grew by {during - before} KiB while the reader stalled"
