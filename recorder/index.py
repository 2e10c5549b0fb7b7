"""The session index: one row per recording, in SQLite (a file beside the recordings, WAL so
readers never block the writer) or in the bastion's PostgreSQL database when the state is
shared by several instances (every instance's recordings in one index).

The recorder does not import the bastion: this module has its own small adapter for the two
backends (psycopg 3 for PostgreSQL), its own versioned schema (component "recordings" in
`schema_versions`, the table the bastion's stores use too), and refuses a newer schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_V1 = (
    """CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    "user" TEXT NOT NULL,
    login TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT,
    kind TEXT,
    command TEXT,
    started REAL NOT NULL,
    ended REAL,
    duration REAL,
    bytes_in INTEGER DEFAULT 0,
    bytes_out INTEGER DEFAULT 0,
    exit_status INTEGER,
    exit_signal TEXT,
    markers TEXT DEFAULT '{}',
    location TEXT,
    lines INTEGER,
    chain TEXT,
    state TEXT NOT NULL DEFAULT 'live',
    error TEXT,
    verification TEXT,
    workload TEXT
)""",
    "CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started)",
    'CREATE INDEX IF NOT EXISTS sessions_user ON sessions ("user", started)',
    "CREATE INDEX IF NOT EXISTS sessions_target ON sessions (target, started)",
)
# 2: which bastion instance wrote the recording (several share one index on PostgreSQL).
_V2 = ("ALTER TABLE sessions ADD COLUMN instance TEXT",)
SQLITE_STEPS: tuple[tuple[str, ...], ...] = (_V1, _V2)
POSTGRES_STEPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT") for s in step)
    for step in SQLITE_STEPS)
LEGACY_COLUMNS = ("verification", "workload")  # added before schema versions were kept
COMPONENT = "recordings"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
WRITE_LOCK = int.from_bytes(hashlib.sha256(b"bastion state write lock").digest()[:7], "big")


class IndexSchemaError(RuntimeError):
    """The index's schema is newer than this version knows."""


COLUMNS = ("id", "name", "user", "login", "target", "client", "kind", "command", "started", "ended",
           "duration", "bytes_in", "bytes_out", "exit_status", "exit_signal", "markers", "location",
           "lines", "chain", "state", "error", "verification", "workload", "instance")


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str
    user: str
    login: str
    target: str
    client: str | None
    kind: str | None
    command: str | None
    started: float
    ended: float | None
    duration: float | None
    bytes_in: int
    bytes_out: int
    exit_status: int | None
    exit_signal: str | None
    markers: dict[str, int]
    location: str | None
    lines: int | None
    chain: str | None
    state: str
    error: str | None
    verification: str | None
    workload: str | None = None  # a machine's session: its token's claims (JSON)
    instance: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def is_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def index_location(recordings_dir: Path, state_url: str | None) -> Path | str:
    """The index beside the recordings, or in the shared PostgreSQL state when there is one."""
    return state_url if state_url is not None else recordings_dir / "index.db"


def index_missing(location: Path | str) -> bool:
    return not is_url(location) and not Path(location).exists()


class _Database:
    """SQLite or PostgreSQL, spoken to with `?` placeholders and quoted column names."""

    def __init__(self, location: Path | str) -> None:
        self.postgres = is_url(location)
        self._lock = threading.RLock()
        self._url = str(location)
        self._pg: Any = None  # connected at the first call, and again after the server went away
        self._sqlite: sqlite3.Connection | None = None
        if self.postgres:
            return
        path = Path(location)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._sqlite = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._sqlite.execute("PRAGMA journal_mode=WAL")
        self._sqlite.execute("PRAGMA synchronous=NORMAL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._sqlite is not None:
            return self._sqlite.execute(sql, tuple(params))
        with self._lock:
            return self._connection().execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))

    def _connection(self) -> Any:
        if self._pg is None or self._pg.closed:
            import psycopg

            self._pg = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                       application_name="bastion-recorder")
        return self._pg

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._sqlite is not None:
            self._sqlite.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                self._sqlite.execute("COMMIT")
            return
        with self._lock, self._connection().transaction():
            self.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
            yield

    def columns(self) -> set[str]:
        if self._sqlite is not None:
            return {row[1] for row in self._sqlite.execute("PRAGMA table_info(sessions)")}
        return {r[0] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'")}

    def version(self) -> int | None:
        """The schema version recorded, without writing anything (None: no versions table)."""
        if self.postgres:
            query = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        else:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        if self.execute(query, ("schema_versions",)).fetchone() is None:
            return None
        row = self.execute("SELECT version FROM schema_versions WHERE component = ?",
                           (COMPONENT,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        steps = POSTGRES_STEPS if self.postgres else SQLITE_STEPS
        if self.version() == len(steps):  # up to date: an open writes nothing
            return
        with self.transaction():
            self.execute("CREATE TABLE IF NOT EXISTS schema_versions"
                         " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            row = self.execute("SELECT version FROM schema_versions WHERE component = ?",
                               (COMPONENT,)).fetchone()
            version = int(row[0]) if row else 0
            if version > len(steps):
                raise IndexSchemaError(f"the recordings index is at schema version {version}, newer than this"
                                       f" version knows ({len(steps)}); run the newer version")
            for number, step in enumerate(steps[version:], start=version + 1):
                for statement in step:
                    self.execute(statement)
                if number == 1 and not self.postgres:
                    present = self.columns()
                    for column in LEGACY_COLUMNS:
                        if column not in present:
                            self.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
            if version < len(steps):
                self.execute("INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                             " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                             (COMPONENT, len(steps)))

    def marker_condition(self) -> str:
        if self.postgres:
            return "COALESCE((markers::jsonb ->> ?)::bigint, 0) > 0"
        return "COALESCE(json_extract(markers, '$.' || json_quote(?)), 0) > 0"

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        elif self._pg is not None:
            self._pg.close()


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


class RecordingIndex:
    """`location`: the SQLite file, or the PostgreSQL URL the bastion's state lives at.
    `path` is what a worker process is given to open the same index."""

    def __init__(self, location: Path | str, *, wait_for_database: bool = False) -> None:
        """`wait_for_database`: a PostgreSQL index out of reach now is reached (and its schema
        checked) at the first call instead; that call fails while it stays out of reach."""
        self.path = location
        self.db = _Database(location)
        self._checked = False
        if not (wait_for_database and self.db.postgres):
            self._schema()

    def _schema(self) -> None:
        if not self._checked:
            self.db.migrate()
            self._checked = True

    def close(self) -> None:
        self.db.close()

    def session_opened(self, **fields: Any) -> None:
        self._schema()
        names = _quoted(list(fields))
        marks = ", ".join("?" for _ in fields)
        self.db.execute(f"INSERT INTO sessions ({names}) VALUES ({marks})", tuple(fields.values()))  # noqa: S608

    def session_updated(self, session_id: str, **fields: Any) -> None:
        self._schema()
        if "markers" in fields:
            fields["markers"] = json.dumps(fields["markers"], sort_keys=True)
        sets = ", ".join(f'"{name}" = ?' for name in fields)
        self.db.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*fields.values(), session_id))  # noqa: S608

    def get(self, session_id: str) -> SessionRow | None:
        rows = list(self._select("id = ?", [session_id]))
        return rows[0] if rows else None

    def search(self, *, user: str | None = None, target: str | None = None, since: float | None = None,
               until: float | None = None, marker: str | None = None, limit: int = 1000) -> list[SessionRow]:
        where, args = ["1 = 1"], list[Any]()
        for column, value in (("user", user), ("target", target)):
            if value is not None:
                where.append(f'"{column}" = ?')
                args.append(value)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        if until is not None:
            where.append("started < ?")
            args.append(until)
        if marker is not None:
            where.append(self.db.marker_condition())
            args.append(marker)
        return list(self._select(" AND ".join(where), args, limit=limit))

    def live(self) -> list[SessionRow]:
        """Recordings the index still calls live."""
        return list(self._select("state = 'live'", [], limit=1_000_000))

    def abandoned(self, alive: Sequence[str]) -> list[SessionRow]:
        """Rows still "live" whose instance is not among `alive`: their writer is gone (killed
        with its bastion), so nobody will close them."""
        marks = ", ".join("?" for _ in alive) or "NULL"
        return list(self._select(f"state = 'live' AND (instance IS NULL OR instance NOT IN ({marks}))",
                                 list(alive), limit=1_000_000))

    def older_than(self, cutoff: float) -> list[SessionRow]:
        return list(self._select("started < ? AND state != 'live'", [cutoff], limit=1_000_000))

    def delete(self, session_id: str) -> None:
        self._schema()
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def _select(self, where: str, args: list[Any], limit: int = 1000) -> Iterator[SessionRow]:
        self._schema()
        query = f"SELECT {_quoted(COLUMNS)} FROM sessions WHERE {where} ORDER BY started DESC LIMIT ?"  # noqa: S608
        for row in self.db.execute(query, (*args, limit)):
            values = dict(zip(COLUMNS, row, strict=True))
            values["markers"] = json.loads(values["markers"] or "{}")
            yield SessionRow(**values)
