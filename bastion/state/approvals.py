"""Approval requests in the state database: a held command waits here until enough approvers decide.

The session that holds the command polls its request (and, on PostgreSQL, is woken by a
NOTIFY on CHANNEL when its state changes); any process with the database (the
`bastion approvals` CLI today, the web service later, another bastion sharing the state)
records decisions. A request is bound to its session and the exact command (a hash), expires,
and can never be approved by its requester. What is stored of the command is masked and
bounded (`bastion.core.stored`); the hash is of the command as submitted.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bastion.core.masker import TextMasker
from bastion.core.stored import command_hash, stored_command
from bastion.errors import BastionError
from bastion.state.db import Conflict, Location, Migrations, StateDatabase
from bastion.state.dbthread import DatabaseThread
from bastion.state.instances import INSTANCES, process_running, this_host

SQLITE_V1 = (
    """CREATE TABLE IF NOT EXISTS approval_requests (
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
)""",
    """CREATE TABLE IF NOT EXISTS approval_decisions (
    request TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL,
    at REAL NOT NULL,
    identity TEXT,
    PRIMARY KEY (request, approver)
)""",
)
# Columns added before schema versions were kept, for files made before them.
LEGACY_COLUMNS = (
    ("approval_requests", "token", "TEXT"),
    ("approval_requests", "screen", "TEXT NOT NULL DEFAULT ''"),
    ("approval_decisions", "identity", "TEXT"),
)


def _legacy_columns(db: StateDatabase) -> None:
    for table, column, kind in LEGACY_COLUMNS:
        if column not in db.columns(table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


MIGRATIONS = Migrations(
    "approvals",
    sqlite=(SQLITE_V1, _legacy_columns,
            # 3: the instance that holds the request's session (its lease says whether it lives)
            ("ALTER TABLE approval_requests ADD COLUMN instance TEXT",)),
    postgres=(
        tuple(statement.replace(" REAL ", " DOUBLE PRECISION ") for statement in SQLITE_V1),
        (),
        ("ALTER TABLE approval_requests ADD COLUMN instance TEXT",
         "CREATE INDEX approval_requests_pending ON approval_requests (state, created)",
         "CREATE UNIQUE INDEX approval_requests_token ON approval_requests (token)"),
    ),
)
CHANNEL = "bastion_approvals"  # NOTIFY payload: a request id whose state changed
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


class ApprovalStore:
    """Synchronous; code on the event loop calls it through `thread`. `instance` is the id of
    the running bastion instance whose sessions make requests (None in the CLI)."""

    def __init__(self, location: Location, *, masker: TextMasker, instance: str | None = None) -> None:
        self.db = StateDatabase.open(location)
        self.db.migrate(INSTANCES)  # the leases the queries join
        self.db.migrate(MIGRATIONS)
        self._masker = masker  # what a request's command is stored masked with
        self.instance = instance
        self.thread = DatabaseThread("approvals-db")
        self._watchers: dict[str, set[Callable[[], None]]] = {}

    # -- waking the holds on this instance when a request changes (PostgreSQL NOTIFY) -------------

    def watch(self, request_id: str, wake: Callable[[], None]) -> None:
        self._watchers.setdefault(request_id, set()).add(wake)

    def unwatch(self, request_id: str, wake: Callable[[], None]) -> None:
        watchers = self._watchers.get(request_id)
        if watchers is not None:
            watchers.discard(wake)
            if not watchers:
                del self._watchers[request_id]

    def heard(self, request_id: str) -> None:
        """`request_id` changed somewhere (an empty id: anything may have): wake who waits."""
        targets = list(self._watchers.get(request_id, ())) if request_id else [
            wake for watchers in self._watchers.values() for wake in watchers]
        for wake in targets:
            wake()

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
                    " command_hash, rule, approvers, approvals_needed, created, expires, token, screen,"
                    " instance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (request_id, session, requester, target, login, stored, command_hash(command), rule,
                     ",".join(approvers), approvals, now, now + timeout, secrets.token_urlsafe(24), screen,
                     self.instance),
                )
                break
            except Conflict:
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
        with self.db.transaction():  # an expiry noted on the way is kept, even when refused
            state = self._decide(request_id, approver, decision, groups, command, digest, identity)
        self.db.notify(CHANNEL, request_id.upper())
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
        if not self._holder_alive(request.id):
            # The instance holding the session is gone (its lease ran out): nothing waits for this
            # decision, and an approval must never outlive the session it was asked by.
            self._set_state(request.id, ApprovalState.CANCELLED)
            raise ApprovalError(f"request {request.id} was cancelled: the bastion instance holding its"
                                " session stopped")
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
        if cancelled.rowcount > 0:
            self.db.notify(CHANNEL, request_id)
            return True
        return False

    def _holder_alive(self, request_id: str) -> bool:
        """Whether the request's instance still holds a lease and, when it runs on this host,
        its process is still there (requests made before instances were recorded have none:
        their bastion process is long gone)."""
        row = self.db.execute(
            "SELECT i.host, i.pid FROM approval_requests r JOIN instances i ON i.id = r.instance"
            " WHERE r.id = ? AND i.expires > ?", (request_id, time.time())).fetchone()
        if row is None:
            return False
        return not (row[0] == this_host() and not process_running(int(row[1])))

    def cancel_orphans(self) -> list[str]:
        """Pending requests whose instance's lease ran out (or that have none) are cancelled:
        their sessions are gone, and they never turn into approvals. Requests of live
        instances are never touched. Returns the ids cancelled."""
        with self.db.transaction():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM approval_requests r WHERE state = ? AND NOT EXISTS"
                " (SELECT 1 FROM instances i WHERE i.id = r.instance AND i.expires > ?)",
                (ApprovalState.PENDING, time.time()))]
            for request_id in ids:
                self._set_state(request_id, ApprovalState.CANCELLED)
        for request_id in ids:
            self.db.notify(CHANNEL, request_id)
        return ids

    def _set_state(self, request_id: str, state: ApprovalState) -> None:
        self.db.execute("UPDATE approval_requests SET state = ? WHERE id = ?", (state, request_id))
