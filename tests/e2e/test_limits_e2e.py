"""What one client or user can hold at once: connections that never sign in, through real OpenSSH."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncssh
import pytest

from bastion.demo.sandbox import Sandbox
from bastion.ssh.limits import REFUSAL_LINE
from tests.support.lab import LOGIN, eventually, need

pytestmark = pytest.mark.e2e

TOTAL, PER_SOURCE, SESSIONS = 8, 5, 2


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "box", extra={
        "limits": {"unauthenticated": TOTAL, "unauthenticated_per_source": PER_SOURCE,
                   "sessions_per_user": SESSIONS},
    })
    box.add_user("alice", ["ops"])
    box.add_user("bob", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.write_ssh_config("alice")
    box.write_ssh_config("bob")
    box.start_bastion()
    try:
        yield box
    finally:
        box.stop()


def ssh(box: Sandbox, *args: str, user: str = "alice") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh", "-F", str(box.directory / f"ssh_config-{user}"), "-J", "bastion", *args],
        capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )


def held_session(box: Sandbox) -> subprocess.Popen[bytes]:
    """A session that lasts until its stdin closes."""
    return subprocess.Popen(
        ["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", f"{LOGIN}@db-1", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def count(box: Sandbox, event: str) -> int:
    return sum(e["event"] == event for e in box.events())


def idle_connection(stack: ExitStack, box: Sandbox, source: str) -> bytes:
    """A TCP connection from `source` (another loopback address) that never signs in: returns
    the first line the bastion sends, its SSH version or the refusal."""
    sock = stack.enter_context(socket.socket())
    sock.settimeout(30)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", box.port))
    return sock.makefile("rb").readline()


def test_connections_that_never_sign_in_cannot_lock_others_out(sandbox: Sandbox) -> None:
    with ExitStack() as flood:
        lines = [idle_connection(flood, sandbox, "127.0.0.2") for _ in range(20)]
        assert all(line.startswith(b"SSH-2.0-") for line in lines[:PER_SOURCE])
        assert lines[PER_SOURCE:] == [REFUSAL_LINE] * (20 - PER_SOURCE)
        # Another address is not held to the first one's share: a user signs in and works.
        done = ssh(sandbox, f"{LOGIN}@db-1", "echo through")
        assert (done.returncode, done.stdout) == (0, b"through\n"), done.stderr

        # Filled to the total from one more address: now nobody new gets in ...
        more = [idle_connection(flood, sandbox, "127.0.0.3") for _ in range(TOTAL - PER_SOURCE + 1)]
        assert more[-1] == REFUSAL_LINE and all(line.startswith(b"SSH-2.0-") for line in more[:-1])
        refused = ssh(sandbox, f"{LOGIN}@db-1", "echo through")
        assert refused.returncode == 255 and refused.stdout == b""

    # ... until they go.
    eventually(lambda: sum(e["event"] == "connection_closed" for e in sandbox.events()) >= TOTAL + 1,
               "the idle connections' ends")
    done = ssh(sandbox, f"{LOGIN}@db-1", "echo again")
    assert (done.returncode, done.stdout) == (0, b"again\n"), done.stderr

    sandbox.stop()  # the last summary is written at the latest when the bastion stops
    summaries = [e for e in sandbox.events() if e["event"] == "connections_refused"]
    assert summaries[0]["count"] == 1 and summaries[0]["clients"] == {"127.0.0.2": 1}
    # The rest come in summaries, not a line each.
    assert sum(int(str(s["count"])) for s in summaries) == 20 - PER_SOURCE + 2
    assert len(summaries) < 20 - PER_SOURCE + 2
    opened = [e["client"] for e in sandbox.events() if e["event"] == "connection_opened"]
    assert sum(str(c).startswith("127.0.0.2:") for c in opened) == PER_SOURCE


def test_one_user_holds_at_most_sessions_per_user(sandbox: Sandbox) -> None:
    held = [held_session(sandbox) for _ in range(SESSIONS)]
    try:
        eventually(lambda: count(sandbox, "session_started") >= SESSIONS, "alice's sessions")
        refused = ssh(sandbox, f"{LOGIN}@db-1", "echo more")
        assert refused.returncode == 255 and refused.stdout == b""
        assert (b"open failed: resource shortage: bastion: too many sessions: alice has 2 open, "
                b"limits.sessions_per_user is 2" in refused.stderr), refused.stderr
        [reached] = [e for e in sandbox.events() if e["event"] == "session_limit_reached"]
        assert (reached["user"], reached["sessions"], reached["limit"]) == ("alice", SESSIONS, SESSIONS)
        # Another user is not held to alice's count.
        other = ssh(sandbox, f"{LOGIN}@db-1", "echo bob", user="bob")
        assert (other.returncode, other.stdout) == (0, b"bob\n"), other.stderr

        out, _ = held[0].communicate(b"one\n", timeout=30)
        assert out == b"one\n"
        # alice's connections that ended: the refused one's and the first session's.
        eventually(lambda: sum(e["event"] == "connection_closed" and e.get("user") == "alice"
                               for e in sandbox.events()) >= 2, "the first session's end")
        again = ssh(sandbox, f"{LOGIN}@db-1", "echo again")
        assert (again.returncode, again.stdout) == (0, b"again\n"), again.stderr
    finally:
        for proc in held:
            if proc.poll() is None:
                proc.communicate(b"", timeout=30)


@pytest.fixture
def strict_target(tmp_path: Path) -> Iterator[Sandbox]:
    """A target whose sshd lets one connection at a time be unauthenticated, dropping the rest."""
    need("ssh", "sshd")
    box = Sandbox(tmp_path / "strict")
    box.add_user("alice", ["ops"])
    server = box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    server.stop()
    server.max_startups = "1:100:1"
    server.start()
    box.write_ssh_config("alice")
    box.start_bastion()
    try:
        yield box
    finally:
        box.stop()


def test_a_burst_of_sessions_gets_past_the_targets_max_startups(strict_target: Sandbox) -> None:
    burst = [
        subprocess.Popen(
            ["ssh", "-F", str(strict_target.directory / "ssh_config-alice"), "-J", "bastion",
             f"{LOGIN}@db-1", f"echo session {n}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for n in range(10)
    ]
    results = [(proc.communicate(timeout=120), proc.returncode) for proc in burst]
    for n, ((out, err), status) in enumerate(results):
        assert (status, out) == (0, f"session {n}\n".encode()), err
    connected = [e for e in strict_target.events() if e["event"] == "upstream_connected"]
    assert len(connected) == 10 and count(strict_target, "upstream_failed") == 0
    # The target did drop some: those sessions got in on a later attempt.
    assert any(int(str(e.get("attempts", 1))) > 1 for e in connected)
    assert "past MaxStartups" in strict_target.servers["db-1"].log_path.read_text()


def test_channels_with_a_tiny_maximum_packet_size_are_refused(sandbox: Sandbox) -> None:
    """A maximum packet size of 1 with a large window would have the bastion send a packet per
    byte: refused, on the outer connection's jump and on the inner connection's session alike."""
    key = str(sandbox.key_path("alice"))

    async def hostile() -> tuple[str, str, str]:
        async with asyncssh.connect("127.0.0.1", sandbox.port, username="alice", client_keys=[key],
                                    known_hosts=None, config=None, agent_path=None) as outer:
            with pytest.raises(asyncssh.ChannelOpenError) as jump:
                await outer.create_connection(asyncssh.SSHTCPSession, "db-1", 22,
                                              window=1 << 30, max_pktsize=1)
            async with asyncssh.connect("db-1", 22, tunnel=outer, username=LOGIN, client_keys=[key],
                                        known_hosts=None, config=None, agent_path=None) as inner:
                with pytest.raises(asyncssh.ChannelOpenError) as session:
                    await inner.create_session(asyncssh.SSHClientSession, "yes", window=1 << 30,
                                               max_pktsize=1)
                # The same connection still serves a session of ordinary size.
                done = await inner.run("echo ordinary", check=True)
                return jump.value.reason, session.value.reason, str(done.stdout)

    jump, session, output = asyncio.run(hostile())
    refusal = "bastion: a maximum packet size of 1 bytes is too small (at least 1024)"
    assert jump == refusal and session == refusal
    assert output == "ordinary\n"
