"""The bastion's web service: approval pages behind OpenID Connect sign-in.

Runs in the bastion's own process and event loop (aiohttp). A link in chat names a request by
an unguessable token but grants nothing: the page needs a signed-in identity, and only a POST
carrying the sign-in's CSRF token decides. GET never changes a request, so link previews and
mail scanners are harmless. Every view, decision and refused POST is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from bastion.auth.identity import SignInRefused, resolve_approver
from bastion.auth.login import SSO
from bastion.auth.oidc import AuthorizationStart, OIDCClient, OIDCError
from bastion.auth.sso import SSOError
from bastion.config import BastionConfig
from bastion.core.masker import TextMasker
from bastion.errors import BastionError
from bastion.state.approvals import ApprovalError, ApprovalRequest, ApprovalStore
from bastion.state.audit import AuditLog
from recorder.printable import printable

SESSION_COOKIE = "bastion_session"
LOGIN_COOKIE = "bastion_login"
LOGIN_TTL = 600
COOKIE_KEY = "web_cookie_key"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class SignedCookies:
    """JSON payloads with an expiry, HMAC-SHA256 signed: tampered or stale values read as None."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("cookie key must be at least 32 bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> SignedCookies:
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as file:
                file.write(key)
            return cls(key)

    def _sign(self, purpose: str, body: bytes) -> str:
        mac = hmac.new(self._key, purpose.encode() + b"\0" + body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def dumps(self, purpose: str, payload: Mapping[str, Any], ttl: int) -> str:
        body = base64.urlsafe_b64encode(
            json.dumps({**payload, "exp": int(time.time()) + ttl}, separators=(",", ":")).encode()
        ).rstrip(b"=")
        return f"{body.decode()}.{self._sign(purpose, body)}"

    def loads(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload if `value` was made by `dumps` for the same purpose and has not expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(purpose, body.encode())):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        return payload if payload["exp"] > time.time() else None


# -- pages -------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 62rem; padding: 0 1rem;
       color: #1f2328; }
h1 { font-size: 1.4rem; } table { border-collapse: collapse; } td, th { padding: .2rem .8rem .2rem 0;
text-align: left; vertical-align: top; } pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
pre.screen { background: #111; color: #ddd; line-height: 1.2; font-size: 13px; }
.state { padding: .1rem .5rem; border-radius: .3rem; background: #eee; }
.pending { background: #fff3bf; } .approved { background: #d3f9d8; } .denied, .expired, .cancelled
{ background: #ffe3e3; } button { font-size: 1rem; padding: .4rem 1.2rem; margin-right: .6rem; }
.approve { background: #2f9e44; color: white; border: 0; } .deny { background: #e03131; color: white;
border: 0; } .note { color: #555; } header { display: flex; justify-content: space-between; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _lines(text: str) -> str:
    """Session text (a command, a screen) line by line with what is unsafe to show escaped, as
    the player and the CLI show it: a right-to-left override or a control character must not
    rearrange what the approver reads."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


class _SSOEndpoints:
    """`bastion login`'s side of the web service: JSON in, JSON out."""

    sso: SSO | None
    audit: AuditLog

    def _sso_ready(self) -> SSO:
        if self.sso is None or self.sso.cli is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "single sign-on is not configured"}),
                                   content_type="application/json")
        return self.sso

    async def sso_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._sso_ready().client_settings())

    async def sso_certificate(self, request: web.Request) -> web.Response:
        sso = self._sso_ready()
        # JSON only: a cross-site form cannot send it without the browser asking us first.
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        tokens = {k: body[k] for k in ("id_token", "access_token") if isinstance(body.get(k), str)}
        try:
            answer = await sso.certify(tokens, body.get("public_key", ""), str(request.remote))
        except SSOError as exc:
            status = 429 if "too many" in str(exc) else 403
            return web.json_response({"error": str(exc)}, status=status)
        return web.json_response(answer)

    async def sso_krl(self, request: web.Request) -> web.Response:
        sso = self._sso_ready()
        try:
            data = sso.krl_path.read_bytes()
        except OSError:
            return web.json_response({"error": "no revocation list yet"}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")


class WebService(_SSOEndpoints):
    """The aiohttp application and its listener; start() and stop() run on the bastion's loop."""

    def __init__(
        self,
        config: BastionConfig,
        store: ApprovalStore,
        audit: AuditLog,
        cookies: SignedCookies,
        oidc: OIDCClient | None,
        *,
        masker: TextMasker,
        sso: SSO | None = None,
    ) -> None:
        assert config.web is not None
        self.config, self.settings = config, config.web
        self.masker = masker  # the command on a request's page
        self.store, self.audit, self.cookies, self.oidc, self.sso = store, audit, cookies, oidc, sso
        self.secure = self.settings.public_url.startswith("https://")
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/approvals/{token}", self.show_request),
                web.post("/approvals/{token}", self.decide),
                web.get("/auth/login", self.login),
                web.get("/auth/callback", self.callback),
                web.post("/auth/logout", self.logout),
                web.get("/sso/config", self.sso_config),
                web.post("/sso/certificate", self.sso_certificate),
                web.get("/sso/krl", self.sso_krl),
            ]
        )

    def link(self, request: ApprovalRequest) -> str:
        return f"{self.settings.public_url}/approvals/{request.token}"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        context = None
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise BastionError(f"web service: cannot load tls_cert/tls_key ({exc})") from None
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.listen_host,
            self.settings.listen_port,
            ssl_context=context,
            reuse_address=True,
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BastionError(
                f"web service: cannot listen on {self.settings.listen_host}:"
                f"{self.settings.listen_port}: {exc.strerror or exc}"
            ) from None
        self.audit.event(
            "web_started",
            listen=f"{self.settings.listen_host}:{self.port}",
            url=self.settings.public_url,
            sign_in=self.oidc.settings.issuer if self.oidc else None,
        )

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- plumbing ---------------------------------------------------------------------------------

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        # Pages set their own policy (it names their style nonce); everything else gets none.
        response.headers.setdefault("Content-Security-Policy", _csp("none"))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Links carry tokens, so no referrer leaves the site ("no-referrer" would make Origin "null").
        response.headers["Referrer-Policy"] = "same-origin"
        if self.secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    def _page(
        self,
        request: web.Request,
        title: str,
        body: str,
        *,
        status: int = 200,
        who: dict[str, Any] | None = None,
    ) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        header = ""
        if who is not None:
            header = (
                f'<form method="post" action="/auth/logout"><span class="note">Signed in as '
                f"<b>{_e(who['user'])}</b> ({_e(', '.join(who['groups']) or 'no groups')})</span> "
                f'<input type="hidden" name="csrf" value="{_e(who["csrf"])}">'
                f'<button type="submit">Sign out</button></form>'
            )
        text = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex"><style nonce="{nonce}">{STYLE}</style></head>'
            f"<body><header><b>SSH bastion</b>{header}</header>{body}</body></html>"
        )
        response = web.Response(text=text, content_type="text/html", status=status)
        response.headers["Content-Security-Policy"] = _csp(nonce)
        return response

    def _session(self, request: web.Request) -> dict[str, Any] | None:
        return self.cookies.loads(SESSION_COOKIE, request.cookies.get(SESSION_COOKIE))

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str, ttl: int, path: str) -> None:
        response.set_cookie(
            name, value, max_age=ttl, path=path, httponly=True, samesite="Lax", secure=self.secure
        )

    def _refuse(self, request: web.Request, status: int, reason: str, **fields: Any) -> web.Response:
        self.audit.event(
            "web_request_refused",
            method=request.method,
            path=request.path,
            reason=reason,
            client=request.remote,
            **fields,
        )
        return self._page(request, "Refused", f"<h1>Refused</h1><p>{_e(reason)}</p>", status=status)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # -- approval pages ---------------------------------------------------------------------------

    async def show_request(self, request: web.Request) -> web.Response:
        approval = self.store.by_token(request.match_info["token"])
        if approval is None:
            return self._page(
                request,
                "Not found",
                "<h1>No such request</h1><p>The link is wrong or the request was removed.</p>",
                status=404,
            )
        who = self._session(request)
        if who is None:
            sign_in = f"/auth/login?next={quote(request.path, safe='')}"
            body = (
                f"<h1>Approval request {_e(approval.id)}</h1><p>Sign in to see this request and decide.</p>"
                f'<p><a href="{_e(sign_in)}">Sign in</a></p>'
                if self.oidc
                else "<h1>Sign-in is not configured</h1><p>Decide with <code>bastion approvals</code>.</p>"
            )
            return self._page(request, f"Request {approval.id}", body)
        state, decisions = self.store.state(approval.id)
        self.audit.event(
            "approval_viewed", request=approval.id, by=who["user"], identity=who["id"], state=state
        )
        return self._page(
            request, f"Request {approval.id}", self._request_body(approval, state, decisions, who), who=who
        )

    def _request_body(
        self,
        approval: ApprovalRequest,
        state: str,
        decisions: list[tuple[str, str, str | None]],
        who: dict[str, Any],
        message: str = "",
    ) -> str:
        now = time.time()
        approvals = sum(1 for _, d, _ in decisions if d == "approve")
        rows = [
            ("User", approval.requester),
            ("Target", approval.target),
            ("Login", approval.login),
            ("Rule", approval.rule or "-"),
            ("Requested", f"{_age(now - approval.created)} ago"),
            ("Approvals", f"{approvals} of {approval.approvals_needed} from {', '.join(approval.approvers)}"),
        ]
        if state == "pending":
            rows.append(("Expires in", _age(approval.expires - now)))
        table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
        decided = "".join(f"<li>{_e(a)}: {_e(d)}</li>" for a, d, _ in decisions)
        why_not = self._why_not(approval, state, decisions, who)
        if state == "pending" and not why_not:
            actions = (
                f'<form method="post"><input type="hidden" name="csrf" value="{_e(who["csrf"])}">'
                f'<input type="hidden" name="command_hash" value="{_e(approval.command_hash)}">'
                f'<button class="approve" name="decision" value="approve" type="submit">Approve</button>'
                f'<button class="deny" name="decision" value="deny" type="submit">Deny</button></form>'
            )
        else:
            actions = f'<p class="note">{_e(why_not)}</p>' if why_not else ""
        notice = f"<p><b>{_e(message)}</b></p>" if message else ""
        explain = {"cancelled": " (the session ended or the user cancelled)"}.get(state, "")
        return (
            f'<h1>Approval request {_e(approval.id)} <span class="state {_e(state)}">{_e(state)}</span></h1>'
            f'{notice}<p class="note">{_e(explain)}</p><table>{table}</table>'
            f"<h2>Command</h2><pre>{_e(_lines(self.masker.mask(approval.command)))}</pre>"
            "<h2>Screen when submitted</h2>"
            f'<pre class="screen">{_e(_lines(approval.screen) or "(no terminal)")}</pre>'
            f"{'<h2>Decisions</h2><ul>' + decided + '</ul>' if decided else ''}{actions}"
        )

    def _why_not(
        self,
        approval: ApprovalRequest,
        state: str,
        decisions: list[tuple[str, str, str | None]],
        who: dict[str, Any],
    ) -> str:
        if state != "pending":
            by = ", ".join(
                a for a, d, _ in decisions if d == {"approved": "approve", "denied": "deny"}.get(state)
            )
            return f"This request was {state}" + (f" by {by}." if by else ".")
        if who["user"] == approval.requester:
            return "You cannot approve your own request."
        if not set(who["groups"]) & set(approval.approvers):
            return f"Only members of {', '.join(approval.approvers)} can decide."
        if any(a == who["user"] for a, _, _ in decisions):
            return "You have already decided on this request."
        return ""

    def _form_problem(
        self, request: web.Request, form: Mapping[str, Any], who: dict[str, Any]
    ) -> tuple[int, str] | None:
        """Why a decision POST is refused (status, reason), or None when it is well-formed."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != _origin(self.settings.public_url):
            return 403, f"the form came from another site ({origin})"
        csrf = form.get("csrf")
        if not isinstance(csrf, str) or not hmac.compare_digest(csrf, who["csrf"]):
            return 403, "the form's token is missing or wrong (reload the page)"
        if form.get("decision") not in ("approve", "deny") or not isinstance(form.get("command_hash"), str):
            return 400, "the form is incomplete"
        return None

    async def decide(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        approval = self.store.by_token(token)
        if approval is None:
            return self._refuse(request, 404, "no such request")
        who = self._session(request)
        if who is None:
            return self._refuse(request, 403, "sign in first", request_id=approval.id)
        form = await request.post()
        problem = self._form_problem(request, form, who)
        if problem is not None:
            status, reason = problem
            return self._refuse(request, status, reason, request_id=approval.id, by=who["user"])
        decision, digest = str(form["decision"]), str(form["command_hash"])
        try:
            state = self.store.decide(
                approval.id,
                who["user"],
                decision,
                groups=frozenset(who["groups"]),
                digest=digest,
                identity=who["id"],
            )
        except ApprovalError as exc:
            self.audit.event(
                "approval_decision_refused",
                request=approval.id,
                by=who["user"],
                identity=who["id"],
                decision=decision,
                reason=str(exc),
                client=request.remote,
            )
            state, decisions = self.store.state(approval.id)
            body = self._request_body(approval, state, decisions, who, message=str(exc))
            return self._page(request, f"Request {approval.id}", body, status=409, who=who)
        self.audit.event(
            "approval_decision",
            request=approval.id,
            by=who["user"],
            identity=who["id"],
            decision=decision,
            state=state,
            client=request.remote,
        )
        state, decisions = self.store.state(approval.id)
        message = {"approve": "You approved this request.", "deny": "You denied this request."}[decision]
        return self._page(
            request,
            f"Request {approval.id}",
            self._request_body(approval, state, decisions, who, message=message),
            who=who,
        )

    # -- sign-in ------------------------------------------------------------------------------------

    def _redirect_uri(self) -> str:
        return f"{self.settings.public_url}/auth/callback"

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.oidc is None:
            return self._refuse(request, 404, "sign-in is not configured on this bastion")
        next_path = request.query.get("next", "/")
        if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
            next_path = "/"
        try:
            start = await self.oidc.start_authorization(self._redirect_uri())
        except OIDCError as exc:
            self.audit.event("web_sign_in_failed", reason=str(exc))
            return self._page(
                request, "Sign-in unavailable", f"<h1>Sign-in unavailable</h1><p>{_e(exc)}</p>", status=502
            )
        response = _redirect(start.url)
        remembered = {
            "state": start.state,
            "nonce": start.nonce,
            "verifier": start.verifier,
            "next": next_path,
        }
        self._set_cookie(
            response,
            LOGIN_COOKIE,
            self.cookies.dumps(LOGIN_COOKIE, remembered, LOGIN_TTL),
            LOGIN_TTL,
            "/auth/",
        )
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if self.oidc is None:
            return self._refuse(request, 404, "sign-in is not configured on this bastion")
        remembered = self.cookies.loads(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE))
        state, code = request.query.get("state", ""), request.query.get("code", "")
        if remembered is None or not hmac.compare_digest(state, str(remembered.get("state", ""))):
            return self._refuse(
                request, 400, "this sign-in was not started here, or took too long; start again"
            )
        if "error" in request.query:
            reason = (
                f"the provider said: {request.query['error']} {request.query.get('error_description', '')}"
            )
            self.audit.event("web_sign_in_failed", reason=reason.strip())
            return self._page(
                request, "Sign-in failed", f"<h1>Sign-in failed</h1><p>{_e(reason)}</p>", status=403
            )
        start = AuthorizationStart("", remembered["state"], remembered["nonce"], remembered["verifier"])
        try:
            identity = await self.oidc.exchange_code(code, self._redirect_uri(), start)
            user, groups = resolve_approver(identity, self.config.users)
        except (OIDCError, SignInRefused) as exc:
            self.audit.event("web_sign_in_failed", reason=str(exc), client=request.remote)
            return self._page(
                request, "Sign-in failed", f"<h1>Sign-in failed</h1><p>{_e(exc)}</p>", status=403
            )
        session = {
            "user": user,
            "groups": sorted(groups),
            "id": identity.key,
            "csrf": secrets.token_urlsafe(24),
        }
        self.audit.event(
            "web_signed_in", user=user, identity=identity.key, groups=sorted(groups), client=request.remote
        )
        response = _redirect(remembered.get("next") or "/")
        ttl = self.settings.session_ttl
        self._set_cookie(response, SESSION_COOKIE, self.cookies.dumps(SESSION_COOKIE, session, ttl), ttl, "/")
        response.del_cookie(LOGIN_COOKIE, path="/auth/")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        who = self._session(request)
        form = await request.post()
        csrf = form.get("csrf")
        if who is None or not isinstance(csrf, str) or not hmac.compare_digest(csrf, who["csrf"]):
            return self._refuse(request, 403, "not signed in, or the form's token is wrong")
        self.audit.event("web_signed_out", user=who["user"], identity=who["id"])
        response = self._page(request, "Signed out", "<h1>Signed out</h1>")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response


def _csp(style_nonce: str) -> str:
    """No scripts, no frames, forms only to ourselves; styles only from the page's own tag."""
    return (f"default-src 'none'; style-src 'nonce-{style_nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
