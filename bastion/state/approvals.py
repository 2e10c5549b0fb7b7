"""Approval requests in SQLite: a held command waits here until enough approvers decide.

The session that holds the command polls its request; any process with the database (the
`bastion approvals` CLI today, the web service later, another bastion sharing the state)
records decisions. A request is bound to its session and the exact command (a hash), expires,
and can never be approved by its requester. What is stored of the command is masked and
bounded (`bastion.core.stored`); the hash is of the command as submitted.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bastion.core.masker import TextMasker
from bastion.core.stored import command_hash, stored_command
from bastion.errors import BastionError
from bastion.state.dbthread import DatabaseThread

SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_requests (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    command TEXT NOT NULL,
    command_hash TEXT NOT NULL,
    rule TEXT NOT NULL,
    approvers TEXT NOT NULL,
    approvals_needed INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    token TEXT,
    screen TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS approval_decisions (
    request TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL,
    at REAL NOT NULL,
    identity TEXT,
    PRIMARY KEY (request, approver)
);
"""
# Columns added after the first release, for databases made before them.
MIGRATIONS = (
    ("approval_requests", "token", "TEXT"),
    ("approval_requests", "screen", "TEXT NOT NULL DEFAULT ''"),
    ("approval_decisions", "identity", "TEXT"),
)
FIELDS = ("id, session, requester, target, login, command, rule, approvers, approvals_needed, created,"
          " expires, state, token, screen, command_hash")


class ApprovalState(StrEnum):
    """Where a request stands; only a pending one takes decisions."""

    PENDING = "pending"
    APPROVED = "approved"  # enough approvers approved
    DENIED = "denied"  # one approver denied
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # by the requester's side, or its session ended


class Decision(StrEnum):
    """One approver's decision on a request."""

    APPROVE = "approve"
    DENY = "deny"


Decisions = list[tuple[str, Decision, str | None]]  # (approver, decision, identity), oldest first


def decided_by(state: ApprovalState, decisions: Decisions) -> list[str]:
    """The approvers whose decisions put a request in `state` (none: it expired or was cancelled)."""
    ending = {ApprovalState.APPROVED: Decision.APPROVE, ApprovalState.DENIED: Decision.DENY}.get(state)
    return [approver for approver, decision, _ in decisions if decision is ending]


class ApprovalError(BastionError):
    """A decision that cannot be recorded; the message is safe to show the approver."""

    code = "approval_error"
    http_status = 409  # the request is in a state that refuses this decision


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    session: str
    requester: str
    target: str
    login: str
    command: str  # masked, and only its head when it is long: for people to read
    rule: str
    approvers: tuple[str, ...]
    approvals_needed: int
    created: float
    expires: float
    state: ApprovalState
    token: str = ""  # the secret part of the request's web link
    screen: str = ""  # the terminal screen when the command was submitted (text)
    command_hash: str = ""  # of the command as submitted: what a decision is bound to


def open_state_db(path: Path, schema: str) -> sqlite3.Connection:
    """The state database (0600, WAL, autocommit), shared by approvals and the SSO directory
    and by every process that works on them; `schema` is applied if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db


class ApprovalStore:
    """Synchronous; code on the event loop calls it through `thread`."""

    def __init__(self, path: Path, *, masker: TextMasker) -> None:
        self.db = open_state_db(path, SCHEMA)
        self._masker = masker  # what a request's command is stored masked with
        self.thread = DatabaseThread("approvals-db")
        for table, column, kind in MIGRATIONS:
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def create(self, *, session: str, requester: str, target: str, login: str, command: str, rule: str,
               approvers: tuple[str, ...], approvals: int, timeout: int, screen: str = "") -> ApprovalRequest:
        """A pending request for `command` as submitted: it is stored masked (and bounded), and
        decisions are bound to its hash. `screen` must be masked already."""
        now = time.time()
        stored = str(stored_command(command, self._masker))
        for _ in range(8):  # six hex digits are for people to read out; collisions are retried
            request_id = secrets.token_hex(3).upper()
            try:
                self.db.execute(
                    "INSERT INTO approval_requests (id, session, requester, target, login, command,"
                    " command_hash, rule, approvers, approvals_needed, created, expires, token, screen)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (request_id, session, requester, target, login, stored, command_hash(command), rule,
                     ",".join(approvers), approvals, now, now + timeout, secrets.token_urlsafe(24), screen),
                )
                break
            except sqlite3.IntegrityError:
                continue
        else:
            raise ApprovalError("could not allocate a request id")
        return self.get(request_id)  # type: ignore[return-value]

    def _row(self, row: tuple[object, ...] | None) -> ApprovalRequest | None:
        if row is None:
            return None
        values = list(row)
        values[7] = tuple(a for a in str(values[7]).split(",") if a)
        values[11] = ApprovalState(str(values[11]))
        values[12] = values[12] or ""
        return ApprovalRequest(*values)  # type: ignore[arg-type]

    def get(self, request_id: str) -> ApprovalRequest | None:
        return self._row(self.db.execute(f"SELECT {FIELDS} FROM approval_requests WHERE id = ?",  # noqa: S608
                                         (request_id.upper(),)).fetchone())

    def by_token(self, token: str) -> ApprovalRequest | None:
        """The request a web link names; links carry no authority, only the way to it."""
        if not token:
            return None
        return self._row(self.db.execute(f"SELECT {FIELDS} FROM approval_requests WHERE token = ?",  # noqa: S608
                                         (token,)).fetchone())

    def pending(self) -> list[ApprovalRequest]:
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM approval_requests WHERE state = ? ORDER BY created", (ApprovalState.PENDING,))]
        return [r for r in (self.get(i) for i in ids) if r is not None]

    def recent(self, limit: int) -> list[ApprovalRequest]:
        rows = self.db.execute(f"SELECT {FIELDS} FROM approval_requests ORDER BY created DESC LIMIT ?",  # noqa: S608
                               (limit,)).fetchall()
        return [r for r in map(self._row, rows) if r is not None]

    def decide(self, request_id: str, approver: str, decision: Decision, *,
               groups: frozenset[str] | None = None, command: str | None = None, digest: str | None = None,
               identity: str | None = None) -> ApprovalState:
        """Record one approver's decision; returns the request's state afterwards.

        Atomic across processes: two approvers clicking at once, or a click racing expiry,
        cannot both win. `command`/`digest` bind the decision to the exact command seen.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            state = self._decide(request_id, approver, decision, groups, command, digest, identity)
        except BaseException:
            self.db.execute("COMMIT")  # an expiry noted on the way is kept
            raise
        self.db.execute("COMMIT")
        return state

    def _decide(self, request_id: str, approver: str, decision: Decision, groups: frozenset[str] | None,
                command: str | None, digest: str | None, identity: str | None) -> ApprovalState:
        request = self.get(request_id)
        if request is None:
            raise ApprovalError(f"no approval request {request_id!r}")
        if request.state is not ApprovalState.PENDING:
            decided = self.db.execute("SELECT approver, decision FROM approval_decisions WHERE request = ?"
                                      " ORDER BY at DESC LIMIT 1", (request.id,)).fetchone()
            by = f" by {decided[0]}" if decided else ""
            raise ApprovalError(f"request {request.id} was already {request.state}{by}")
        if approver == request.requester:
            raise ApprovalError("the requester cannot approve their own request")
        if groups is not None and not groups & set(request.approvers):
            raise ApprovalError(f"{approver} is not in an approver group ({', '.join(request.approvers)})")
        if command is not None:
            digest = command_hash(command)
        if digest is not None and not hmac.compare_digest(digest, request.command_hash):
            raise ApprovalError("the decision is for a different command")
        if time.time() > request.expires:
            self._set_state(request.id, ApprovalState.EXPIRED)
            raise ApprovalError(f"request {request.id} has expired")
        if not isinstance(decision, Decision):  # a plain "deny" must not count as anything
            raise ApprovalError("decision must be approve or deny")
        if self.db.execute("SELECT 1 FROM approval_decisions WHERE request = ? AND approver = ?",
                           (request.id, approver)).fetchone():
            raise ApprovalError(f"{approver} has already decided on request {request.id}")
        self.db.execute("INSERT INTO approval_decisions (request, approver, decision, at, identity)"
                        " VALUES (?,?,?,?,?)", (request.id, approver, decision, time.time(), identity))
        if decision is Decision.DENY:
            self._set_state(request.id, ApprovalState.DENIED)
            return ApprovalState.DENIED
        approvals = self.db.execute("SELECT COUNT(*) FROM approval_decisions WHERE request = ? AND"
                                    " decision = ?", (request.id, Decision.APPROVE)).fetchone()[0]
        if approvals >= request.approvals_needed:
            self._set_state(request.id, ApprovalState.APPROVED)
            return ApprovalState.APPROVED
        return ApprovalState.PENDING

    def state(self, request_id: str) -> tuple[ApprovalState, Decisions]:
        """(state, [(approver, decision, identity)]), marking an expired pending request as such."""
        request = self.get(request_id)
        if request is None:
            return ApprovalState.CANCELLED, []
        state = request.state
        if state is ApprovalState.PENDING and time.time() > request.expires:
            self._set_state(request.id, ApprovalState.EXPIRED)
            state = ApprovalState.EXPIRED
        decisions = [(a, Decision(d), i) for a, d, i in self.db.execute(
            "SELECT approver, decision, identity FROM approval_decisions WHERE request = ? ORDER BY at",
            (request.id,))]
        return state, decisions

    def cancel(self, request_id: str) -> bool:
        """Whether the request was still pending (and now is cancelled)."""
        query = "UPDATE approval_requests SET state = ? WHERE id = ? AND state = ?"
        cancelled = self.db.execute(query, (ApprovalState.CANCELLED, request_id, ApprovalState.PENDING))
        return cancelled.rowcount > 0

    def cancel_all_pending(self) -> int:
        """At start-up: requests of sessions that no longer exist never turn into approvals."""
        query = "UPDATE approval_requests SET state = ? WHERE state = ?"
        return self.db.execute(query, (ApprovalState.CANCELLED, ApprovalState.PENDING)).rowcount

    def _set_state(self, request_id: str, state: ApprovalState) -> None:
        self.db.execute("UPDATE approval_requests SET state = ? WHERE id = ?", (state, request_id))
