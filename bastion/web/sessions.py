"""Who a browser is signed in as, kept in signed cookies.

Two cookies, both HttpOnly, SameSite=Lax, and Secure when the public URL is https: the
sign-in in progress (state, nonce and PKCE verifier, for ten minutes, sent to /auth/ only)
and the signed-in session (user, groups, identity and the CSRF token its forms carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bastion.web.cookies import SignedCookies, same_secret

SESSION_COOKIE = "bastion_session"
LOGIN_COOKIE = "bastion_login"
LOGIN_TTL = 600


@dataclass(frozen=True)
class SignedIn:
    """The approver a browser is signed in as."""

    user: str
    groups: tuple[str, ...]
    identity: str  # issuer#subject
    csrf: str  # the token every form of this session carries

    def payload(self) -> dict[str, Any]:
        return {"user": self.user, "groups": list(self.groups), "id": self.identity, "csrf": self.csrf}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SignedIn | None:
        user, groups, identity, csrf = (payload.get(k) for k in ("user", "groups", "id", "csrf"))
        if not (isinstance(user, str) and isinstance(identity, str) and isinstance(csrf, str)):
            return None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return None
        return cls(user, tuple(groups), identity, csrf)

    def posted(self, form: Mapping[str, Any]) -> bool:
        """Whether a form carries this session's CSRF token."""
        return same_secret(form.get("csrf"), self.csrf)


class BrowserSessions:
    def __init__(self, cookies: SignedCookies, *, secure: bool, ttl: int) -> None:
        self._cookies, self._secure, self._ttl = cookies, secure, ttl

    def who(self, request: web.Request) -> SignedIn | None:
        payload = self._cookies.loads(SESSION_COOKIE, request.cookies.get(SESSION_COOKIE))
        return SignedIn.from_payload(payload) if payload is not None else None

    def sign_in(self, response: web.StreamResponse, who: SignedIn) -> None:
        """The session starts; the sign-in that led to it is over."""
        self._set(response, SESSION_COOKIE, who.payload(), self._ttl, "/")
        response.del_cookie(LOGIN_COOKIE, path="/auth/")

    def sign_out(self, response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")

    def remember_login(self, response: web.StreamResponse, started: Mapping[str, str]) -> None:
        """What the provider's answer must match, until it comes back to /auth/callback."""
        self._set(response, LOGIN_COOKIE, started, LOGIN_TTL, "/auth/")

    def login_started(self, request: web.Request) -> dict[str, Any] | None:
        return self._cookies.loads(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE))

    def _set(self, response: web.StreamResponse, name: str, payload: Mapping[str, Any], ttl: int,
             path: str) -> None:
        response.set_cookie(name, self._cookies.dumps(name, payload, ttl), max_age=ttl, path=path,
                            httponly=True, samesite="Lax", secure=self._secure)
