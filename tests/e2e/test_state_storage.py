"""The state stores against both backends: the same tests on an SQLite file and on a real
PostgreSQL server (a fresh database each)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from bastion.auth.directory import Directory, SSOError
from bastion.core.masker import TextMasker
from bastion.state.approvals import ApprovalError, ApprovalState, ApprovalStore, Decision
from bastion.state.db import Listener, StateDatabase, StateError, StateUnavailable
from bastion.state.instances import Instances
from bastion.state.live import LiveSession, LiveSessions
from recorder.index import IndexSchemaError, RecordingIndex
from tests.support.certs import ident, public
from tests.support.postgres import PostgresServer
from tests.support.stores import live_store

pytestmark = pytest.mark.e2e
MASKER = TextMasker()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "state.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


def _request(store: ApprovalStore, requester: str = "alice") -> str:
    return store.create(session="s1", requester=requester, target="db-1", login="root", command="rm -rf /tmp/x",
                        rule="destructive", approvers=("ops",), approvals=1, timeout=600).id


def test_approval_lifecycle(location: Path | str) -> None:
    store = live_store(location, masker=MASKER)
    request_id = _request(store)
    assert [r.id for r in store.pending()] == [request_id]
    with pytest.raises(ApprovalError, match="requester cannot approve"):
        store.decide(request_id, "alice", Decision.APPROVE)
    with pytest.raises(ApprovalError, match="different command"):
        store.decide(request_id, "bob", Decision.APPROVE, command="rm -rf /")
    assert store.decide(request_id, "bob", Decision.APPROVE, command="rm -rf /tmp/x") is ApprovalState.APPROVED
    state, decisions = store.state(request_id)
    assert state is ApprovalState.APPROVED
    assert decisions == [("bob", Decision.APPROVE, None)]
    with pytest.raises(ApprovalError, match="already approved by bob"):
        store.decide(request_id, "carol", Decision.DENY)
    request = store.get(request_id)
    assert request is not None and store.by_token(request.token) == request


def test_two_approvers_at_once_cannot_both_win(location: Path | str) -> None:
    """Across connections (other instances): one approves, the other finds it decided."""
    live_store(location, masker=MASKER)
    stores = [ApprovalStore(location, masker=MASKER, instance="test-instance") for _ in range(6)]
    request_id = _request(stores[0])
    outcomes: list[str] = []

    def decide(store: ApprovalStore, approver: str, decision: Decision) -> None:
        try:
            outcomes.append(str(store.decide(request_id, approver, decision)))
        except ApprovalError as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=decide, args=(store, f"approver{i}",
                                                     Decision.APPROVE if i % 2 else Decision.DENY))
               for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.split(":")[0] for o in outcomes).count("refused") == 5, outcomes
    state, decisions = stores[0].state(request_id)
    assert len(decisions) == 1
    assert state is {Decision.APPROVE: ApprovalState.APPROVED, Decision.DENY: ApprovalState.DENIED}[decisions[0][1]]


def test_an_expired_request_is_never_approved(location: Path | str) -> None:
    store = live_store(location, masker=MASKER)
    request_id = _request(store)
    store.db.execute("UPDATE approval_requests SET expires = ? WHERE id = ?", (time.time() - 1, request_id))
    with pytest.raises(ApprovalError, match="expired"):
        store.decide(request_id, "bob", Decision.APPROVE)
    assert store.state(request_id)[0] is ApprovalState.EXPIRED


def test_a_new_instance_never_touches_a_live_instances_requests(location: Path | str) -> None:
    """The bug: a second `bastion serve` marked the running one's pending approvals cancelled."""
    running = live_store(location, masker=MASKER, instance="running")
    held = _request(running)
    second = live_store(location, masker=MASKER, instance="second")
    assert second.cancel_orphans() == []
    assert running.state(held)[0] is ApprovalState.PENDING
    assert second.decide(held, "bob", Decision.APPROVE) is ApprovalState.APPROVED


def test_requests_of_an_instance_whose_lease_ran_out_are_cancelled_never_approved(location: Path | str) -> None:
    gone = live_store(location, masker=MASKER, instance="gone")
    orphan, other = _request(gone), _request(gone)
    survivor = live_store(location, masker=MASKER, instance="survivor")
    kept = _request(survivor)
    gone.db.execute("UPDATE instances SET expires = ? WHERE id = 'gone'", (time.time() - 1,))
    # Before anyone cleaned up: an approver's click is refused, and the request is cancelled.
    with pytest.raises(ApprovalError, match="instance holding its session stopped"):
        survivor.decide(orphan, "bob", Decision.APPROVE)
    assert survivor.state(orphan)[0] is ApprovalState.CANCELLED
    assert survivor.cancel_orphans() == [other]
    assert survivor.state(other)[0] is ApprovalState.CANCELLED
    assert survivor.state(kept)[0] is ApprovalState.PENDING


def test_live_sessions_belong_to_their_instance(location: Path | str) -> None:
    Instances(location, "a", lease=60).register()
    dead = Instances(location, "b", lease=60)
    dead.register()
    entry = LiveSession(session="s1", user="alice", target="db-1", login="root", kind="exec", command="uptime",
                        client="127.0.0.1:5000", started=100.0, last_activity=100.0, bytes_in=0, bytes_out=0,
                        instance="a", recording="s1")
    live, cli = LiveSessions(location), LiveSessions(location)
    live.started(entry)
    live.started(replace(entry, session="s2", user="bob", instance="b"))
    live.activity([("s1", 130.0, 12, 2**40)])
    assert cli.get("s1") == replace(entry, last_activity=130.0, bytes_in=12, bytes_out=2**40)
    assert [s.session for s in cli.list(user="bob")] == ["s2"]
    assert cli.request_kill("s1", "carol", "maintenance") is not None
    assert [k.session for k in live.kills_for("a")] == ["s1"]
    assert live.clear_orphans() == 0  # both leases live: nothing is touched
    dead.db.execute("UPDATE instances SET expires = 0 WHERE id = 'b'")
    assert live.clear_orphans() == 1
    assert [s.session for s in cli.list()] == ["s1"]
    live.kill_done("s1")
    assert live.kills_for("a") == []
    assert live.clear_instance("a") == 1
    assert cli.list() == []


def test_moderators_of_a_live_session(location: Path | str) -> None:
    Instances(location, "a", lease=60).register()
    entry = LiveSession(session="s1", user="alice", target="vault-1", login="root", kind="shell", command=None,
                        client="127.0.0.1:5000", started=100.0, last_activity=100.0, bytes_in=0, bytes_out=0,
                        instance="a", recording="s1")
    live, moderator = LiveSessions(location), LiveSessions(location)
    assert not moderator.join("s1", "sue")  # not live: nothing to moderate
    live.started(entry)
    assert moderator.join("s1", "sue") and moderator.join("s1", "sue")  # joining twice is one moderator
    assert moderator.join("s1", "olga")
    assert live.moderators("s1") == ("sue", "olga")
    moderator.leave("s1", "sue")
    assert live.moderators("s1") == ("olga",)
    live.ended("s1")
    assert live.moderators("s1") == ()


def test_sign_in_certificates_and_revocation(location: Path | str) -> None:
    import asyncssh

    directory = Directory(location)
    ca = asyncssh.generate_private_key("ssh-ed25519")
    assert directory.sign_in(ident("s-1", "alice", ["ops"]), {}) == ("alice", frozenset({"ops"}))
    with pytest.raises(SSOError, match="signed in before as alice"):
        directory.sign_in(ident("s-1", "mallory"), {})
    with pytest.raises(SSOError, match="bound to a different identity"):
        directory.sign_in(ident("s-2", "alice"), {})
    key = public()
    fingerprint = asyncssh.import_public_key(key).get_fingerprint()
    issued = directory.issue(ca, key, user="alice", identity="idp#s-1", ttl=60)
    assert issued.serial >= 2**32  # 63-bit serials survive the column type
    assert directory.certificate_allowed("alice", issued.serial, fingerprint) is None
    assert directory.certificate_allowed("alice", issued.serial, "SHA256:other").endswith("for another key")
    assert directory.certificate_allowed("bob", issued.serial, fingerprint) == "certificate was issued to another user"
    assert directory.revoke("alice", "admin") == [issued.serial]
    assert directory.revoke("alice", "admin") == [issued.serial]  # twice is the same
    assert directory.revoked_users() == ["alice"]
    assert directory.revoked_serials() == [issued.serial]
    assert directory.certificate_allowed("alice", issued.serial, fingerprint) == "user alice has been revoked"
    assert directory.restore("alice")
    assert directory.certificate_allowed("alice", issued.serial, fingerprint) == "certificate revoked"


def test_a_machine_token_is_exchanged_once_even_by_racing_instances(location: Path | str) -> None:
    """A hostile job replaying its token at several instances at once gets one certificate."""
    import asyncssh

    from bastion.auth.directory import TokenReplayed

    Directory(location)
    directories = [Directory(location) for _ in range(6)]
    ca = asyncssh.generate_private_key("ssh-ed25519")
    outcomes: list[object] = []

    def exchange(directory: Directory) -> None:
        try:
            outcomes.append(directory.exchange(ca, public(), machine="deploy-web", identity="ci#job-1",
                                               token="ci#jti:abc", token_expires=time.time() + 300,
                                               workload={"repository": "acme/web", "run_id": "42"}, ttl=300))
        except TokenReplayed as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=exchange, args=(directory,)) for directory in directories]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    issued = [o for o in outcomes if not isinstance(o, TokenReplayed)]
    assert len(outcomes) == 6 and len(issued) == 1, outcomes
    serial = issued[0].serial  # type: ignore[attr-defined]
    assert directories[3].machine_grant(serial) == ("deploy-web", {"repository": "acme/web", "run_id": "42"})
    assert directories[3].machine_grant(serial + 1) is None
    directories[0].revoke("deploy-web", "admin")
    with pytest.raises(SSOError, match="revoked"):
        directories[1].exchange(ca, public(), machine="deploy-web", identity="ci#job-1", token="ci#jti:new",
                                token_expires=time.time() + 300, workload={}, ttl=300)


def test_recordings_index_says_which_instance_wrote(location: Path | str) -> None:
    index = RecordingIndex(location)
    index.session_opened(id="r1", name="r1.cast", user="alice", login="root", target="db-1", started=1.0,
                         instance="a")
    index.session_opened(id="r2", name="r2.cast", user="bob", login="root", target="db-1", started=2.0,
                         instance="b")
    index.session_opened(id="r3", name="r3.cast", user="bob", login="root", target="db-1", started=3.0,
                         instance="b")
    index.session_updated("r3", state="closed", markers={"held": 2})
    assert [r.id for r in index.search(user="bob")] == ["r3", "r2"]
    assert [r.id for r in index.search(marker="held")] == ["r3"]
    assert [r.id for r in index.abandoned(["a"])] == ["r2"]
    row = index.get("r1")
    assert row is not None and row.instance == "a"


def test_keys_are_recorded_by_the_first_instance_and_compared(location: Path | str) -> None:
    first, second = Instances(location, "first"), Instances(location, "second")
    assert first.record_keys({"host_ca": "SHA256:aaa", "user_ca": "SHA256:bbb"}) == []
    assert second.key_mismatches({"host_ca": "SHA256:aaa", "user_ca": "SHA256:bbb"}) == []
    mismatches = second.record_keys({"host_ca": "SHA256:zzz", "user_ca": "SHA256:bbb"})
    assert [(m.name, m.ours, m.recorded, m.by) for m in mismatches] == [("host_ca", "SHA256:zzz", "SHA256:aaa",
                                                                         "first")]


def test_a_newer_schema_is_refused(location: Path | str) -> None:
    live_store(location, masker=MASKER)
    RecordingIndex(location)
    db = StateDatabase.open(location)
    db.execute("UPDATE schema_versions SET version = version + 1 WHERE component = 'approvals'")
    db.execute("UPDATE schema_versions SET version = version + 1 WHERE component = 'recordings'")
    with pytest.raises(StateError, match=r"approvals tables are at schema version \d+, newer than this bastion"):
        ApprovalStore(location, masker=MASKER)
    with pytest.raises(IndexSchemaError, match="newer than this version"):
        RecordingIndex(location)


def test_migrations_are_applied_once_and_kept(location: Path | str) -> None:
    for _ in range(2):
        Directory(location)
        live_store(location, masker=MASKER)
    versions = dict(StateDatabase.open(location).execute("SELECT component, version FROM schema_versions"))
    assert versions == {"instances": 1, "directory": 2, "approvals": 3}
    LiveSessions(location)
    versions = dict(StateDatabase.open(location).execute("SELECT component, version FROM schema_versions"))
    assert versions["live_sessions"] == 4


def test_an_old_sqlite_file_is_brought_up_to_date(tmp_path: Path) -> None:
    """A state file from before schema versions (and before some columns) keeps its rows."""
    import sqlite3

    path = tmp_path / "bastion.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE approval_requests (id TEXT PRIMARY KEY, session TEXT NOT NULL, requester TEXT NOT NULL,
            target TEXT NOT NULL, login TEXT NOT NULL, command TEXT NOT NULL, command_hash TEXT NOT NULL,
            rule TEXT NOT NULL, approvers TEXT NOT NULL, approvals_needed INTEGER NOT NULL, created REAL NOT NULL,
            expires REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending');
        CREATE TABLE approval_decisions (request TEXT NOT NULL, approver TEXT NOT NULL, decision TEXT NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (request, approver));
        INSERT INTO approval_requests VALUES ('ABC123', 's', 'alice', 'db-1', 'root', 'ls', 'h', 'r', 'ops', 1,
            0, 1e12, 'approved');
    """)
    old.commit()
    old.close()
    store = ApprovalStore(path, masker=MASKER)
    request = store.get("ABC123")
    assert request is not None and request.state is ApprovalState.APPROVED and request.screen == ""


def test_postgres_restarted_under_a_store(postgres: PostgresServer) -> None:
    """A call that meets the restart fails with a clear line; the next one reconnects."""
    url = postgres.new_database()
    store = live_store(url, masker=MASKER)
    request_id = _request(store)
    postgres.restart()
    with pytest.raises(StateUnavailable, match=r"state database postgresql://bastion@127\.0\.0\.1:\d+/\w+ unavailable"):
        store.state(request_id)
    assert store.state(request_id)[0] is ApprovalState.PENDING


def test_postgres_down_is_a_clear_error(postgres: PostgresServer) -> None:
    url = postgres.url("no_such_database")
    with pytest.raises(StateUnavailable, match=r"state database postgresql://bastion@127\.0\.0\.1:\d+/no_such"
                                               r"_database unreachable"):
        ApprovalStore(url, masker=MASKER)


def test_a_decision_is_announced_to_listeners(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    store = live_store(url, masker=MASKER)
    request_id = _request(store)
    heard: list[tuple[str, str]] = []
    got = threading.Event()

    def on_note(channel: str, payload: str) -> None:
        heard.append((channel, payload))
        if payload == request_id:
            got.set()

    listener = Listener(url, ["bastion_approvals"], on_note)
    listener.start()
    try:
        deadline = time.monotonic() + 20
        while not got.is_set() and time.monotonic() < deadline:  # the LISTEN may not be in place yet
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_notify('bastion_approvals', 'probe')")
            if ("bastion_approvals", "probe") in heard:
                break
            time.sleep(0.05)
        store.decide(request_id, "bob", Decision.APPROVE)
        assert got.wait(20)
    finally:
        listener.stop()
