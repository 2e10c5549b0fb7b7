"""Machines (CI jobs, agents) sign in with their platform's OIDC token: the bastion verifies
it against the issuer's published keys, matches it to one `[[machines]]` entry on its verified
claims, spends it (each token is exchanged once) and issues a short-lived login certificate.

Verification: the issuer is one a machine names; its discovery document and JWKS are fetched
from it (the document's issuer must be it exactly); only asymmetric signatures are accepted
(`none` and HMAC never: a public key used as an HMAC secret proves nothing); `exp`, `iat`
(both required), `nbf`, the audience and the token's age are checked in `bastion.core.workload`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from bastion.auth.directory import Directory, SSOError, certificate_serial
from bastion.auth.oidc import HTTP_TIMEOUT, SIGNING_ALGORITHMS
from bastion.config import BastionConfig
from bastion.core.policy import MACHINE_METHOD, Identity
from bastion.core.workload import TokenRefused, Workload, match_machine, shown
from bastion.state.audit import AuditLog
from bastion.state.events import MachineCertificateIssued, MachineTokenRefused
from bastion.state.keys import KeyStore, known_hosts_lines, public_line

MAX_TOKEN_LENGTH = 16 * 1024
JWKS_REFRESH_EVERY = 60.0  # an unknown key id refetches the JWKS at most this often
# After the issuer could not be read, exchanges are refused at once for this long: a flood of
# tokens naming an issuer that is down must not queue behind its timeouts.
RETRY_ISSUER_AFTER = 10.0


class TokenRefusedError(SSOError):
    """The exchange refused the token; the message is the audited reason."""

    code = "token_refused"


class IssuerUnavailable(SSOError):
    """The issuer's discovery document or keys could not be read: nobody can be verified."""

    code = "issuer_unavailable"
    http_status = 502


class IssuerKeys:
    """One issuer's discovery document and signing keys, fetched from it and cached."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._jwks_uri: str | None = None
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._failed: tuple[float, str] | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http, http.get(url) as response:
                if response.status != 200:
                    raise IssuerUnavailable(f"{url}: HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IssuerUnavailable(f"{url}: {exc or type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise IssuerUnavailable(f"{url}: expected a JSON object")
        return data

    async def key_set(self, *, unknown_kid: bool = False) -> KeySet:
        if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_ISSUER_AFTER:
            raise IssuerUnavailable(self._failed[1])
        async with self._lock:
            try:
                return await self._key_set(unknown_kid)
            except IssuerUnavailable as exc:
                self._failed = (time.monotonic(), exc.reason)
                raise

    async def _key_set(self, unknown_kid: bool) -> KeySet:
        if self._jwks_uri is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            metadata = await self._get_json(url)
            if metadata.get("issuer") != self.issuer:
                said = metadata.get("issuer")
                raise IssuerUnavailable(f"{url}: issuer is {said!r}, not {self.issuer!r}")
            if not isinstance(metadata.get("jwks_uri"), str):
                raise IssuerUnavailable(f"{url}: no jwks_uri")
            self._jwks_uri = metadata["jwks_uri"]
        now = time.monotonic()
        if self._keys is not None and not (unknown_kid and now - self._fetched > JWKS_REFRESH_EVERY):
            return self._keys
        self._fetched = now
        try:
            data = await self._get_json(self._jwks_uri)
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise IssuerUnavailable(f"{self.issuer}: its JWKS cannot be read ({exc})") from None
        except IssuerUnavailable:
            if self._keys is not None:  # a refresh for an unknown key id failed: the known keys stay
                return self._keys
            raise
        self._keys = keys
        return keys


def unverified_issuer(token: str) -> str:
    """The `iss` a compact JWS says it is from: only to know whose keys verify it."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenRefused("not a signed JWT (expected three dot-separated parts)")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        raise TokenRefused("the token's payload is not base64url JSON") from None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise TokenRefused("the token names no issuer")
    return issuer


def token_key(workload: Workload, token: str) -> str:
    """What marks a token as spent: issuer and jti, or the token's hash when it has no jti."""
    if workload.token_id is not None:
        return f"{workload.issuer}#jti:{workload.token_id}"
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class Machines:
    """The exchange (the web service's /machines/token) and, at the SSH edge, who a machine's
    login certificate is. Runs on the bastion's loop; the directory on its own thread."""

    def __init__(self, config: BastionConfig, keys: KeyStore, directory: Directory, audit: AuditLog) -> None:
        self.config, self.keys, self.directory, self.audit = config, keys, directory, audit
        self.issuers = {m.issuer: IssuerKeys(m.issuer) for m in config.machines.values()}

    async def verify(self, token: str, requested: str | None) -> Workload:
        """The machine a token is, from its verified claims (TokenRefused says why not)."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRefused(f"the token is longer than {MAX_TOKEN_LENGTH} bytes")
        issuer = unverified_issuer(token)
        keys = self.issuers.get(issuer)
        if keys is None:
            raise TokenRefused(f"no machine takes tokens from issuer {shown(issuer)}")
        registry = JWSRegistry(algorithms=list(SIGNING_ALGORITHMS))
        try:
            try:
                verified = jwt.decode(token, await keys.key_set(), registry=registry)
            except InvalidKeyIdError:  # the issuer may have rotated its keys
                verified = jwt.decode(token, await keys.key_set(unknown_kid=True), registry=registry)
        except (JoseError, ValueError) as exc:
            raise TokenRefused(f"signature: {exc}") from None
        claims = verified.claims
        if claims.get("iss") != issuer:
            raise TokenRefused("the token's issuer changed under its signature")
        machines = list(self.config.machines.values())
        return match_machine(machines, claims, now=time.time(), requested=requested)

    async def exchange(self, token: object, public_key: object, client: str,
                       requested: object = None) -> dict[str, Any]:
        """A login certificate for the machine `token` proves, for `public_key`."""
        if not isinstance(token, str) or not token:
            return self._refused(client, "no token")
        if requested is not None and not isinstance(requested, str):
            return self._refused(client, "machine must be a string")
        try:
            workload = await self.verify(token, requested)
        except TokenRefused as exc:
            return self._refused(client, str(exc))
        except IssuerUnavailable as exc:
            self.audit.write(MachineTokenRefused(client=client, reason=str(exc)))
            raise
        machine = self.config.machines[workload.machine]
        try:
            issued = await self.directory.thread.run(
                self.directory.exchange, self.keys.login_ca,
                public_key if isinstance(public_key, str) else "",
                machine=machine.name, identity=workload.identity, token=token_key(workload, token),
                token_expires=workload.expires, workload=dict(workload.claims), ttl=machine.certificate_ttl,
            )
        except SSOError as exc:
            self.audit.write(MachineTokenRefused(client=client, reason=str(exc), machine=machine.name,
                                                 identity=workload.identity, workload=dict(workload.claims)))
            raise
        self.audit.write(MachineCertificateIssued(
            machine=machine.name, identity=workload.identity, serial=issued.serial, key_id=issued.key_id,
            expires=issued.valid_before, client=client, groups=sorted(machine.groups),
            workload=dict(workload.claims),
        ))
        return {
            "user": machine.name,
            "machine": True,
            "groups": sorted(machine.groups),
            "certificate": issued.certificate.export_certificate().decode().strip(),
            "serial": issued.serial,
            "valid_before": issued.valid_before,
            "workload": dict(workload.claims),
            **self.client_settings(),
        }

    def _refused(self, client: str, reason: str) -> dict[str, Any]:
        self.audit.write(MachineTokenRefused(client=client, reason=reason))
        raise TokenRefusedError(reason)

    def client_settings(self) -> dict[str, Any]:
        """How to reach and trust the bastion: its address and the known_hosts lines."""
        config = self.config
        host = config.names[0] if config.names else config.listen_host
        if not config.names and host in ("0.0.0.0", "::") and config.web is not None:  # noqa: S104 - compared, not bound
            # Listening everywhere: jobs reach it by the name they reached the web service by.
            host = urlsplit(config.web.public_url).hostname or host
        hosts = [host if config.listen_port == 22 else f"[{host}]:{config.listen_port}"]
        return {
            "bastion": {"host": host, "port": config.listen_port},
            "known_hosts": known_hosts_lines(self.keys, list(config.targets.values()), hosts),
            "login_ca": public_line(self.keys.login_ca.convert_to_public()),
        }

    async def identity(self, username: str, cert: object) -> Identity | str | None:
        """For a login certificate presented as `username`: the machine's identity, None when
        the certificate is not a machine's, or why a machine's certificate is refused."""
        grant = await self.directory.thread.run(self.directory.machine_grant, certificate_serial(cert))
        if grant is None:
            if username in self.config.machines:
                return "certificate was not issued to this machine by a token exchange"
            return None
        name, workload = grant
        machine = self.config.machines.get(name)
        if name != username:
            return "certificate was issued to another machine"
        if machine is None:
            return f"machine {name} is no longer configured"
        return Identity(user=name, groups=machine.groups, method=MACHINE_METHOD,
                        workload=tuple(sorted(workload.items())), allow_shell=machine.allow_shell)
