"""Approvers sign in with OpenID Connect: /auth/login, /auth/callback, /auth/logout.

Authorization code flow with PKCE (S256). What the provider's answer must match (state,
nonce, verifier) waits in a signed cookie sent to /auth/ only; the callback checks the state
before anything else. The identity then maps to a bastion user and groups, and the browser
gets a signed session with a fresh CSRF token. Signing out takes a POST with that token.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping

from aiohttp import web

from bastion.auth.identity import SignInRefused, resolve_approver
from bastion.auth.oidc import AuthorizationStart, OIDCClient, OIDCError
from bastion.config import UserConfig
from bastion.state.audit import AuditLog
from bastion.state.events import WebSignedIn, WebSignedOut, WebSignInFailed
from bastion.web import pages
from bastion.web.cookies import same_secret
from bastion.web.sessions import BrowserSessions, SignedIn

NOT_CONFIGURED = "sign-in is not configured on this bastion"


class SignIn:
    def __init__(self, oidc: OIDCClient | None, sessions: BrowserSessions, refuse: pages.Refusals,
                 audit: AuditLog, *, users: Mapping[str, UserConfig], public_url: str,
                 machines: Collection[str] = ()) -> None:
        self.oidc, self.sessions, self.refuse, self.audit = oidc, sessions, refuse, audit
        self.users, self.machines = users, machines
        self.redirect_uri = f"{public_url}/auth/callback"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/auth/login", self.login),
            web.get("/auth/callback", self.callback),
            web.post("/auth/logout", self.logout),
        ]

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.oidc is None:
            return self.refuse(request, 404, NOT_CONFIGURED)
        next_path = request.query.get("next", "/")
        if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
            next_path = "/"  # only back to a page of ours
        try:
            start = await self.oidc.start_authorization(self.redirect_uri)
        except OIDCError as exc:
            # The provider cannot be reached or read (SignInUnavailable): a gateway failure.
            self.audit.write(WebSignInFailed(reason=str(exc)))
            return pages.message("Sign-in unavailable", "Sign-in unavailable", str(exc),
                                 status=exc.http_status)
        response = pages.redirect(start.url)
        remembered = {"state": start.state, "nonce": start.nonce, "verifier": start.verifier,
                      "next": next_path}
        self.sessions.remember_login(response, remembered)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if self.oidc is None:
            return self.refuse(request, 404, NOT_CONFIGURED)
        started = self.sessions.login_started(request)
        if started is None or not same_secret(request.query.get("state", ""), str(started.get("state", ""))):
            return self.refuse(request, 400,
                               "this sign-in was not started here, or took too long; start again")
        if "error" in request.query:
            said = f"{request.query['error']} {request.query.get('error_description', '')}"
            reason = f"the provider said: {said}"
            self.audit.write(WebSignInFailed(reason=reason.strip()))
            return pages.message("Sign-in failed", "Sign-in failed", reason, status=403)
        start = AuthorizationStart("", started["state"], started["nonce"], started["verifier"])
        try:
            identity = await self.oidc.exchange_code(request.query.get("code", ""), self.redirect_uri, start)
            user, groups = resolve_approver(identity, self.users, self.machines)
        except (OIDCError, SignInRefused) as exc:
            self.audit.write(WebSignInFailed(reason=str(exc), client=request.remote))
            return pages.message("Sign-in failed", "Sign-in failed", str(exc), status=exc.http_status)
        who = SignedIn(user, tuple(sorted(groups)), identity.key, secrets.token_urlsafe(24))
        self.audit.write(WebSignedIn(user=user, identity=identity.key, groups=sorted(groups),
                                     client=request.remote))
        response = pages.redirect(started.get("next") or "/")
        self.sessions.sign_in(response, who)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        who = self.sessions.who(request)
        form = await request.post()
        if who is None or not who.posted(form):
            return self.refuse(request, 403, "not signed in, or the form's token is wrong")
        self.audit.write(WebSignedOut(user=who.user, identity=who.identity))
        response = pages.message("Signed out", "Signed out")
        self.sessions.sign_out(response)
        return response
