"""The live-session registry on its own: rows, kill requests, start-up cleanup, old databases."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

from bastion.state.instances import Instances
from bastion.state.live import LiveSession, LiveSessions

ENTRY = LiveSession(session="s1", user="alice", target="db-1", login="root", kind="exec", command="uptime",
                    client="127.0.0.1:5000", started=100.0, last_activity=100.0, bytes_in=0, bytes_out=0,
                    instance="here:1:a", recording="s1")


def test_a_session_is_listed_with_its_fields_until_it_ends(tmp_path: Path) -> None:
    live = LiveSessions(tmp_path / "state.db")
    live.started(ENTRY)
    live.started(replace(ENTRY, session="s2", user="bob", target="web-1", kind="shell", command=None))
    live.activity([("s1", 130.0, 12, 3400)])
    other_process = LiveSessions(tmp_path / "state.db")
    assert other_process.get("s1") == replace(ENTRY, last_activity=130.0, bytes_in=12, bytes_out=3400)
    assert [s.session for s in other_process.list()] == ["s1", "s2"]
    assert [s.session for s in other_process.list(user="bob")] == ["s2"]
    assert [s.session for s in other_process.list(target="db-1")] == ["s1"]
    assert other_process.get("s1").idle(140.0) == 10.0  # type: ignore[union-attr]
    live.ended("s1")
    assert [s.session for s in other_process.list()] == ["s2"]


def test_a_kill_request_reaches_the_instance_that_serves_the_session(tmp_path: Path) -> None:
    live = LiveSessions(tmp_path / "state.db")
    live.started(ENTRY)
    live.started(replace(ENTRY, session="s2", instance="there:2:b"))
    cli = LiveSessions(tmp_path / "state.db")
    assert cli.request_kill("nope", "bob", "why") is None  # nothing to kill, nothing written
    assert cli.request_kill("s1", "bob", "maintenance") == ENTRY
    assert cli.request_kill("s2", "bob", "other instance") is not None
    [kill] = live.kills_for("here:1:a")
    assert (kill.session, kill.by, kill.reason) == ("s1", "bob", "maintenance")
    live.kill_done("s1")
    assert live.kills_for("here:1:a") == []
    assert [k.session for k in live.kills_for("there:2:b")] == ["s2"]
    live.ended("s2")
    assert live.kills_for("there:2:b") == []


def test_a_new_session_with_an_old_id_does_not_inherit_a_kill(tmp_path: Path) -> None:
    live = LiveSessions(tmp_path / "state.db")
    live.started(ENTRY)
    live.request_kill("s1", "bob", "x")
    live.started(ENTRY)
    assert live.kills_for(ENTRY.instance) == []


def test_rows_of_instances_whose_lease_ran_out_are_cleared_and_no_others(tmp_path: Path) -> None:
    """Starting an instance never touches another live instance's rows (a second bastion
    started by mistake on the same host included): only leases that ran out count."""
    path = tmp_path / "state.db"
    live = LiveSessions(path)
    Instances(path, "here:1:a", lease=60).register()
    Instances(path, "other:2:b", lease=60).register()
    gone = Instances(path, "gone:3:c", lease=60)
    gone.register()
    gone.db.execute("UPDATE instances SET expires = 0 WHERE id = 'gone:3:c'")
    live.started(ENTRY)
    live.started(replace(ENTRY, session="s2", instance="other:2:b"))
    live.started(replace(ENTRY, session="s3", instance="gone:3:c"))
    live.started(replace(ENTRY, session="s4", instance=""))  # from before instances had leases
    live.request_kill("s3", "bob", "x")
    assert live.clear_orphans() == 2
    assert sorted(s.session for s in live.list()) == ["s1", "s2"]
    assert live.db.execute("SELECT COUNT(*) FROM session_kills").fetchone()[0] == 0
    assert live.clear_instance("here:1:a") == 1
    assert [s.session for s in live.list()] == ["s2"]


def test_a_database_from_before_the_registry_gains_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE live_sessions (session TEXT PRIMARY KEY, user TEXT NOT NULL, target TEXT NOT NULL,"
               " login TEXT NOT NULL, started REAL NOT NULL, pid INTEGER NOT NULL)")
    db.execute("INSERT INTO live_sessions VALUES ('old', 'alice', 'db-1', 'root', 5, 1)")
    db.commit()
    db.close()
    live = LiveSessions(path)
    [old] = live.list()
    assert (old.session, old.kind, old.bytes_in, old.instance) == ("old", "", 0, "")
    live.started(ENTRY)
    assert live.get("s1") == ENTRY


def test_a_user_s_session_slots_are_counted_over_every_live_instance(tmp_path: Path) -> None:
    """`limits.sessions_per_user` holds for the user's jumps on every instance (workers of one
    `serve` included); a dead instance's slots stop counting and are cleared with its rows."""
    path = tmp_path / "state.db"
    here, there = LiveSessions(path), LiveSessions(path)
    Instances(path, "here:1:a", lease=60).register()
    Instances(path, "there:2:b", lease=60).register()
    assert here.claim_slot("j1", "alice", "here:1:a", 2) is None
    assert there.claim_slot("j2", "alice", "there:2:b", 2) is None
    assert there.claim_slot("j3", "alice", "there:2:b", 2) == 2  # refused: nothing written
    assert here.claim_slot("j3", "alice", "here:1:a", 2) == 2
    assert here.claim_slot("b1", "bob", "here:1:a", 2) is None  # another user's count is their own
    there.release_slot("j2")
    assert here.claim_slot("j3", "alice", "here:1:a", 2) is None
    # The other instance dies: its slots no longer count, and the clean-up removes them.
    assert there.claim_slot("j4", "carol", "there:2:b", 1) is None
    here.db.execute("UPDATE instances SET expires = 0 WHERE id = 'there:2:b'")
    assert here.claim_slot("j5", "carol", "here:1:a", 1) is None
    here.clear_orphans()
    slots = {row[0] for row in here.db.execute("SELECT session FROM session_slots")}
    assert slots == {"j1", "j3", "b1", "j5"}
    here.clear_instance("here:1:a")
    assert here.db.execute("SELECT COUNT(*) FROM session_slots").fetchone()[0] == 0


def test_claims_racing_from_two_processes_never_exceed_the_limit(tmp_path: Path) -> None:
    """Count and claim are one transaction: threads standing for the database threads of two
    workers (a connection each) claim at once and get exactly the limit between them."""
    path = tmp_path / "state.db"
    LiveSessions(path)
    Instances(path, "here:1:a", lease=60).register()
    Instances(path, "there:2:b", lease=60).register()
    stores = [LiveSessions(path) for _ in range(20)]
    results: list[int | None] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        store, instance = stores[n], ("here:1:a", "there:2:b")[n % 2]
        got = store.claim_slot(f"j{n}", "alice", instance, 5)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20
    assert results.count(None) == 5
    assert stores[0].db.execute("SELECT COUNT(*) FROM session_slots").fetchone()[0] == 5
