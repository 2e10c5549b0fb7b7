"""The approval pages: /approvals/{token}.

A link in chat names a request by an unguessable token but grants nothing: the page needs a
signed-in approver, and only a POST carrying the session's CSRF token, from our own origin,
for the exact command shown, decides. GET never changes a request, so link previews and mail
scanners are harmless. Views, decisions and refused decisions are audited.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from bastion.core.masker import TextMasker
from bastion.state.approvals import (
    ApprovalError,
    ApprovalRequest,
    ApprovalState,
    ApprovalStore,
    Decision,
    Decisions,
    decided_by,
)
from bastion.state.audit import AuditLog
from bastion.state.events import ApprovalDecision, ApprovalDecisionRefused, ApprovalViewed
from bastion.web import pages
from bastion.web.sessions import BrowserSessions, SignedIn

DONE = {Decision.APPROVE: "You approved this request.", Decision.DENY: "You denied this request."}


class ApprovalPages:
    def __init__(self, store: ApprovalStore, sessions: BrowserSessions, refuse: pages.Refusals,
                 audit: AuditLog, *, masker: TextMasker, public_url: str, sign_in: bool) -> None:
        self.store, self.sessions, self.refuse, self.audit = store, sessions, refuse, audit
        self.masker = masker  # the command on a request's page
        self.public_url, self.sign_in = public_url, sign_in

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/approvals/{token}", self.show), web.post("/approvals/{token}", self.decide)]

    def link(self, request: ApprovalRequest) -> str:
        return f"{self.public_url}/approvals/{request.token}"

    async def show(self, request: web.Request) -> web.Response:
        approval = await self.store.thread.run(self.store.by_token, request.match_info["token"])
        if approval is None:
            return pages.message("Not found", "No such request",
                                 "The link is wrong or the request was removed.", status=404)
        who = self.sessions.who(request)
        if who is None:
            sign_in = f"/auth/login?next={quote(request.path, safe='')}" if self.sign_in else ""
            return pages.page("sign_in.html", title=f"Request {approval.id}", request_id=approval.id,
                              sign_in=sign_in)
        state, decisions = await self.store.thread.run(self.store.state, approval.id)
        self.audit.write(ApprovalViewed(request=approval.id, by=who.user, identity=who.identity, state=state))
        return self._page(approval, state, decisions, who)

    async def decide(self, request: web.Request) -> web.Response:
        approval = await self.store.thread.run(self.store.by_token, request.match_info["token"])
        if approval is None:
            return self.refuse(request, 404, "no such request")
        who = self.sessions.who(request)
        if who is None:
            return self.refuse(request, 403, "sign in first", request_id=approval.id)
        form = await request.post()
        problem = self._form_problem(request, form, who)
        if problem is not None:
            status, reason = problem
            return self.refuse(request, status, reason, request_id=approval.id, by=who.user)
        decision, digest = Decision(str(form["decision"])), str(form["command_hash"])
        try:
            state = await self.store.thread.run(
                self.store.decide, approval.id, who.user, decision, groups=frozenset(who.groups),
                digest=digest, identity=who.identity,
            )
        except ApprovalError as exc:
            self.audit.write(ApprovalDecisionRefused(
                request=approval.id, by=who.user, identity=who.identity,
                decision=decision, reason=str(exc), client=request.remote,
            ))
            state, decisions = await self.store.thread.run(self.store.state, approval.id)
            return self._page(approval, state, decisions, who, notice=str(exc), status=exc.http_status)
        self.audit.write(ApprovalDecision(
            request=approval.id, by=who.user, identity=who.identity,
            decision=decision, state=state, client=request.remote,
        ))
        state, decisions = await self.store.thread.run(self.store.state, approval.id)
        return self._page(approval, state, decisions, who, notice=DONE[decision])

    def _form_problem(self, request: web.Request, form: Mapping[str, Any],
                      who: SignedIn) -> tuple[int, str] | None:
        """Why a decision POST is refused (status, reason), or None when it is well-formed."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != _origin(self.public_url):
            return 403, f"the form came from another site ({origin})"
        if not who.posted(form):
            return 403, "the form's token is missing or wrong (reload the page)"
        if form.get("decision") not in tuple(Decision) or not isinstance(form.get("command_hash"), str):
            return 400, "the form is incomplete"
        return None

    def _page(self, approval: ApprovalRequest, state: ApprovalState, decisions: Decisions, who: SignedIn, *,
              notice: str = "", status: int = 200) -> web.Response:
        now = time.time()
        approvals = sum(1 for _, d, _ in decisions if d is Decision.APPROVE)
        rows = [
            ("User", approval.requester),
            ("Target", approval.target),
            ("Login", approval.login),
            ("Rule", approval.rule or "-"),
            ("Requested", f"{_age(now - approval.created)} ago"),
            ("Approvals", f"{approvals} of {approval.approvals_needed} from {', '.join(approval.approvers)}"),
        ]
        if state is ApprovalState.PENDING:
            rows.append(("Expires in", _age(approval.expires - now)))
        why_not = _why_not(approval, state, decisions, who)
        form = None
        if state is ApprovalState.PENDING and not why_not:
            form = {"csrf": who.csrf, "command_hash": approval.command_hash}
        return pages.page(
            "request.html",
            title=f"Request {approval.id}",
            status=status,
            who=who,
            request_id=approval.id,
            state=state,
            notice=notice,
            explain=" (the session ended or the user cancelled)" if state is ApprovalState.CANCELLED else "",
            rows=rows,
            command=pages.session_text(self.masker.mask(approval.command)),
            screen=pages.session_text(approval.screen) or "(no terminal)",
            decisions=[(approver, decision) for approver, decision, _ in decisions],
            form=form,
            why_not=why_not,
        )


def _why_not(approval: ApprovalRequest, state: ApprovalState, decisions: Decisions, who: SignedIn) -> str:
    """Why this approver cannot decide now, or "" when they can."""
    if state is not ApprovalState.PENDING:
        by = ", ".join(decided_by(state, decisions))
        return f"This request was {state}" + (f" by {by}." if by else ".")
    if who.user == approval.requester:
        return "You cannot approve your own request."
    if not set(who.groups) & set(approval.approvers):
        return f"Only members of {', '.join(approval.approvers)} can decide."
    if any(a == who.user for a, _, _ in decisions):
        return "You have already decided on this request."
    return ""


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
