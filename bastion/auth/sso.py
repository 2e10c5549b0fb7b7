"""Single sign-on for SSH users, the bastion's side: the device-code prompt inside ssh, the
certificate endpoint behind `bastion login`, who a login certificate belongs to, and
revocation reaching live sessions.

Everything here runs on the bastion's event loop; the directory's SQLite calls go to its
own thread (`Directory.thread`), so a slow query delays only the sign-in that waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncssh

from bastion import metrics
from bastion.auth.directory import (
    Directory,
    IssuedCertificate,
    SSOError,
    certificate_serial,
    krl_path,
    write_krl,
)
from bastion.auth.oidc import DeviceAuthorization, OIDCClient, OIDCError, ProviderIdentity
from bastion.config import BastionConfig
from bastion.state.audit import AuditLog
from bastion.state.db import StateError
from bastion.state.events import (
    CertificateIssued,
    CertificateRefused,
    SSOLogin,
    SSOLoginAbandoned,
    SSOLoginFailed,
)
from bastion.state.keys import KeyStore, known_hosts_lines, public_line

ID_TOKEN_MAX_AGE = 600  # the certificate endpoint takes only ID tokens issued this recently
REVOCATION_POLL = 1.0


class SSO:
    def __init__(self, config: BastionConfig, keys: KeyStore, directory: Directory, audit: AuditLog) -> None:
        self.config, self.keys, self.directory, self.audit = config, keys, directory, audit
        self._revoked = asyncio.Event()  # a revocation was announced (PostgreSQL NOTIFY): look now
        oidc = config.oidc
        self.device = OIDCClient(oidc) if oidc is not None and oidc.device_login else None
        # `bastion login` runs the device flow itself as a public client: its ID tokens are
        # for that client id, without the bastion's secret.
        self.cli = (
            OIDCClient(replace(oidc, client_id=oidc.cli_client_id or oidc.client_id, client_secret=None))
            if oidc is not None
            else None
        )

    @property
    def krl_path(self) -> Path:
        return krl_path(self.config.state_db)

    # -- inside ssh: keyboard-interactive with a device code ----------------------------------------

    async def start_device(self) -> DeviceAuthorization:
        assert self.device is not None
        return await self.device.start_device()

    async def finish_device(
        self, device: DeviceAuthorization, username: str, client: str
    ) -> tuple[str, frozenset[str]]:
        """Wait for the browser sign-in; the user it maps to must be the SSH user name."""
        assert self.device is not None
        deadline = time.time() + self.config.login_timeout
        try:
            identity = await self.device.finish_device(device, deadline=deadline)
            directory = self.directory
            user, groups = await directory.thread.run(directory.sign_in, identity, self.config.users,
                                                     self.config.machines)
        except (OIDCError, SSOError) as exc:
            self.audit.write(SSOLoginFailed(user=username, client=client, reason=str(exc)))
            raise SSOError(str(exc)) from None
        except asyncio.CancelledError:
            # The client went away with the code still open: the connection's end stops the wait.
            self.audit.write(SSOLoginAbandoned(user=username, client=client, user_code=device.user_code))
            raise
        if user != username:
            reason = f"signed in as {user}, but ssh asked for {username}"
            self.audit.write(SSOLoginFailed(user=username, client=client, reason=reason,
                                            identity=identity.key))
            raise SSOError(reason)
        self.audit.write(SSOLogin(user=user, client=client, identity=identity.key, groups=sorted(groups)))
        return user, groups

    # -- login certificates --------------------------------------------------------------------------

    async def revoked(self, username: str) -> bool:
        return await self.directory.thread.run(self.directory.revoked, username)

    async def certificate_refusal(self, username: str, cert: asyncssh.SSHCertificate | None) -> str | None:
        """Why a login certificate presented by `username` is not accepted, or None."""
        if cert is None:
            return "no certificate"
        return await self.directory.thread.run(
            self.directory.certificate_allowed, username, certificate_serial(cert), cert.key.get_fingerprint()
        )

    async def groups(self, username: str) -> frozenset[str]:
        """Config groups plus the provider's groups at the user's last sign-in."""
        user = self.config.users.get(username)
        sso = await self.directory.thread.run(self.directory.sso_user, username)
        return (user.groups if user else frozenset()) | (sso.groups if sso else frozenset())

    async def certify(self, tokens: dict[str, Any], public_key: str, client: str) -> dict[str, Any]:
        """The certificate endpoint: a fresh ID token of a known identity, and a public key."""
        if self.cli is None:
            raise SSOError("single sign-on is not configured on this bastion")
        try:
            identity: ProviderIdentity = await self.cli.identity_from_tokens(tokens, max_age=ID_TOKEN_MAX_AGE)
        except OIDCError as exc:
            metrics.CERTIFICATES_REFUSED.inc()
            self.audit.write(CertificateRefused(client=client, reason=str(exc)))
            raise SSOError(str(exc)) from None
        ttl = self.config.oidc.certificate_ttl if self.config.oidc else 8 * 3600

        def sign_in_and_issue() -> tuple[str, frozenset[str], IssuedCertificate]:
            user, groups = self.directory.sign_in(identity, self.config.users, self.config.machines)
            issued = self.directory.issue(
                self.keys.login_ca, public_key, user=user, identity=identity.key, ttl=ttl
            )
            return user, groups, issued

        try:
            user, groups, issued = await self.directory.thread.run(sign_in_and_issue)
        except SSOError as exc:
            metrics.CERTIFICATES_REFUSED.inc()
            self.audit.write(CertificateRefused(client=client, identity=identity.key, reason=str(exc)))
            raise
        metrics.CERTIFICATES_ISSUED.labels(kind="login").inc()
        self.audit.write(CertificateIssued(
            user=user,
            identity=identity.key,
            serial=issued.serial,
            key_id=issued.key_id,
            expires=issued.valid_before,
            client=client,
            groups=sorted(groups),
        ))
        return {
            "user": user,
            "groups": sorted(groups),
            "certificate": issued.certificate.export_certificate().decode().strip(),
            "serial": issued.serial,
            "valid_before": issued.valid_before,
            "identity": identity.key,
        }

    def client_settings(self) -> dict[str, Any]:
        """What `bastion login` needs to know: the provider, and how to reach and trust us."""
        assert self.cli is not None
        settings = self.cli.settings
        host = self.config.names[0] if self.config.names else self.config.listen_host
        hosts = [host if self.config.listen_port == 22 else f"[{host}]:{self.config.listen_port}"]
        return {
            "issuer": settings.issuer,
            "client_id": settings.client_id,
            "scopes": list(settings.scopes),
            "bastion": {"host": host, "port": self.config.listen_port},
            "known_hosts": known_hosts_lines(self.keys, list(self.config.targets.values()), hosts),
            "login_ca": public_line(self.keys.login_ca.convert_to_public()),
        }

    # -- revocation ------------------------------------------------------------------------------------

    def revoke(self, user: str, by: str) -> list[int]:
        serials = self.directory.revoke(user, by)
        self.publish_krl()
        return serials

    def publish_krl(self) -> None:
        write_krl(self.krl_path, self.keys.login_ca.convert_to_public(), self.directory.revoked_serials())

    async def prepare(self) -> None:
        """At start-up: the revocation list is published (ssh-keygen)."""
        await self.directory.thread.run(self.publish_krl)

    def poke(self) -> None:
        """A revocation was announced by another process: check at once."""
        self._revoked.set()

    async def watch_revocations(self, end_user: Any) -> None:
        """Every second, or at once when announced: users revoked (by the CLI, another
        instance) lose their live sessions here. A database out of reach skips a round."""
        while True:
            self._revoked.clear()
            try:
                revoked = await self.directory.thread.run(self.directory.revoked_users)
            except StateError:
                revoked = []
            for user in revoked:
                end_user(user)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._revoked.wait(), REVOCATION_POLL)
