"""The live-session registry: who is connected now, through which instance, and kill requests.

One row per session channel in the state database, written by the instance that serves it and
read by every process with the database (`bastion sessions list`, `bastion users list`, the
bastion's own commands over ssh). A kill is a row in `session_kills`: whoever asks writes it,
the instance that holds the session picks it up (it polls, as it does for revocations), ends
the session and marks the request done. Nothing here needs the serving process to answer.

Everything the registry does is in `LiveSessions`; callers never touch its tables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bastion.state.db import Backend, Location, Migrations, StateDatabase
from bastion.state.dbthread import DatabaseThread
from bastion.state.instances import INSTANCES
from recorder.printable import printable

_V1 = (
    """CREATE TABLE IF NOT EXISTS live_sessions (
    session TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    started REAL NOT NULL,
    pid INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS session_kills (
    session TEXT PRIMARY KEY,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested REAL NOT NULL,
    done REAL
)""",
)
# Columns the registry gained after `live_sessions` first shipped (user, target, login, started,
# pid); files made before them get them here.
COLUMNS = (
    ("instance", "TEXT NOT NULL DEFAULT ''"),
    ("kind", "TEXT NOT NULL DEFAULT ''"),
    ("command", "TEXT"),
    ("client", "TEXT NOT NULL DEFAULT ''"),
    ("last_activity", "REAL NOT NULL DEFAULT 0"),
    ("bytes_in", "INTEGER NOT NULL DEFAULT 0"),
    ("bytes_out", "INTEGER NOT NULL DEFAULT 0"),
    ("recording", "TEXT"),
    ("moderated_by", "TEXT"),  # a moderated session's moderators, one name a line
)


def _columns(db: StateDatabase) -> None:
    present = db.columns("live_sessions")
    postgres = db.backend is Backend.POSTGRES
    for column, kind in COLUMNS:
        if column not in present:
            sql_type = (kind.replace("REAL", "DOUBLE PRECISION").replace("INTEGER", "BIGINT") if postgres
                        else kind)
            db.execute(f"ALTER TABLE live_sessions ADD COLUMN {column} {sql_type}")


def _postgres(statements: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s.replace(" REAL", " DOUBLE PRECISION") for s in statements)


# Who moderates a moderated session now (`ssh -t bastion join ID`), read by its instance.
_V3 = ("""CREATE TABLE IF NOT EXISTS session_moderators (
    session TEXT NOT NULL,
    moderator TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (session, moderator)
)""",)
# The jumps each user holds open on every instance (what `limits.sessions_per_user` bounds): a
# row from the jump's channel open to its end, claimed in one transaction with the count.
_V4 = ("""CREATE TABLE IF NOT EXISTS session_slots (
    session TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    instance TEXT NOT NULL,
    since REAL NOT NULL
)""",)
MIGRATIONS = Migrations("live_sessions", sqlite=((*_V1,), _columns, _V3, _V4),
                        postgres=(_postgres(_V1), _columns, _postgres(_V3), _postgres(_V4)))
FIELDS = ('session, "user", target, login, kind, command, client, started, last_activity, bytes_in,'
          " bytes_out, instance, recording")


@dataclass(frozen=True)
class LiveSession:
    session: str
    user: str
    target: str
    login: str
    kind: str  # shell, exec, sftp, scp, rsync, subsystem
    command: str | None  # masked, as stored everywhere else
    client: str
    started: float
    last_activity: float
    bytes_in: int
    bytes_out: int
    instance: str
    recording: str | None

    def idle(self, now: float) -> float:
        return max(0.0, now - (self.last_activity or self.started))

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.session, "user": self.user, "target": self.target, "login": self.login,
            "kind": self.kind, "command": self.command, "client": self.client, "started": self.started,
            "last_activity": self.last_activity, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "instance": self.instance, "recording": self.recording,
        }


@dataclass(frozen=True)
class KillRequest:
    session: str
    by: str
    reason: str


class LiveSessions:
    """Synchronous (SQLite or PostgreSQL); the serving bastion calls it on a database thread."""

    def __init__(self, location: Location) -> None:
        self.db = StateDatabase.open(location)
        self.db.migrate(INSTANCES)  # the leases the clean-up joins
        self.db.migrate(MIGRATIONS)

    # -- the serving instance ------------------------------------------------------------------

    def started(self, entry: LiveSession) -> None:
        updates = ", ".join(f"{name} = excluded.{name}" for name in (*FIELDS.split(", "), "pid")
                            if name != "session")
        self.db.execute(
            f"INSERT INTO live_sessions ({FIELDS}, pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"  # noqa: S608
            f" ON CONFLICT (session) DO UPDATE SET {updates}",
            (entry.session, entry.user, entry.target, entry.login, entry.kind, entry.command, entry.client,
             entry.started, entry.last_activity, entry.bytes_in, entry.bytes_out, entry.instance,
             entry.recording, os.getpid()),
        )
        self.db.execute("DELETE FROM session_kills WHERE session = ?", (entry.session,))

    def activity(self, updates: list[tuple[str, float, int, int]]) -> None:
        """(session, last activity, bytes in, bytes out) of sessions that moved."""
        with self.db.transaction():
            for session, at, bytes_in, bytes_out in updates:
                self.db.execute("UPDATE live_sessions SET last_activity = ?, bytes_in = ?, bytes_out = ?"
                                " WHERE session = ?", (at, bytes_in, bytes_out, session))

    def described(self, session: str, kind: str, command: str | None) -> None:
        """What the session turned out to be once the client asked for it (shell, exec...)."""
        self.db.execute("UPDATE live_sessions SET kind = ?, command = ? WHERE session = ?",
                        (kind, command, session))

    def ended(self, session: str) -> None:
        self.db.execute("DELETE FROM live_sessions WHERE session = ?", (session,))
        self.db.execute("DELETE FROM session_kills WHERE session = ?", (session,))
        self.db.execute("DELETE FROM session_moderators WHERE session = ?", (session,))

    def claim_slot(self, session: str, user: str, instance: str, limit: int) -> int | None:
        """Count `session` among `user`'s open jumps if they hold fewer than `limit` on the
        instances whose lease runs (None), else how many they hold (and nothing is written).
        Count and claim are one transaction: two instances claiming at once are serialised."""
        with self.db.transaction():
            held = self.db.execute(
                'SELECT COUNT(*) FROM session_slots s WHERE s."user" = ? AND EXISTS'
                " (SELECT 1 FROM instances i WHERE i.id = s.instance AND i.expires > ?)",
                (user, time.time())).fetchone()[0]
            if held >= limit:
                return int(held)
            self.db.execute('INSERT INTO session_slots (session, "user", instance, since) VALUES (?,?,?,?)',
                            (session, user, instance, time.time()))
        return None

    def release_slot(self, session: str) -> None:
        self.db.execute("DELETE FROM session_slots WHERE session = ?", (session,))

    def kills_for(self, instance: str) -> list[KillRequest]:
        """Kill requests not yet carried out for sessions this instance serves."""
        rows = self.db.execute(
            "SELECT k.session, k.by, k.reason FROM session_kills k JOIN live_sessions s"
            " ON s.session = k.session WHERE s.instance = ? AND k.done IS NULL ORDER BY k.requested",
            (instance,))
        return [KillRequest(*row) for row in rows]

    def kill_done(self, session: str) -> None:
        self.db.execute("UPDATE session_kills SET done = ? WHERE session = ?", (time.time(), session))

    def clear_orphans(self) -> int:
        """Rows of instances whose lease ran out (killed, or cut off from the database for
        longer than the lease) are removed: their sessions cannot be live. Rows of live
        instances are never touched (starting an instance changes nothing of theirs)."""
        with self.db.transaction():
            removed = self.db.execute(
                "DELETE FROM live_sessions WHERE NOT EXISTS"
                " (SELECT 1 FROM instances i WHERE i.id = live_sessions.instance AND i.expires > ?)",
                (time.time(),)).rowcount
            self.db.execute("DELETE FROM session_slots WHERE NOT EXISTS (SELECT 1 FROM instances i"
                            " WHERE i.id = session_slots.instance AND i.expires > ?)", (time.time(),))
            for table in ("session_kills", "session_moderators"):
                self.db.execute(f"DELETE FROM {table} WHERE session NOT IN"  # noqa: S608
                                " (SELECT session FROM live_sessions)")
        return removed

    def clear_instance(self, instance: str) -> int:
        """A clean stop: the instance's own rows go (its sessions were ended)."""
        with self.db.transaction():
            removed = self.db.execute("DELETE FROM live_sessions WHERE instance = ?", (instance,)).rowcount
            self.db.execute("DELETE FROM session_slots WHERE instance = ?", (instance,))
            for table in ("session_kills", "session_moderators"):
                self.db.execute(f"DELETE FROM {table} WHERE session NOT IN"  # noqa: S608
                                " (SELECT session FROM live_sessions)")
        return removed

    # -- anyone ------------------------------------------------------------------------------------

    def list(self, *, user: str | None = None, target: str | None = None) -> list[LiveSession]:
        where, args = [], []
        if user is not None:
            where.append('"user" = ?')
            args.append(user)
        if target is not None:
            where.append("target = ?")
            args.append(target)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(f"SELECT {FIELDS} FROM live_sessions{clause} ORDER BY started", args)  # noqa: S608
        return [LiveSession(*row) for row in rows]

    def get(self, session: str) -> LiveSession | None:
        row = self.db.execute(f"SELECT {FIELDS} FROM live_sessions WHERE session = ?",  # noqa: S608
                              (session,)).fetchone()
        return LiveSession(*row) if row is not None else None

    def request_kill(self, session: str, by: str, reason: str) -> LiveSession | None:
        """Ask the instance serving `session` to end it; None if no such session is live."""
        with self.db.transaction():
            live = self.get(session)
            if live is not None:
                self.db.execute("INSERT INTO session_kills (session, by, reason, requested, done)"
                                " VALUES (?,?,?,?,NULL) ON CONFLICT (session) DO UPDATE SET by = excluded.by,"
                                " reason = excluded.reason, requested = excluded.requested, done = NULL",
                                (session, by, reason, time.time()))
        return live

    # -- moderators: who watches a moderated session now ------------------------------------------

    def join(self, session: str, user: str) -> bool:
        """`user` watches `session` as its moderator from now on; False if it is not live."""
        with self.db.transaction():
            live = self.get(session) is not None
            if live:
                self.db.execute("INSERT INTO session_moderators (session, moderator, since) VALUES (?,?,?)"
                                " ON CONFLICT (session, moderator) DO UPDATE SET since = excluded.since",
                                (session, user, time.time()))
        return live

    def require_moderators(self, session: str, names: frozenset[str]) -> bool:
        """`session` waits for (and runs only with) a moderator from `names`; False if it is not live."""
        return self.db.execute("UPDATE live_sessions SET moderated_by = ? WHERE session = ?",
                               ("\n".join(sorted(names)), session)).rowcount > 0

    def moderated_by(self, session: str) -> frozenset[str]:
        """Who may moderate `session` (nobody: it is not moderated, or not live)."""
        row = self.db.execute("SELECT moderated_by FROM live_sessions WHERE session = ?",
                              (session,)).fetchone()
        return frozenset(row[0].split("\n")) if row is not None and row[0] else frozenset()

    def leave(self, session: str, user: str) -> None:
        self.db.execute("DELETE FROM session_moderators WHERE session = ? AND moderator = ?", (session, user))

    def moderators(self, session: str) -> tuple[str, ...]:
        return tuple(r[0] for r in self.db.execute(
            "SELECT moderator FROM session_moderators WHERE session = ? ORDER BY since", (session,)))

    def close(self) -> None:
        self.db.close()


class Registry:
    """The serving instance's side, on its event loop: writes go to the registry's thread in
    order, without waiting (a session never waits for the registry); a failed write is reported
    to `failed` (session, reason) and the session goes on."""

    def __init__(self, location: Location, instance: str, failed: Callable[[str, str], None]) -> None:
        self.store = LiveSessions(location)
        self.thread = DatabaseThread("live-db")
        self.instance = instance  # this bastion instance's id (bastion.state.instances)
        self._failed = failed

    def _later(self, session: str, fn: Callable[..., object], *args: object) -> None:
        def failed(exc: BaseException) -> None:
            self._failed(session, str(exc) or type(exc).__name__)

        self.thread.later(failed, fn, *args)

    def started(self, entry: LiveSession) -> None:
        self._later(entry.session, self.store.started, entry)

    def ended(self, session: str) -> None:
        self._later(session, self.store.ended, session)

    async def claim_slot(self, session: str, user: str, limit: int) -> int | None:
        return await self.thread.run(self.store.claim_slot, session, user, self.instance, limit)

    def release_slot(self, session: str) -> None:
        self._later(session, self.store.release_slot, session)

    def activity(self, updates: list[tuple[str, float, int, int]]) -> None:
        if updates:
            self._later(updates[0][0], self.store.activity, updates)

    async def moderators(self, session: str) -> tuple[str, ...]:
        return await self.thread.run(self.store.moderators, session)

    async def require_moderators(self, session: str, names: frozenset[str]) -> bool:
        return await self.thread.run(self.store.require_moderators, session, names)

    async def kills(self) -> list[KillRequest]:
        return await self.thread.run(self.store.kills_for, self.instance)

    def kill_done(self, session: str) -> None:
        self._later(session, self.store.kill_done, session)


def human_bytes(count: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if count < 1024 or unit == "G":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count}"


def human_age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def session_table(sessions: list[LiveSession], now: float) -> list[str]:
    """Live sessions as lines for a terminal: one header, one line per session. What a session
    put in its command is escaped (it reaches the reader's terminal)."""
    lines = [f"{'ID':<20} {'USER':<12} {'LOGIN@TARGET':<24} {'KIND':<8} {'CLIENT':<21} {'STARTED':<8} "
             f"{'IDLE':>7} {'IN':>7} {'OUT':>7}  INSTANCE  RECORDING  COMMAND"]
    for s in sessions:
        started = time.strftime("%H:%M:%S", time.localtime(s.started))
        idle, sent, received = human_age(s.idle(now)), human_bytes(s.bytes_in), human_bytes(s.bytes_out)
        command = printable(s.command) if s.command else ""
        lines.append(
            f"{s.session:<20} {s.user:<12} {s.login + '@' + s.target:<24} {s.kind or '-':<8} {s.client:<21} "
            f"{started:<8} {idle:>7} {sent:>7} {received:>7}"
            f"  {s.instance or '-'}  {s.recording or '-'}  {command}".rstrip()
        )
    return lines
