"""Approval requests in SQLite: a held command waits here until enough approvers decide.

The session that holds the command polls its request; any process with the database (the
`bastion approvals` CLI today, the web service later, another bastion sharing the state)
records decisions. A request is bound to its session and the exact command (a hash), expires,
and can never be approved by its requester.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS approval_decisions (
    request TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (request, approver)
);
"""


class ApprovalError(Exception):
    pass


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    session: str
    requester: str
    target: str
    login: str
    command: str
    rule: str
    approvers: tuple[str, ...]
    approvals_needed: int
    created: float
    expires: float
    state: str


def command_hash(command: str) -> str:
    return hashlib.sha256(command.encode("utf-8", "surrogateescape")).hexdigest()


class ApprovalStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def create(self, *, session: str, requester: str, target: str, login: str, command: str, rule: str,
               approvers: tuple[str, ...], approvals: int, timeout: int) -> ApprovalRequest:
        now = time.time()
        request_id = secrets.token_hex(3).upper()
        self.db.execute(
            "INSERT INTO approval_requests (id, session, requester, target, login, command, command_hash,"
            " rule, approvers, approvals_needed, created, expires) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (request_id, session, requester, target, login, command, command_hash(command), rule,
             ",".join(approvers), approvals, now, now + timeout),
        )
        return self.get(request_id)  # type: ignore[return-value]

    def get(self, request_id: str) -> ApprovalRequest | None:
        row = self.db.execute(
            "SELECT id, session, requester, target, login, command, rule, approvers, approvals_needed,"
            " created, expires, state FROM approval_requests WHERE id = ?", (request_id.upper(),)).fetchone()
        if row is None:
            return None
        values = list(row)
        values[7] = tuple(a for a in values[7].split(",") if a)
        return ApprovalRequest(*values)

    def pending(self) -> list[ApprovalRequest]:
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM approval_requests WHERE state = 'pending' ORDER BY created")]
        return [r for r in (self.get(i) for i in ids) if r is not None]

    def decide(self, request_id: str, approver: str, decision: str, *, groups: frozenset[str] | None = None,
               command: str | None = None) -> str:
        """Record one approver's decision; returns the request's state afterwards."""
        request = self.get(request_id)
        if request is None:
            raise ApprovalError(f"no approval request {request_id!r}")
        if request.state != "pending":
            decided = self.db.execute("SELECT approver, decision FROM approval_decisions WHERE request = ?"
                                      " ORDER BY at DESC LIMIT 1", (request.id,)).fetchone()
            by = f" by {decided[0]}" if decided else ""
            raise ApprovalError(f"request {request.id} was already {request.state}{by}")
        if approver == request.requester:
            raise ApprovalError("the requester cannot approve their own request")
        if groups is not None and not groups & set(request.approvers):
            raise ApprovalError(f"{approver} is not in an approver group ({', '.join(request.approvers)})")
        if command is not None and command_hash(command) != command_hash(request.command):
            raise ApprovalError("the decision is for a different command")
        if time.time() > request.expires:
            self._set_state(request.id, "expired")
            raise ApprovalError(f"request {request.id} has expired")
        if decision not in ("approve", "deny"):
            raise ApprovalError("decision must be approve or deny")
        self.db.execute("INSERT OR REPLACE INTO approval_decisions VALUES (?,?,?,?)",
                        (request.id, approver, decision, time.time()))
        if decision == "deny":
            self._set_state(request.id, "denied")
            return "denied"
        approvals = self.db.execute("SELECT COUNT(*) FROM approval_decisions WHERE request = ? AND"
                                    " decision = 'approve'", (request.id,)).fetchone()[0]
        if approvals >= request.approvals_needed:
            self._set_state(request.id, "approved")
            return "approved"
        return "pending"

    def state(self, request_id: str) -> tuple[str, list[tuple[str, str]]]:
        """(state, [(approver, decision)]), marking an expired pending request as such."""
        request = self.get(request_id)
        if request is None:
            return "cancelled", []
        state = request.state
        if state == "pending" and time.time() > request.expires:
            self._set_state(request.id, "expired")
            state = "expired"
        decisions = [(a, d) for a, d in self.db.execute(
            "SELECT approver, decision FROM approval_decisions WHERE request = ? ORDER BY at", (request.id,))]
        return state, decisions

    def cancel(self, request_id: str) -> None:
        self.db.execute("UPDATE approval_requests SET state = 'cancelled' WHERE id = ? AND state = 'pending'",
                        (request_id,))

    def cancel_all_pending(self) -> int:
        """At start-up: requests of sessions that no longer exist never turn into approvals."""
        query = "UPDATE approval_requests SET state = 'cancelled' WHERE state = 'pending'"
        return self.db.execute(query).rowcount

    def _set_state(self, request_id: str, state: str) -> None:
        self.db.execute("UPDATE approval_requests SET state = ? WHERE id = ?", (state, request_id))
