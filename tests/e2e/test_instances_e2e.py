"""Several instances, one service: real PostgreSQL, two bastion processes, real HAProxy (TCP)
in front, real OpenSSH clients and target. What one instance decides reaches the other; when one
dies, the other serves and cleans up after it; a second instance started by mistake changes
nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.core.masker import TextMasker
from bastion.state.approvals import ApprovalState, ApprovalStore
from bastion.state.db import StateDatabase
from bastion.state.live import LiveSessions
from recorder.index import RecordingIndex
from tests.support.cluster import RULES, Cluster, Instance
from tests.support.lab import eventually
from tests.support.postgres import PostgresServer
from tests.support.sessions import bastion_cli, rules_sandbox, start_ssh, unique

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("cluster"), postgres.new_database("cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def own_cluster(postgres: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, postgres.new_database("own"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def request_of(cluster: Cluster, marker: Path) -> tuple[Instance, str]:
    """The instance holding the command that names `marker`, and its request id."""
    def find() -> tuple[Instance, str] | None:
        for instance in cluster.instances:
            for event in instance.events("approval_requested"):
                if str(marker) in str(event["command"]):
                    return instance, str(event["request"])
        return None

    return eventually(find, f"the approval request for {marker}")


def other(cluster: Cluster, instance: Instance) -> Instance:
    return next(i for i in cluster.instances if i is not instance)


def test_every_new_connection_is_served_whichever_instance_haproxy_picks(cluster: Cluster) -> None:
    for _ in range(4):
        out, err = cluster.ssh("echo through-haproxy").communicate(timeout=60)
        assert out == b"through-haproxy\n", err
    served = [i.name for i in cluster.instances if i.events("session_started")]
    assert sorted(served) == ["a", "b"]  # round robin: both took sessions


def test_a_command_held_on_one_instance_is_approved_from_the_other(cluster: Cluster) -> None:
    marker = unique("needs-approval")
    proc = cluster.ssh(f"touch {marker} && echo ran-it")
    holder, request = request_of(cluster, marker)
    approver = other(cluster, holder)
    approved = approver.cli("approvals", "approve", request, "--as", "bob")
    assert approved.returncode == 0, approved.stderr
    out, err = proc.communicate(timeout=60)
    assert out == b"ran-it\n", err
    assert marker.exists()
    # The holder logged the approval it never saw made.
    assert any(e["request"] == request for e in holder.events("approval_approved"))
    assert not approver.events("approval_requested") or all(
        e["request"] != request for e in approver.events("approval_requested"))


def test_users_revoke_on_one_instance_ends_the_session_on_the_other(cluster: Cluster) -> None:
    proc = cluster.ssh("sleep 120; echo not-ended", user="carol")
    holder = eventually(lambda: cluster.holder("session_started", lambda e: e["user"] == "carol"),
                        "carol's session started")
    try:
        revoked = other(cluster, holder).cli("users", "revoke", "carol")
        assert revoked.returncode == 0, revoked.stderr
        out, err = proc.communicate(timeout=60)
        assert b"not-ended" not in out
        assert b"your access has been revoked" in err
        assert any(e["user"] == "carol" for e in holder.events("session_revoked"))
    finally:
        other(cluster, holder).cli("users", "restore", "carol")
        proc.kill()


def test_a_reload_announced_once_reaches_every_instance(cluster: Cluster) -> None:
    listed = cluster.instances[0].cli("instances", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(f"pid {i.process.pid} " in listed.stdout for i in cluster.instances if i.process)
    before = {i.name: len(i.events("rules_reloaded")) for i in cluster.instances}
    announced = cluster.instances[1].cli("instances", "reload")
    assert announced.returncode == 0, announced.stderr
    assert "reload announced to 2 live instances" in announced.stdout
    for instance in cluster.instances:
        eventually(lambda instance=instance: len(instance.events("rules_reloaded")) > before[instance.name],
                   f"instance {instance.name} reloaded")


def _state_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """What an instance's start could have changed (leaves out what heartbeats renew)."""
    db = StateDatabase.open(url)
    queries = {
        "instances": "SELECT id, host, pid, started FROM instances ORDER BY id",
        "approvals": "SELECT id, state, instance FROM approval_requests ORDER BY id",
        "decisions": "SELECT request, approver, decision FROM approval_decisions ORDER BY request, approver",
        "live": 'SELECT session, "user", instance FROM live_sessions ORDER BY session',
        "kills": "SELECT session, done FROM session_kills ORDER BY session",
        "recordings": "SELECT id, state, instance FROM sessions ORDER BY id",
        "keys": "SELECT name, fingerprint, instance FROM key_fingerprints ORDER BY name",
        "versions": "SELECT component, version FROM schema_versions ORDER BY component",
    }
    try:
        return {name: [tuple(row) for row in db.execute(sql)] for name, sql in queries.items()}
    finally:
        db.close()


def test_a_second_instance_with_the_same_config_fails_on_the_port_and_changes_nothing(cluster: Cluster) -> None:
    marker = unique("needs-approval")
    proc = cluster.ssh(f"touch {marker}")
    holder, request = request_of(cluster, marker)
    try:
        before = _state_rows(cluster.state_url)
        again = holder.serve()
        assert again.wait(60) != 0
        assert f'listen = "127.0.0.1:{holder.port}": cannot listen there' in holder.stderr_path.read_text()
        assert _state_rows(cluster.state_url) == before
        store = ApprovalStore(cluster.state_url, masker=TextMasker())
        assert store.state(request)[0] is ApprovalState.PENDING
    finally:
        holder.cli("approvals", "deny", request, "--as", "bob")
        proc.communicate(timeout=60)
    assert not marker.exists()


def test_a_second_bastion_on_sqlite_leaves_the_running_ones_approvals_alone(tmp_path: Path) -> None:
    """The bug as it was: a second `bastion serve` (failing on the port) cancelled every pending
    approval of the running bastion, whose user read "not approved (cancelled)"."""
    box = rules_sandbox(tmp_path, RULES, {"alice": ["ops"], "bob": ["dba"]})
    try:
        marker = unique("needs-approval")
        proc = start_ssh(box, f"touch {marker} && echo ran-it")
        request = eventually(lambda: next((e["request"] for e in box.events() if e["event"] == "approval_requested"),
                                          None), "the request")
        second = subprocess.run([sys.executable, "-m", "bastion", "serve", "-c", str(box.config_path)],
                                capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert second.returncode != 0 and "cannot listen" in second.stderr
        store = ApprovalStore(tmp_path / "bastion.db", masker=TextMasker())
        assert store.state(str(request))[0] is ApprovalState.PENDING
        approve = bastion_cli(box, "approvals", "approve", str(request), "--as", "bob")
        assert approve.returncode == 0, approve.stderr
        out, err = proc.communicate(timeout=60)
        assert out == b"ran-it\n", err
    finally:
        box.stop()


def test_kill_9_one_instance(own_cluster: Cluster) -> None:
    """New connections reach the other at once; the dead one's pending approval is cancelled
    (never approved) once its lease runs out; its recordings end as incomplete; no row of it is
    left live."""
    doomed, survivor = own_cluster.instances
    marker = unique("needs-approval")
    held = own_cluster.ssh(f"touch {marker}", port=doomed.port)
    _, request = request_of(own_cluster, marker)
    live = own_cluster.ssh("sleep 300", port=doomed.port, user="carol")
    eventually(lambda: any(e["user"] == "carol" for e in doomed.events("session_started")), "carol's session")
    doomed.kill()
    held.communicate(timeout=60)
    live.communicate(timeout=60)
    # A new client through HAProxy is served by the survivor (the dead port refuses; HAProxy
    # sends the connection on).
    out, err = own_cluster.ssh("echo after-the-kill").communicate(timeout=60)
    assert out == b"after-the-kill\n", err
    # Its pending approval: refused, then cancelled by the survivor.
    approve = survivor.cli("approvals", "approve", request, "--as", "bob")
    assert approve.returncode != 0
    store = ApprovalStore(own_cluster.state_url, masker=TextMasker())
    eventually(lambda: store.state(request)[0] is ApprovalState.CANCELLED, "the request cancelled")
    assert not marker.exists()
    # No live-session row of the dead instance, no recording of it left live.
    eventually(lambda: not [s for s in LiveSessions(own_cluster.state_url).list()
                            if s.user == "carol"], "carol's row removed")
    index = RecordingIndex(own_cluster.state_url)
    rows = eventually(lambda: [r for r in index.search(user="carol") if r.state != "live"] or None,
                      "carol's recording ended")
    [row] = rows
    assert row.state == "incomplete" and row.instance is not None
    verify = survivor.cli("recordings", "verify", row.id)
    assert verify.returncode == 0 and "incomplete" in verify.stdout, verify.stdout
    assert any(e["event"] == "orphans_cleaned" for e in survivor.events())


def test_postgres_restarted_under_running_instances(cluster: Cluster, postgres: PostgresServer) -> None:
    """Sessions in progress go on; a login while it is down is refused with a line saying why;
    logins work again once it is back, without restarting the bastions."""
    going = cluster.ssh("echo started; sleep 4; echo survived")
    assert going.stdout is not None and going.stdout.readline() == b"started\n"  # signed in, running
    postgres.stop()
    try:
        refused = cluster.ssh("echo while-down")
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 255 and out == b""
        assert b"cannot check your access right now (the state database does not answer)" in err
    finally:
        postgres.start()
    out, err = going.communicate(timeout=60)
    assert out == b"survived\n", err

    def login() -> bool:
        again = cluster.ssh("echo back")
        return again.communicate(timeout=60)[0] == b"back\n"

    eventually(login, "a login after the database came back", timeout=30)
