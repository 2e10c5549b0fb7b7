"""One session's command decisions, shared by the stages that screen: each is asked of the
rules, logged (`command_decision`), marked in the recording, and, when a rule wants approval,
held until enough approvers said yes (or no, or the request expired or was cancelled).
What is stored of a command (audit, approval request, marker) is masked and bounded.

The approval store is asked on its own thread (`ApprovalStore.thread`): a hold polls it
while every other session goes on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion import metrics
from bastion.core.masker import TextMasker
from bastion.core.rules import Action, CommandRequest, Verdict
from bastion.core.shellscope import Analysis
from bastion.core.stored import StoredCommand, stored_command
from bastion.rules_file import RulesHolder
from bastion.stages.pipeline import SessionInfo, SessionIO, Stream
from bastion.state.approvals import ApprovalRequest, ApprovalState, ApprovalStore, Decisions, decided_by
from bastion.state.audit import AuditLog
from bastion.state.db import StateError
from bastion.state.events import (
    APPROVAL_ENDED,
    ApprovalCancelled,
    ApprovalNotified,
    ApprovalRequested,
    CommandDecision,
)

POLL = 0.25
CANCEL_HINT = " - Ctrl-C to cancel"

# Tells approvers (chat); returns what could not be reached, e.g. ["slack: HTTP 500"].
Notify = Callable[[ApprovalRequest], Awaitable[list[str]]]


@dataclass
class ScreeningContext:
    rules: RulesHolder
    approvals: ApprovalStore | None
    audit: AuditLog
    masker: TextMasker  # the config's: what stored commands, screens and dropped keys are masked with
    notify: Notify | None = None


MARKER_LABELS = {Action.ALLOW: "command", Action.LOG: "logged", Action.DENY: "denied", Action.APPROVE: "held"}


class CommandDecisions:
    """Decides, logs and marks one session's commands, and holds them for approval."""

    def __init__(self, context: ScreeningContext, info: SessionInfo, io: SessionIO) -> None:
        self._ctx, self._info, self._io = context, info, io
        self._request: str | None = None  # the id of the request this session waits for
        # While a request is being created on the store's thread: how to announce it once made
        # (by the hold, or by the session's end if that comes first), and what was made.
        self._announce: Callable[[ApprovalRequest], None] | None = None
        self._made: ApprovalRequest | None = None
        self._cancelled = ""  # why a wait for approval must end (Ctrl-C, the session ending)
        self._wake = asyncio.Event()
        self._decided: tuple[str, StoredCommand] | None = None  # the last decision's command, stored
        self.before_end: Callable[[], None] | None = None  # as a hold ends: the screener reports dropped keys

    def decide(self, kind: str, command: str, *, analysis: Analysis | None = None, unsure: bool = False,
               why: str = "", operation: str = "", paths: tuple[str, ...] = ()) -> Verdict:
        info = self._info
        verdict = self._ctx.rules.rules.decide(CommandRequest(
            user=info.user, groups=info.groups, target=info.target, login=info.login, kind=kind,
            command=command, unsure=unsure, why=why, analysis=analysis, operation=operation, paths=paths,
            machine=info.machine))
        masker = self._ctx.masker
        stored = stored_command(command, masker)
        part = stored if verdict.part == command else stored_command(verdict.part, masker)
        metrics.SCREENING_DECISIONS.labels(action=verdict.action.value, rule=verdict.rule or "").inc()
        self._ctx.audit.write(CommandDecision(
            session=info.session_id, user=info.user, target=info.target,
            login=info.login, kind=kind, command=stored, operation=operation or None,
            action=verdict.action, rule=verdict.rule, part=part, unsure=verdict.unsure or None,
            why=stored_command(verdict.why, masker).text if verdict.unsure else None))
        self._decided = (command, stored)  # for the marker that follows (masking costs time at Enter)
        return verdict

    def mark(self, verdict: Verdict, command: str) -> None:
        rule = f" [{verdict.rule}]" if verdict.rule else ""
        label = MARKER_LABELS[verdict.action]
        unsure = " (unsure)" if verdict.unsure else ""
        decided, self._decided = self._decided, None
        if decided is not None and decided[0] is command:
            stored = decided[1]
        else:
            stored = stored_command(command, self._ctx.masker)
        self._io.marker(label, f"{stored}{rule}{unsure}" if label != "command" else f"{stored}{unsure}")

    async def await_approval(self, verdict: Verdict, command: str, *, screen: str, interactive: bool,
                             hint: str = CANCEL_HINT) -> tuple[bool, str]:
        """Hold until approved (True) or denied/expired/cancelled (False, why). The user is told
        on the terminal when `interactive`, on stderr otherwise. `screen` is stored as given
        (masked by the caller)."""
        store, info, io = self._ctx.approvals, self._info, self._io
        if store is None:
            return False, "approvals are not configured on this bastion"
        stored = stored_command(command, self._ctx.masker)

        def create() -> None:  # on the store's thread
            self._made = store.create(session=info.session_id, requester=info.user, target=info.target,
                                      login=info.login, command=command, rule=verdict.rule or "",
                                      approvers=verdict.approvers, approvals=verdict.approvals,
                                      timeout=verdict.timeout, screen=screen)

        self._cancelled, self._made = "", None
        self._announce = functools.partial(self._requested, verdict, stored, interactive=interactive,
                                           hint=hint)
        try:
            await store.thread.run(create)
        except Exception:
            self._announce = None  # nothing was made (a hold cancelled meanwhile is not this)
            raise
        request = self._take_made()
        if request is None:
            return False, "cancelled"  # the session ended meanwhile: it announced and cancelled the request
        notifying = (asyncio.get_running_loop().create_task(self._notify(request, interactive))
                     if self._ctx.notify is not None else None)
        seen = 0
        decisions_seen: Decisions = []
        self._wake.clear()
        store.watch(request.id, self._wake.set)  # a decision made anywhere wakes the hold at once
        try:
            while True:
                if self._cancelled:
                    self._cancel_request(self._cancelled)  # unless the session's end did already
                    return False, "cancelled"
                state, decisions = await self._read_state(store, request, decisions_seen)
                decisions_seen = decisions
                for approver, decision, identity in decisions[seen:]:
                    io.marker("approval-decision", f"{request.id} {decision} by {approver}"
                                                   + (f" ({identity})" if identity else ""))
                seen = len(decisions)
                if state is not ApprovalState.PENDING:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
                if not self._cancelled:
                    self._wake.clear()  # woken by a change: read it; Ctrl-C is read at the top
        finally:
            store.unwatch(request.id, self._wake.set)
            if self.before_end is not None:
                self.before_end()
            if notifying is not None and not notifying.done():
                notifying.cancel()
        self._request = None
        who = ", ".join(decided_by(state, decisions))
        io.marker(f"approval-{state}", f"{request.id} by {who}" if who else request.id)
        metrics.APPROVALS_DECIDED.labels(result=state.value).inc()
        self._ctx.audit.write(APPROVAL_ENDED[state](request=request.id, session=info.session_id,
                                                    by=who or None))
        if state is ApprovalState.APPROVED:
            return True, f"approved by {who}"
        return False, f"{state} by {who}" if who else state

    @staticmethod
    async def _read_state(store: ApprovalStore, request: ApprovalRequest,
                          seen: Decisions) -> tuple[ApprovalState, Decisions]:
        """The request's state and decisions. While the database does not answer, the hold
        waits (and asks again) until the request would have expired: then it has."""
        try:
            return await store.thread.run(store.state, request.id)
        except StateError:
            if time.time() > request.expires:
                return ApprovalState.EXPIRED, seen
            return ApprovalState.PENDING, seen

    def _requested(self, verdict: Verdict, stored: StoredCommand, request: ApprovalRequest, *,
                   interactive: bool, hint: str) -> None:
        """Tell the user, the recording and the log that `request` now waits for approvers."""
        info, io = self._info, self._io
        minutes = max(1, round(verdict.timeout / 60))
        # At a prompt the status goes on a line of its own; otherwise it goes to stderr.
        status = (f"bastion: waiting for approval (request {request.id}, expires in {minutes} min)"
                  f"{hint}\r\n").encode()
        if interactive:
            io.say(b"\r\n" + status)
        else:
            io.say(status, Stream.STDERR)
        io.marker("approval-requested", f"{request.id} [{verdict.rule}] {stored}")
        self._ctx.audit.write(ApprovalRequested(request=request.id, session=info.session_id, user=info.user,
                                                target=info.target, command=stored, rule=verdict.rule))

    def _take_made(self) -> ApprovalRequest | None:
        """The request just created, announced (once: by whoever takes it first); None when
        there is none to take."""
        announce, made = self._announce, self._made
        self._announce = self._made = None
        if announce is None or made is None:
            return None
        self._request = made.id
        announce(made)
        return made

    async def _notify(self, request: ApprovalRequest, interactive: bool) -> None:
        assert self._ctx.notify is not None
        info, io = self._info, self._io
        failed = await self._ctx.notify(request)
        self._ctx.audit.write(ApprovalNotified(request=request.id, session=info.session_id,
                                               failed=failed or None))
        if not failed:
            io.marker("approval-notified", request.id)
        if failed:
            io.marker("approval-notify-failed", f"{request.id}: {'; '.join(failed)}")
            line = (f"bastion: could not notify approvers ({'; '.join(failed)});"
                    f" request {request.id} still waits\r\n").encode()
            io.say(line, Stream.STDOUT if interactive else Stream.STDERR)

    def cancel(self, reason: str) -> None:
        """End a wait for approval (Ctrl-C): the request is cancelled, the waiter told at once."""
        self._cancelled = reason
        self._wake.set()

    def _cancel_request(self, reason: str) -> None:
        """The pending request can never be approved now (Ctrl-C, or the session ended).

        Waits for the store's answer: at a session's end (a synchronous callback) the marker
        must reach the recording before its stage closes."""
        store, info = self._ctx.approvals, self._info
        if store is None:
            return
        if self._announce is not None:
            # A request is being created (the hold may even have been cancelled meanwhile):
            # calls on the store run in order, so once the ones made so far ran, it exists, and
            # it is announced and then cancelled like any other.
            store.thread.drain()
            self._take_made()
        request, self._request = self._request, None
        if request is None:
            return
        if self.before_end is not None:
            self.before_end()
        if not store.thread.wait(store.cancel, request):
            return  # decided or expired a moment before: the hold reports that
        self._io.marker("approval-cancelled", f"{request} ({reason})")
        metrics.APPROVALS_DECIDED.labels(result="cancelled").inc()
        self._ctx.audit.write(ApprovalCancelled(request=request, session=info.session_id,
                                                user=info.user, reason=reason))

    def end(self) -> None:
        """The session is over: a request still waiting is cancelled."""
        self._cancel_request("session ended")
        self.cancel("session ended")
