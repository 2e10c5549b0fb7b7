"""One session's command decisions, shared by the stages that screen: each is asked of the
rules, logged (`command_decision`), marked in the recording, and, when a rule wants approval,
held until enough approvers said yes (or no, or the request expired or was cancelled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion.approvals import ApprovalRequest, ApprovalStore
from bastion.audit import AuditLog
from bastion.masker import mask_text
from bastion.pipeline import SessionInfo, SessionIO, Stream
from bastion.rules import CommandRequest, RulesHolder, Verdict

POLL = 0.25
CANCEL_HINT = " - Ctrl-C to cancel"

# Tells approvers (chat); returns what could not be reached, e.g. ["slack: HTTP 500"].
Notify = Callable[[ApprovalRequest], Awaitable[list[str]]]


@dataclass
class ScreeningContext:
    rules: RulesHolder
    approvals: ApprovalStore | None
    audit: AuditLog
    notify: Notify | None = None


MARKER_LABELS = {"allow": "command", "log": "logged", "deny": "denied", "approve": "held"}


class CommandDecisions:
    """Decides, logs and marks one session's commands, and holds them for approval."""

    def __init__(self, context: ScreeningContext, info: SessionInfo, io: SessionIO) -> None:
        self._ctx, self._info, self._io = context, info, io
        self.cancelled = False  # set to end a wait for approval (Ctrl-C, the session ending)
        self._request: str | None = None

    def decide(self, kind: str, command: str, *, unsure: bool = False, operation: str = "",
               paths: tuple[str, ...] = ()) -> Verdict:
        info = self._info
        verdict = self._ctx.rules.rules.decide(CommandRequest(
            user=info.user, groups=info.groups, target=info.target, login=info.login,
            kind=kind, command=command, unsure=unsure, operation=operation, paths=paths))
        self._ctx.audit.event(
            "command_decision", session=info.session_id, user=info.user, target=info.target,
            login=info.login, kind=kind, command=command, operation=operation or None,
            action=verdict.action, rule=verdict.rule, part=verdict.part, unsure=verdict.unsure or None)
        return verdict

    def mark(self, verdict: Verdict, command: str) -> None:
        rule = f" [{verdict.rule}]" if verdict.rule else ""
        label = MARKER_LABELS[verdict.action]
        unsure = " (unsure)" if verdict.unsure else ""
        self._io.marker(label, f"{command}{rule}{unsure}" if label != "command" else command + unsure)

    async def await_approval(self, verdict: Verdict, command: str, *, screen: str, interactive: bool,
                             hint: str = CANCEL_HINT) -> tuple[bool, str]:
        """Hold until approved (True) or denied/expired/cancelled (False, why). The user is told
        on the terminal when `interactive`, on stderr otherwise."""
        store, info, io = self._ctx.approvals, self._info, self._io
        if store is None:
            return False, "approvals are not configured on this bastion"
        request = store.create(session=info.session_id, requester=info.user, target=info.target,
                               login=info.login, command=command, rule=verdict.rule or "",
                               approvers=verdict.approvers, approvals=verdict.approvals,
                               timeout=verdict.timeout, screen=mask_text(screen) or "")
        self._request = request.id
        minutes = max(1, round(verdict.timeout / 60))
        # At a prompt the status goes on a line of its own; otherwise it goes to stderr.
        status = (f"bastion: waiting for approval (request {request.id}, expires in {minutes} min)"
                  f"{hint}\r\n").encode()
        if interactive:
            io.to_client(b"\r\n" + status)
        else:
            io.to_client(status, Stream.STDERR)
        io.marker("approval-requested", f"{request.id} [{verdict.rule}] {command}")
        self._ctx.audit.event("approval_requested", request=request.id, session=info.session_id,
                              user=info.user, target=info.target, command=command, rule=verdict.rule)
        notifying = (asyncio.get_running_loop().create_task(self._notify(request, interactive))
                     if self._ctx.notify is not None else None)
        seen = 0
        try:
            while True:
                if self.cancelled:
                    store.cancel(request.id)
                    io.marker("approval-cancelled", request.id)
                    return False, "cancelled"
                state, decisions = store.state(request.id)
                for approver, decision, identity in decisions[seen:]:
                    io.marker("approval-decision", f"{request.id} {decision} by {approver}"
                                                   + (f" ({identity})" if identity else ""))
                seen = len(decisions)
                if state != "pending":
                    break
                await asyncio.sleep(POLL)
        finally:
            if notifying is not None and not notifying.done():
                notifying.cancel()
        self._request = None
        who = ", ".join(a for a, d, _ in decisions if d == ("approve" if state == "approved" else "deny"))
        io.marker(f"approval-{state}", f"{request.id} by {who}" if who else request.id)
        self._ctx.audit.event(f"approval_{state}", request=request.id, session=info.session_id,
                              by=who or None)
        if state == "approved":
            return True, f"approved by {who}"
        return False, f"{state} by {who}" if who else state

    async def _notify(self, request: ApprovalRequest, interactive: bool) -> None:
        assert self._ctx.notify is not None
        info, io = self._info, self._io
        failed = await self._ctx.notify(request)
        self._ctx.audit.event("approval_notified", request=request.id, session=info.session_id,
                              failed=failed or None)
        if not failed:
            io.marker("approval-notified", request.id)
        if failed:
            io.marker("approval-notify-failed", f"{request.id}: {'; '.join(failed)}")
            line = (f"bastion: could not notify approvers ({'; '.join(failed)});"
                    f" request {request.id} still waits\r\n").encode()
            io.to_client(line, Stream.STDOUT if interactive else Stream.STDERR)

    def end(self) -> None:
        """The session is over: a request still waiting is cancelled."""
        self.cancelled = True
        if self._request and self._ctx.approvals is not None:
            self._ctx.approvals.cancel(self._request)
