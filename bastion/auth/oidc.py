"""OpenID Connect relying party: discovery, authorization code + PKCE, ID token checks.

HTTP goes through aiohttp (the web service's own stack); the protocol pieces come from
authlib (PKCE, ID token claim rules) and joserfc (JWS signatures against the provider's JWKS).
An identity is the pair (issuer, subject) — never an e-mail address — plus the claims the
bastion maps to a user name and groups.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken, IDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from bastion.config import OIDCSettings
from bastion.errors import BastionError

# Only asymmetric signatures: an ID token MAC'd with the client secret proves less.
SIGNING_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)
LEEWAY = 60
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


class OIDCError(BastionError):
    """Sign-in failed; the message says why in terms an operator can act on."""

    code = "oidc_error"
    http_status = 403  # a sign-in the provider or its tokens did not vouch for


class SignInUnavailable(OIDCError):
    """A sign-in could not even start: the provider is unreachable or its discovery is wrong."""

    code = "sign_in_unavailable"
    http_status = 502


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628: what the user opens and types, and what the client polls with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval: float

    def instructions(self) -> str:
        minutes = max(1, round((self.expires_at - time.time()) / 60))
        return f"Open {self.verification_uri} and enter {self.user_code} (expires in {minutes} min)"


@dataclass(frozen=True)
class ProviderIdentity:
    """Who signed in at the provider: bound to issuer + subject; name and groups are what the
    claims said (the bastion user it acts as: `bastion.auth.identity.resolve_approver`)."""

    issuer: str
    subject: str
    username: str
    groups: frozenset[str]
    email: str | None = None

    @property
    def key(self) -> str:
        return f"{self.issuer}#{self.subject}"


@dataclass(frozen=True)
class AuthorizationStart:
    url: str
    state: str
    nonce: str
    verifier: str


class OIDCClient:
    def __init__(self, settings: OIDCSettings) -> None:
        self.settings = settings
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http, http.get(url) as response:
                if response.status != 200:
                    raise OIDCError(f"{url}: HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OIDCError(f"{url}: {exc or type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise OIDCError(f"{url}: expected a JSON object")
        return data

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched once; its issuer must be ours exactly."""
        async with self._lock:
            if self._metadata is None:
                url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
                data = await self._get_json(url)
                if data.get("issuer") != self.settings.issuer:
                    raise OIDCError(
                        f"{url}: issuer is {data.get('issuer')!r}, the config says {self.settings.issuer!r}"
                    )
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(data.get(needed), str):
                        raise OIDCError(f"{url}: no {needed}")
                self._metadata = data
            return self._metadata

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            self._jwks = await self._get_json((await self.metadata())["jwks_uri"])
        try:
            return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise OIDCError(f"the provider's JWKS cannot be read ({exc})") from None

    async def start_authorization(self, redirect_uri: str) -> AuthorizationStart:
        """Authorization code + PKCE (S256): where to send the browser, and what to remember."""
        try:
            metadata = await self.metadata()
        except OIDCError as exc:
            raise SignInUnavailable(exc.reason) from None
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = metadata["authorization_endpoint"]
        separator = "&" if "?" in endpoint else "?"
        return AuthorizationStart(f"{endpoint}{separator}{query}", state, nonce, verifier)

    async def _post_form(self, url: str, form: Mapping[str, str], what: str) -> tuple[int, Any]:
        """POST a form with the client's credentials (HTTP Basic when it has a secret):
        (status, JSON answer)."""
        auth = (
            aiohttp.BasicAuth(self.settings.client_id, self.settings.client_secret)
            if self.settings.client_secret
            else None
        )
        try:
            async with (
                aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
                http.post(url, data={**form, "client_id": self.settings.client_id}, auth=auth) as response,
            ):
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OIDCError(f"{what}: {exc or type(exc).__name__}") from None

    async def token_request(self, form: Mapping[str, str]) -> dict[str, Any]:
        """POST to the token endpoint; the JSON answer, with "error" set when it failed."""
        metadata = await self.metadata()
        status, data = await self._post_form(metadata["token_endpoint"], form, "token endpoint")
        if not isinstance(data, dict):
            raise OIDCError("token endpoint: expected a JSON object")
        if status != 200 or "error" in data:
            data.setdefault("error", f"HTTP {status}")
        return data

    async def start_device(self) -> DeviceAuthorization:
        """Begin a device authorization grant (RFC 8628) at the provider."""
        metadata = await self.metadata()
        endpoint = metadata.get("device_authorization_endpoint")
        if not isinstance(endpoint, str):
            raise OIDCError("the provider does not offer the device authorization grant")
        form = {"scope": " ".join(self.settings.scopes)}
        status, data = await self._post_form(endpoint, form, "device authorization")
        if not isinstance(data, dict) or status != 200:
            raise OIDCError(f"device authorization: HTTP {status} {data!r:.200}")
        try:
            return DeviceAuthorization(
                device_code=str(data["device_code"]),
                user_code=str(data["user_code"]),
                verification_uri=str(data["verification_uri"]),
                verification_uri_complete=data.get("verification_uri_complete"),
                expires_at=time.time() + float(data.get("expires_in", 300)),
                interval=max(1.0, float(data.get("interval", 5))),
            )
        except (KeyError, TypeError, ValueError):
            raise OIDCError("device authorization: the provider's answer is incomplete") from None

    async def finish_device(self, device: DeviceAuthorization, *,
                            deadline: float | None = None) -> ProviderIdentity:
        """Poll until the user approved in the browser (or denied, or the code expired)."""
        tokens = await self.device_tokens(device, deadline=deadline)
        return await self.identity_from_tokens(tokens)

    async def device_tokens(
        self, device: DeviceAuthorization, *, deadline: float | None = None
    ) -> dict[str, Any]:
        end = min(device.expires_at, deadline or device.expires_at)
        interval = device.interval
        while True:
            await asyncio.sleep(interval)
            if time.time() > end:
                raise OIDCError("the sign-in code expired before it was used")
            tokens = await self.token_request(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": device.device_code,
                }
            )
            error = tokens.get("error")
            if error is None:
                return tokens
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error == "access_denied":
                raise OIDCError("the sign-in was refused at the provider")
            if error == "expired_token":
                raise OIDCError("the sign-in code expired before it was used")
            raise OIDCError(f"the provider said: {error} {tokens.get('error_description', '')}".rstrip())

    async def exchange_code(self, code: str, redirect_uri: str,
                            start: AuthorizationStart) -> ProviderIdentity:
        tokens = await self.token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": start.verifier,
            }
        )
        if "error" in tokens:
            why = f"{tokens['error']} {tokens.get('error_description', '')}".rstrip()
            raise OIDCError(f"the provider refused the code: {why}")
        return await self.identity_from_tokens(tokens, nonce=start.nonce)

    async def identity_from_tokens(
        self, tokens: Mapping[str, Any], *, nonce: str | None = None, max_age: int | None = None
    ) -> ProviderIdentity:
        """The identity in a token response: the verified ID token, completed from the userinfo
        endpoint when the provider keeps name or groups out of the ID token."""
        access_token = tokens.get("access_token")
        claims = await self.verify_id_token(
            tokens.get("id_token"),
            nonce=nonce,
            access_token=access_token if isinstance(access_token, str) else None,
            max_age=max_age,
        )
        wanted = (self.settings.username_claim, self.settings.groups_claim)
        if any(name not in claims for name in wanted) and isinstance(access_token, str):
            claims = {**(await self.userinfo(access_token, claims["sub"])), **claims}
        return self.identity(claims)

    async def userinfo(self, access_token: str, subject: str) -> dict[str, Any]:
        endpoint = (await self.metadata()).get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return {}
        headers = {"Authorization": f"Bearer {access_token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
                http.get(endpoint, headers=headers) as r,
            ):
                data = await r.json(content_type=None) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OIDCError(f"userinfo endpoint: {exc or type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise OIDCError(f"userinfo endpoint: HTTP {r.status}")
        if data.get("sub") != subject:  # OpenID Connect Core 5.3.2: must be the ID token's subject
            raise OIDCError("userinfo endpoint: answered for a different subject")
        return data

    async def verify_id_token(
        self,
        id_token: object,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        max_age: int | None = None,
    ) -> dict[str, Any]:
        """Verified ID token claims: signature (the provider's JWKS), issuer, audience, expiry, nonce.

        `max_age` additionally refuses tokens issued longer ago than that many seconds.
        """
        if not isinstance(id_token, str) or not id_token:
            raise OIDCError("no ID token")
        metadata = await self.metadata()
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        registry = JWSRegistry(algorithms=[a for a in offered if a in SIGNING_ALGORITHMS])
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(), registry=registry)
            except InvalidKeyIdError:  # the provider rotated its keys
                token = jwt.decode(id_token, await self._key_set(refresh=True), registry=registry)
        except (JoseError, ValueError) as exc:
            raise OIDCError(f"ID token signature: {exc}") from None
        params: dict[str, Any] = {"client_id": self.settings.client_id}
        if nonce is not None:
            params["nonce"] = nonce
        if access_token is not None:
            params["access_token"] = access_token
        claims_cls = CodeIDToken if access_token is not None else IDToken
        claims = claims_cls(
            token.claims, token.header, {"iss": {"essential": True, "value": self.settings.issuer}}, params
        )
        try:
            claims.validate(leeway=LEEWAY)
        except JoseError as exc:
            raise OIDCError(f"ID token: {exc}") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise OIDCError("ID token: nonce does not match the sign-in")
        if max_age is not None and time.time() - float(claims.get("iat", 0)) > max_age + LEEWAY:
            raise OIDCError("ID token: too old")
        return dict(claims)

    def map_groups(self, provider_groups: Iterable[str]) -> frozenset[str]:
        """The bastion groups for the provider's groups (as they are, without a groups_map)."""
        if self.settings.groups_map is None:
            return frozenset(provider_groups)
        mapping = dict(self.settings.groups_map)
        return frozenset(group for name in provider_groups for group in mapping.get(name, ()))

    def identity(self, claims: Mapping[str, Any]) -> ProviderIdentity:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OIDCError("ID token: no subject")
        username = claims.get(self.settings.username_claim)
        if not isinstance(username, str) or not username:
            raise OIDCError(f"ID token: no {self.settings.username_claim!r} claim to name the user")
        raw_groups = claims.get(self.settings.groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        if not isinstance(raw_groups, list):
            raise OIDCError(f"ID token: {self.settings.groups_claim!r} is not a list")
        email = claims.get("email")
        return ProviderIdentity(
            issuer=self.settings.issuer,
            subject=subject,
            username=username,
            groups=self.map_groups(g for g in raw_groups if isinstance(g, str)),
            email=email if isinstance(email, str) else None,
        )
