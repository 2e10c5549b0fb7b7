"""The session index: one SQLite row per recording (WAL, so readers never block the writer)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user TEXT NOT NULL,
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
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user, started);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions (target, started);
"""
ADDED_COLUMNS = ("verification", "workload")
COLUMNS = ("id", "name", "user", "login", "target", "client", "kind", "command", "started", "ended",
           "duration", "bytes_in", "bytes_out", "exit_status", "exit_signal", "markers", "location",
           "lines", "chain", "state", "error", "verification", "workload")


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

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    # Columns added after a database was created arrive by ALTER TABLE (all are nullable).
    present = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    for column in ADDED_COLUMNS:
        if column not in present:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
    return db


class RecordingIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)

    def close(self) -> None:
        self.db.close()

    def session_opened(self, **fields: Any) -> None:
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        self.db.execute(f"INSERT INTO sessions ({names}) VALUES ({marks})", tuple(fields.values()))  # noqa: S608

    def session_updated(self, session_id: str, **fields: Any) -> None:
        if "markers" in fields:
            fields["markers"] = json.dumps(fields["markers"], sort_keys=True)
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*fields.values(), session_id))  # noqa: S608

    def get(self, session_id: str) -> SessionRow | None:
        rows = list(self._select("id = ?", [session_id]))
        return rows[0] if rows else None

    def search(self, *, user: str | None = None, target: str | None = None, since: float | None = None,
               until: float | None = None, marker: str | None = None, limit: int = 1000) -> list[SessionRow]:
        where, args = ["1 = 1"], list[Any]()
        for column, value in (("user", user), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        if until is not None:
            where.append("started < ?")
            args.append(until)
        if marker is not None:
            where.append("COALESCE(json_extract(markers, '$.' || json_quote(?)), 0) > 0")
            args.append(marker)
        return list(self._select(" AND ".join(where), args, limit=limit))

    def live(self) -> list[SessionRow]:
        """Recordings the index still calls live."""
        return list(self._select("state = 'live'", [], limit=1_000_000))

    def older_than(self, cutoff: float) -> list[SessionRow]:
        return list(self._select("started < ? AND state != 'live'", [cutoff], limit=1_000_000))

    def delete(self, session_id: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def _select(self, where: str, args: list[Any], limit: int = 1000) -> Iterator[SessionRow]:
        query = f"SELECT {', '.join(COLUMNS)} FROM sessions WHERE {where} ORDER BY started DESC LIMIT ?"  # noqa: S608
        for row in self.db.execute(query, (*args, limit)):
            values = dict(zip(COLUMNS, row, strict=True))
            values["markers"] = json.loads(values["markers"] or "{}")
            yield SessionRow(**values)
