"""The bastion's web service: approval pages behind OpenID Connect sign-in, and the SSO
endpoints `bastion login` uses.

Runs in the bastion's own process and event loop (aiohttp). This module wires the parts
together and sets the headers every response carries:

- `approvals`: the approval pages (show, decide);
- `signin`: the OpenID Connect sign-in of approvers;
- `ssoapi`: `bastion login`'s JSON endpoints;
- `machineapi`: machines exchange their platform's token for a login certificate;
- `sessions` and `cookies`: who a browser is signed in as, in signed cookies;
- `pages`: HTML from the templates (autoescaped), refusals.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from bastion.auth.machines import Machines
from bastion.auth.oidc import OIDCClient
from bastion.auth.sso import SSO
from bastion.config import BastionConfig
from bastion.core.masker import TextMasker
from bastion.errors import BastionError
from bastion.state.approvals import ApprovalRequest, ApprovalStore
from bastion.state.audit import AuditLog
from bastion.state.events import WebStarted
from bastion.web import pages
from bastion.web.approvals import ApprovalPages
from bastion.web.cookies import COOKIE_KEY, SignedCookies
from bastion.web.machineapi import MachineEndpoints
from bastion.web.sessions import SESSION_COOKIE, BrowserSessions
from bastion.web.signin import SignIn
from bastion.web.ssoapi import SSOEndpoints

__all__ = ["COOKIE_KEY", "SESSION_COOKIE", "SignedCookies", "WebService"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebService:
    """The aiohttp application and its listener; start() and stop() run on the bastion's loop."""

    name = "web"

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
        machines: Machines | None = None,
    ) -> None:
        assert config.web is not None
        self.settings, self.audit, self.oidc = config.web, audit, oidc
        self._file = str(config.path or "config")
        public_url = self.settings.public_url
        self.secure = public_url.startswith("https://")
        sessions = BrowserSessions(cookies, secure=self.secure, ttl=self.settings.session_ttl)
        refuse = pages.Refusals(audit)
        self.approvals = ApprovalPages(store, sessions, refuse, audit, masker=masker, public_url=public_url,
                                       sign_in=oidc is not None)
        sign_in = SignIn(oidc, sessions, refuse, audit, users=config.users, public_url=public_url,
                         machines=frozenset(config.machines))
        self._runner: web.AppRunner | None = None
        self._shared = config.workers > 1  # every worker process listens on the same port
        self.app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        self.app.add_routes([
            web.get("/healthz", self.healthz),
            *self.approvals.routes(),
            *sign_in.routes(),
            *SSOEndpoints(sso).routes(),
            *MachineEndpoints(machines).routes(),
        ])

    def link(self, request: ApprovalRequest) -> str:
        return self.approvals.link(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        context = None
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise BastionError(f"{self._file}: [web] tls_cert/tls_key: cannot load them ({exc})"
                                   ) from None
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.listen_host,
            self.settings.listen_port,
            ssl_context=context,
            reuse_address=True,
            reuse_port=self._shared,
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BastionError(
                f"{self._file}: [web] listen = \"{self.settings.listen_host}:{self.settings.listen_port}\": "
                f"the web service cannot listen there: {exc.strerror or exc}"
            ) from None
        self.audit.write(WebStarted(
            listen=f"{self.settings.listen_host}:{self.port}",
            url=self.settings.public_url,
            sign_in=self.oidc.settings.issuer if self.oidc else None,
        ))

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def address(self) -> str:
        """Where the pages are served (public_url says where users reach them)."""
        host = self.settings.listen_host
        scheme = "https" if self.settings.tls_cert else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- every response ---------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        # Pages set their own policy (it names their style nonce); everything else gets none.
        response.headers.setdefault("Content-Security-Policy", pages.csp("none"))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Links carry tokens, so no referrer leaves the site ("no-referrer" would make Origin "null").
        response.headers["Referrer-Policy"] = "same-origin"
        if self.secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response
