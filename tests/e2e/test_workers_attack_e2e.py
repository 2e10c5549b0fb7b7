"""`workers = 2` on the default SQLite state, attacked: what one worker decides reaches the other,
a user cannot double their limits by landing on both, a worker killed with sessions and a held
command leaves nothing live behind, and many sessions at once do not lock the database. Real
OpenSSH clients and sshd; the bastion's own commands over `ssh bastion ...` are sent through a
connection the test has pinned to one worker (SO_REUSEPORT picks a worker per connection: the
test opens a master connection, asks the kernel which worker holds it, and keeps the one it
wants)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.core.masker import TextMasker
from bastion.demo.sandbox import Sandbox
from bastion.state.approvals import ApprovalState, ApprovalStore
from bastion.state.live import LiveSessions
from recorder.index import RecordingIndex
from tests.support.lab import LOGIN, eventually, need
from tests.support.sessions import unique

pytestmark = pytest.mark.e2e

RULES = """
[defaults]
action = "allow"

[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "5m"
"""
LIMIT = 2  # [limits] sessions_per_user
PER_SOURCE = 4  # [limits] unauthenticated_per_source
BURST = 40  # sessions started at once


def start_box(directory: Path, *, sessions_per_user: int = 100, per_source: int = 100) -> Sandbox:
    need("ssh", "sshd", "ss")
    directory.mkdir(mode=0o700)
    (directory / "rules.toml").write_text(RULES)
    sandbox = Sandbox(directory, extra={
        "workers": 2, "rules_file": "rules.toml", "state": {"lease": "3s"},
        "limits": {"sessions_per_user": sessions_per_user, "unauthenticated_per_source": per_source},
        "access": {"admins": ["admin"]},
    })
    for user, groups in {"alice": ["ops"], "bob": ["dba"], "carol": ["ops"], "ann": ["admin"]}.items():
        sandbox.add_user(user, groups)
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    for user in sandbox.users:
        sandbox.write_ssh_config(user)
    sandbox.start_bastion()
    eventually(lambda: len(events(sandbox, "instance_started")) == 2, "both workers started")
    return sandbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = start_box(tmp_path / "box")
    yield sandbox
    sandbox.stop()


# -- what the test reads --------------------------------------------------------------------------


def events(box: Sandbox, name: str) -> list[dict[str, Any]]:
    return [e for e in box.events() if e["event"] == name]


def workers(box: Sandbox) -> list[int]:
    assert box.process is not None
    found = subprocess.run(["pgrep", "-P", str(box.process.pid)], capture_output=True, text=True, check=False)
    return sorted(int(pid) for pid in found.stdout.split())


def instance_of(box: Sandbox, pid: int) -> str:
    """The instance id a worker process runs as (`host-pid-random`)."""
    return eventually(lambda: next((e["instance"] for e in events(box, "instance_started")
                                    if f"-{pid}-" in e["instance"]), None), f"worker {pid}'s instance")


def live(box: Sandbox, user: str | None = None) -> list[Any]:
    store = LiveSessions(box.directory / "bastion.db")
    try:
        return [s for s in store.list() if user is None or s.user == user]
    finally:
        store.close()


def socket_owner(local_port: int, peer_port: int) -> int | None:
    """The pid of the process holding the established TCP socket 127.0.0.1:local -> :peer."""
    found = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=False)
    for line in found.stdout.splitlines():
        ports = re.findall(r"127\.0\.0\.1:(\d+)", line)
        pid = re.search(r"pid=(\d+)", line)
        if ports[:2] == [str(local_port), str(peer_port)] and pid:
            return int(pid.group(1))
    return None


def client_port_of(process: int, server_port: int) -> int | None:
    """The local port of `process`'s connection to `server_port`."""
    found = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=False)
    for line in found.stdout.splitlines():
        ports = re.findall(r"127\.0\.0\.1:(\d+)", line)
        if len(ports) >= 2 and ports[1] == str(server_port) and f"pid={process}," in line:
            return int(ports[0])
    return None


# -- what the test does -----------------------------------------------------------------------------


def ssh_config(box: Sandbox, user: str) -> str:
    return str(box.directory / f"ssh_config-{user}")


def jump(box: Sandbox, command: str, user: str = "alice") -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ssh", "-F", ssh_config(box, user), "-J", "bastion", f"{LOGIN}@db-1", command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def master_connection(box: Sandbox, user: str, control: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A master connection of `user` to the bastion, and the pid of the worker holding it."""
    master = subprocess.Popen(["ssh", "-F", ssh_config(box, user), "-o", "ControlMaster=yes",
                               "-o", f"ControlPath={control}", "-N", "bastion"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    eventually(lambda: control.exists() or master.poll() is not None, "the master connection")
    assert master.poll() is None, master.stderr.read() if master.stderr else ""
    port = eventually(lambda: client_port_of(master.pid, box.port), "the master's port")
    return master, eventually(lambda: socket_owner(box.port, port), "the worker holding it")


@contextlib.contextmanager
def pinned(box: Sandbox, user: str, worker: int) -> Iterator[Path]:
    """A master connection of `user` served by the worker with pid `worker`: the control socket
    to send `ssh bastion ...` commands through it."""
    for _ in range(60):
        control = Path(f"/tmp/ctl-{uuid.uuid4().hex[:10]}")  # short: a socket path is < 108 bytes
        master, owner = master_connection(box, user, control)
        try:
            if owner == worker:
                yield control
                return
        finally:
            master.kill()  # the test's own tool: how it ends is not what is tested
            master.wait(timeout=30)
            control.unlink(missing_ok=True)
    raise AssertionError(f"no connection reached worker {worker} in 60 tries")


def own(box: Sandbox, user: str, control: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """`ssh bastion COMMAND` as `user`, through the pinned connection."""
    return subprocess.run(["ssh", "-F", ssh_config(box, user), "-o", "ControlMaster=no",
                           "-o", f"ControlPath={control}", "bastion", *command],
                          capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


def request_for(box: Sandbox, marker: Path) -> str:
    return eventually(lambda: next((str(e["request"]) for e in events(box, "approval_requested")
                                    if str(marker) in str(e["command"])), None), f"the request for {marker}")


def sessions_on_both(box: Sandbox, user: str, command: str) -> tuple[dict[str, Any], list[subprocess.Popen[bytes]]]:
    """Sessions of `user` running `command` until each worker serves one: {instance: session}."""
    procs: list[subprocess.Popen[bytes]] = []
    instances = {instance_of(box, pid) for pid in workers(box)}
    for _ in range(16):
        procs.append(jump(box, command, user))
        eventually(lambda: len(live(box, user)) == len(procs), "the session live")
        by_instance = {s.instance: s for s in live(box, user)}
        if set(by_instance) == instances:
            return by_instance, procs
    raise AssertionError("16 sessions all reached one worker")


# -- the attacks ----------------------------------------------------------------------------------------


def test_a_command_held_on_one_worker_is_released_by_an_approval_on_the_other(box: Sandbox) -> None:
    marker = unique("needs-approval")
    held = jump(box, f"touch {marker} && echo ran-it")
    request = request_for(box, marker)
    [row] = eventually(lambda: live(box, "alice"), "alice's session live")
    holder = next(pid for pid in workers(box) if instance_of(box, pid) == row.instance)
    other = next(pid for pid in workers(box) if pid != holder)
    with pinned(box, "bob", other) as control:
        started = time.monotonic()
        approved = own(box, "bob", control, "approvals", "approve", request)
        assert approved.returncode == 0, approved.stderr
        assert "request is approved" in approved.stdout
        out, err = held.communicate(timeout=60)
        released = time.monotonic() - started
    assert out == b"ran-it\n", err
    assert marker.exists()
    print(f"\nreleased {released:.2f} s after the approval on the other worker")  # reported, not asserted


def test_sessions_list_and_kill_reach_the_sessions_of_the_other_worker(box: Sandbox) -> None:
    by_instance, procs = sessions_on_both(box, "carol", "sleep 300; echo not-ended")
    try:
        admin_on = workers(box)[0]
        mine = instance_of(box, admin_on)
        with pinned(box, "ann", admin_on) as control:
            listed = own(box, "ann", control, "sessions", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert {r["id"] for r in rows} == {s.session for s in live(box, "carol")}
            assert {r["instance"] for r in rows} == set(by_instance)  # both workers' sessions
            [(far, victim)] = [(i, s) for i, s in by_instance.items() if i != mine]
            killed = own(box, "ann", control, "sessions", "kill", victim.session, "--reason", "attack-test")
            assert killed.returncode == 0, killed.stderr
        eventually(lambda: victim.session not in {s.session for s in live(box, "carol")}, "the row gone")
        ended = eventually(lambda: next((p for p in procs if p.poll() is not None), None), "a session ended")
        out, _ = ended.communicate(timeout=30)
        assert b"not-ended" not in out
        assert len([p for p in procs if p.poll() is None]) == len(procs) - 1  # only the killed one ended
        assert any(e["session"] == victim.session for e in events(box, "session_killed")), far
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_users_revoke_ends_the_user_s_sessions_on_every_worker(box: Sandbox) -> None:
    _, procs = sessions_on_both(box, "carol", "sleep 300; echo not-ended")
    try:
        revoked = subprocess.run([sys.executable, "-m", "bastion", "users", "revoke", "carol",
                                  "-c", str(box.config_path)], capture_output=True, text=True, timeout=60,
                                 check=False, env={**os.environ})
        assert revoked.returncode == 0, revoked.stderr
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert b"not-ended" not in out
            assert b"your access has been revoked" in err
        eventually(lambda: not live(box, "carol"), "carol's rows gone")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = start_box(tmp_path / "limited", sessions_per_user=LIMIT)
    yield sandbox
    sandbox.stop()


def test_sessions_per_user_holds_across_workers(limited: Sandbox) -> None:
    """A user opening many sessions at once, spread by the kernel over both workers, holds at most
    `sessions_per_user` of them."""
    box = limited
    procs = [jump(box, "sleep 300; echo not-ended") for _ in range(4 * LIMIT)]
    try:
        refused = eventually(lambda: [p for p in procs if p.poll() is not None] if len(
            [p for p in procs if p.poll() is not None]) >= 3 * LIMIT else None,
            "the sessions over the limit refused", timeout=60)
        for proc in refused:
            _, err = proc.communicate(timeout=30)
            assert b"too many sessions" in err, err
        assert len(refused) == 3 * LIMIT
        eventually(lambda: len(live(box, "alice")) == LIMIT, "alice's sessions live")
        assert len(events(box, "session_limit_reached")) == 3 * LIMIT
        # Once one ends, another may start.
        running = [p for p in procs if p.poll() is None]
        running[0].kill()
        running[0].wait()
        eventually(lambda: len(live(box, "alice")) == LIMIT - 1, "the slot given back")
        again = jump(box, "echo again")
        out, err = again.communicate(timeout=60)
        assert out == b"again\n", err
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_jump_is_refused_when_the_database_cannot_count_the_user_s_sessions(limited: Sandbox) -> None:
    """Fail closed: while another process holds the SQLite write lock past the bastion's wait,
    the count of the user's sessions cannot be taken, and the jump is refused with why."""
    locker = sqlite3.connect(limited.directory / "bastion.db", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        proc = jump(limited, "echo should-not-run")
        out, err = proc.communicate(timeout=120)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert proc.returncode == 255 and out == b"", err
    assert b"cannot count alice's open sessions" in err, err
    [refused] = [e for e in events(limited, "jump_refused") if "cannot count" in e["reason"]]
    assert refused["user"] == "alice"
    out, err = jump(limited, "echo runs-again").communicate(timeout=60)
    assert out == b"runs-again\n", err


def test_unauthenticated_per_source_holds_across_workers(tmp_path: Path) -> None:
    """The kernel spreads one address's connections over both workers; they count on one board,
    so the address holds PER_SOURCE waiting connections in all, not PER_SOURCE at each."""
    box, held = start_box(tmp_path / "per-source", per_source=PER_SOURCE), []
    try:
        for _ in range(4 * PER_SOURCE):
            s = socket.create_connection(("127.0.0.1", box.port), timeout=20)
            held.append(s)
        first_lines = [s.makefile("rb").readline() for s in held]
        refused = [line for line in first_lines if line.startswith(b"bastion: too many")]
        assert len(refused) == 3 * PER_SOURCE, first_lines
    finally:
        for s in held:
            s.close()
        box.stop()


def test_a_worker_killed_with_sessions_and_a_held_command(box: Sandbox) -> None:
    """Its users' connections drop; the other worker (and the one started in its place) refuse
    to approve its request and cancel it once its lease runs out; its live rows go and its
    recordings end as incomplete: nothing stays live."""
    _, procs = sessions_on_both(box, "carol", "sleep 300; echo not-ended")
    marker = unique("needs-approval")
    held = jump(box, f"touch {marker} && echo ran-it")
    request = request_for(box, marker)
    [row] = eventually(lambda: live(box, "alice"), "alice's held session live")
    doomed = next(pid for pid in workers(box) if instance_of(box, pid) == row.instance)
    survivor = next(pid for pid in workers(box) if pid != doomed)
    doomed_rows = [s for s in live(box, "carol") if s.instance == row.instance]
    assert doomed_rows  # sessions_on_both: each worker serves one at least
    try:
        os.kill(doomed, signal.SIGKILL)
        out, err = held.communicate(timeout=60)
        assert held.returncode == 255 and b"ran-it" not in out, err  # the connection dropped
        eventually(lambda: sum(p.poll() is not None for p in procs) == len(doomed_rows),
                   "the doomed worker's sessions ended")
        for dropped in [p for p in procs if p.poll() is not None]:
            out, err = dropped.communicate(timeout=30)
            assert dropped.returncode == 255 and b"not-ended" not in out, err
            print(f"\nwhat carol read when her worker died: {err.decode().strip()!r}")
        with pinned(box, "bob", survivor) as control:
            approve = own(box, "bob", control, "approvals", "approve", request)
        print(f"\napprove on the survivor right after the kill: rc={approve.returncode}"
              f" {approve.stdout.strip()} {approve.stderr.strip()}")
        assert approve.returncode != 0  # never approved: nobody holds the command any more
        store = ApprovalStore(box.directory / "bastion.db", masker=TextMasker())
        eventually(lambda: store.state(request)[0] is ApprovalState.CANCELLED, "the request cancelled")
        assert not marker.exists()
        eventually(lambda: {s.instance for s in live(box)} == {instance_of(box, survivor)},
                   "the dead worker's rows gone")
        index = RecordingIndex(box.directory / "bastion.db")
        eventually(lambda: not [r for r in index.search() if r.instance == row.instance and r.state == "live"],
                   "its recordings no longer live")
        assert any(e["event"] == "orphans_cleaned" for e in box.events())
        store_rows = LiveSessions(box.directory / "bastion.db")
        slots = store_rows.db.execute("SELECT COUNT(*) FROM session_slots WHERE instance = ?", (row.instance,))
        assert slots.fetchone()[0] == 0  # its users' jumps no longer count against their limit
        store_rows.close()
        # The survivor's sessions of carol still run.
        assert sum(p.poll() is None for p in procs) == len(procs) - len(doomed_rows)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_many_sessions_at_once_across_workers_do_not_lock_the_database(tmp_path: Path) -> None:
    box = start_box(tmp_path / "burst")
    try:
        users = ["alice", "carol"]
        procs = [jump(box, f"echo burst-{n}", users[n % 2]) for n in range(BURST)]
        for n, proc in enumerate(procs):
            out, err = proc.communicate(timeout=180)
            assert out == f"burst-{n}\n".encode(), err
        served = {s["instance"] for s in events(box, "instance_started")}
        assert len(served) == 2
        failed = [e for e in box.events() if str(e["event"]).endswith("_failed")]
        assert not failed, failed
        assert "database is locked" not in box.log_path.read_text()
        assert "database is locked" not in (box.directory / "bastion.stderr").read_text()
        eventually(lambda: not live(box), "every row gone")
    finally:
        box.stop()
