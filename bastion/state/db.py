"""The state database, SQLite or PostgreSQL, behind one connection type.

`state_db` names it: a path (or nothing) is an SQLite file beside the config, for one instance;
a `postgresql://` URL is a PostgreSQL database shared by every instance of the service. The
stores (approvals, the SSO directory, instances, key fingerprints) speak one SQL to it: `?`
placeholders, `"user"` quoted (a reserved word in PostgreSQL), `INSERT ... ON CONFLICT`. What
differs between the two lives here: the driver, how a write transaction excludes the others,
schema migrations (each store keeps a versioned list per backend), and events between
processes (PostgreSQL's LISTEN/NOTIFY; SQLite readers poll).

PostgreSQL is reached with psycopg 3 through its synchronous API: every store already runs
its calls on a thread of its own (`DatabaseThread`), in call order, so a blocking driver fits
and a dedicated connection can sit in LISTEN on a thread of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bastion.errors import BastionError

if TYPE_CHECKING:
    import psycopg

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
Location = Path | str  # a file for SQLite, a URL for PostgreSQL


class StateError(BastionError):
    """The state database cannot be used: unreachable, or its schema is not this version's."""

    code = "state_error"


class StateUnavailable(StateError):
    """The state database did not answer (down, restarting, unreachable); a retry may work."""

    code = "state_unavailable"
    http_status = 503


class Conflict(StateError):
    """A row with that key exists already."""

    code = "state_conflict"


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgresql"


def is_url(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def describe(location: Location) -> str:
    """The location for messages: a URL without its password."""
    if not is_url(location):
        return str(location)
    text = str(location)
    scheme, _, rest = text.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme}://{credentials}{at}{host}"


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


# One step of a store's schema: statements, or a function given the database (for steps that
# look before they change, as adding a column an older file may already have).
Step = Sequence[str] | Callable[["StateDatabase"], None]


@dataclass(frozen=True)
class Migrations:
    """A store's schema as numbered steps, one list per backend; version N = N steps applied.
    Both lists have the same length: version N means the same tables on either backend."""

    component: str
    sqlite: Sequence[Step]
    postgres: Sequence[Step]

    def __post_init__(self) -> None:
        assert len(self.sqlite) == len(self.postgres), self.component


VERSIONS_TABLE = ("CREATE TABLE IF NOT EXISTS schema_versions"
                  " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")


class StateDatabase:
    """One connection. Synchronous; code on the event loop calls it through a DatabaseThread."""

    backend: Backend

    def __init__(self, location: Location) -> None:
        self.location = location

    @staticmethod
    def open(location: Location) -> StateDatabase:
        if is_url(location):
            return PostgresDatabase(str(location))
        return SqliteDatabase(Path(location))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self, *, keep_on_error: bool = True) -> Iterator[None]:
        """A write transaction that excludes every other writer of the database until it ends.
        Committed on the way out, an exception included (what was written before it stays),
        unless `keep_on_error` is False: then an exception rolls it back."""
        raise NotImplementedError
        yield

    def notify(self, channel: str, payload: str) -> None:
        """Tell every process listening on `channel` (PostgreSQL); SQLite readers poll instead."""

    def close(self) -> None:
        raise NotImplementedError

    def migrate(self, migrations: Migrations) -> int:
        """Bring the store's tables to this version's schema; refuse a newer one. Returns the version."""
        steps = migrations.postgres if self.backend is Backend.POSTGRES else migrations.sqlite
        if self._version(migrations.component) == len(steps):  # up to date: an open writes nothing
            return len(steps)
        with self.transaction():
            self.execute(VERSIONS_TABLE)
            row = self.execute("SELECT version FROM schema_versions WHERE component = ?",
                               (migrations.component,)).fetchone()
            version = int(row[0]) if row else 0
            if version > len(steps):
                raise StateError(
                    f"{describe(self.location)}: the {migrations.component} tables are at schema version"
                    f" {version}, newer than this bastion knows ({len(steps)}); run the newer bastion,"
                    " or point this one at another database")
            for step in steps[version:]:
                if callable(step):
                    step(self)
                else:
                    for statement in step:
                        self.execute(statement)
            if version < len(steps):
                self.execute("INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                             " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                             (migrations.component, len(steps)))
        return len(steps)

    def _version(self, component: str) -> int | None:
        """The component's schema version, read without a transaction (None: no table yet)."""
        if "schema_versions" not in self.tables():
            return None
        row = self.execute("SELECT version FROM schema_versions WHERE component = ?",
                           (component,)).fetchone()
        return int(row[0]) if row else 0

    def tables(self) -> set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError


class SqliteDatabase(StateDatabase):
    backend = Backend.SQLITE

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        try:
            return self.db.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    @contextlib.contextmanager
    def transaction(self, *, keep_on_error: bool = True) -> Iterator[None]:
        if self.db.in_transaction:  # nested: the outer one already holds the lock
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        ending = "COMMIT"
        try:
            yield
        except BaseException:
            ending = "COMMIT" if keep_on_error else "ROLLBACK"
            raise
        finally:
            self.db.execute(ending)

    def close(self) -> None:
        self.db.close()

    def tables(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}


# Every write transaction takes this one lock, as SQLite's BEGIN IMMEDIATE does: two approvers
# deciding at once, or a decision racing expiry, are serialised across all instances.
WRITE_LOCK = int.from_bytes(hashlib.sha256(b"bastion state write lock").digest()[:7], "big")


class PostgresDatabase(StateDatabase):
    """psycopg 3, autocommit outside `transaction()`. A connection lost (the server restarted)
    fails the call that met it with StateUnavailable and is made again by the next call."""

    backend = Backend.POSTGRES

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._in_transaction = False
        self._lock = threading.RLock()
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                         application_name="bastion")
        except psycopg.Error as exc:
            raise StateUnavailable(
                f"state database {describe(self.url)} unreachable: {_first_line(exc)}") from None
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        import psycopg

        query = sql.replace("%", "%%").replace("?", "%s")
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(query, tuple(params))
            except psycopg.errors.IntegrityError as exc:
                raise Conflict(_first_line(exc)) from None
            except psycopg.OperationalError as exc:
                if conn.closed or conn.broken:
                    self._conn = None
                    raise StateUnavailable(
                        f"state database {describe(self.url)} unavailable: {_first_line(exc)}") from None
                raise StateError(f"state database {describe(self.url)}: {_first_line(exc)}") from None

    @contextlib.contextmanager
    def transaction(self, *, keep_on_error: bool = True) -> Iterator[None]:
        with self._lock:
            if self._in_transaction:  # nested: the outer one already holds the lock
                yield
                return
            self.execute("BEGIN")
            self._in_transaction = True
            ending = "COMMIT"
            try:
                self.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
                yield
            except BaseException:
                ending = "COMMIT" if keep_on_error else "ROLLBACK"
                raise
            finally:
                self._in_transaction = False
                if self._conn is not None:  # gone (StateUnavailable): the server rolled it back
                    self.execute(ending)

    def notify(self, channel: str, payload: str) -> None:
        self.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def tables(self) -> set[str]:
        rows = self.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in rows}

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns"
                            " WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {r[0] for r in rows}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Listener:
    """PostgreSQL LISTEN on a connection and a thread of its own: `heard(channel, payload)` is
    called on that thread for each notification. Reconnects after the server went away (and
    then calls `heard(channel, "")` on every channel: something may have been missed)."""

    def __init__(self, url: str, channels: Sequence[str], heard: Callable[[str, str], None]) -> None:
        self.url, self.channels, self.heard = url, tuple(channels), heard
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="state-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg

        missed = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                     application_name="bastion-listen") as conn:
                    for channel in self.channels:
                        conn.execute(f'LISTEN "{channel}"')
                    if missed:
                        for channel in self.channels:
                            self.heard(channel, "")
                    missed = True
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.heard(note.channel, note.payload)
            except psycopg.Error:
                time.sleep(0.5)
