"""The bastion -> target hop: an asyncssh client logging in with a certificate minted for it."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from dataclasses import dataclass

import asyncssh

from bastion.config import CertificateSettings, TargetConfig
from bastion.core.certs import SessionCertificateSpec, mint_session_certificate, session_certificate_spec
from bastion.errors import TargetHostKeyError, TargetUnreachable, UpstreamAuthError
from bastion.state.keys import KeyStore

# The bastion is the client on this hop, so its preferences decide: AES-GCM is several times
# faster than chacha20-poly1305 in asyncssh. No SHA-1, no CBC, no compression.
UPSTREAM_ALGORITHMS: dict[str, list[str]] = {
    "encryption_algs": [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes256-ctr",
    ],
    "mac_algs": ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"],
    "compression_algs": ["none"],
}
CONNECT_TIMEOUT = 10.0
PRINCIPALS_HINT = (
    "the target refused the session certificate: check that its TrustedUserCAKeys holds "
    "`bastion ca user-ca`, that AuthorizedPrincipalsFile (if set) lists the login, that "
    "the login exists and is not locked, and that source_address matches the bastion"
)


@dataclass
class UpstreamConnection:
    """A logged-in connection to a target and the certificate it used."""

    conn: asyncssh.SSHClientConnection
    target: TargetConfig
    login: str
    spec: SessionCertificateSpec

    def close(self) -> None:
        self.conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connection timed out"
    if isinstance(exc, socket.gaierror):
        return "name not found"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def connect_upstream(
    *,
    target: TargetConfig,
    login: str,
    user: str,
    session_id: str,
    keys: KeyStore,
    settings: CertificateSettings,
    port_forwarding: bool = False,
) -> UpstreamConnection:
    """Mint a certificate for `login` and log into `target` with it; fail closed on any doubt."""
    host_keys, host_cas = keys.trusted_target_keys(target)
    if not host_keys and not host_cas:
        raise TargetHostKeyError(
            f"no host key is pinned for {target.name}; an operator must run: "
            f"bastion targets scan {target.name}"
        )
    spec = session_certificate_spec(
        user=user,
        target=target.name,
        login=login,
        session_id=session_id,
        now=time.time(),
        ttl=settings.ttl,
        backdate=settings.backdate,
        source_address=settings.source_address,
        port_forwarding=port_forwarding,
    )
    key, cert = mint_session_certificate(keys.user_ca, spec)
    local_addr = (settings.source_address, 0) if settings.source_address else None
    try:
        conn = await asyncssh.connect(
            target.host,
            target.port,
            username=login,
            client_keys=[(key, cert)],
            known_hosts=(host_keys, host_cas, []),
            config=None,
            agent_path=None,
            preferred_auth=["publickey"],
            local_addr=local_addr,
            connect_timeout=CONNECT_TIMEOUT,
            **UPSTREAM_ALGORITHMS,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise TargetHostKeyError(
            f"host key of {target.name} does not match the pinned key ({exc.reason}); "
            f"if it changed on purpose, run: bastion targets scan {target.name}"
        ) from None
    except asyncssh.PermissionDenied:
        raise UpstreamAuthError(f"{target.name} refused login {login!r}") from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            raise TargetUnreachable(f"cannot reach {target.name}: connection refused") from None
        raise TargetUnreachable(f"cannot reach {target.name}: {_reason(exc)}") from None
    return UpstreamConnection(conn=conn, target=target, login=login, spec=spec)


async def fetch_host_key(target: TargetConfig) -> asyncssh.SSHKey:
    """The target's current host key, for an operator to pin. Trusts nothing by itself."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, target.port, config=None), CONNECT_TIMEOUT
        )
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise TargetUnreachable(f"cannot reach {target.name}: {_reason(exc)}") from None
    if key is None:
        raise TargetUnreachable(f"{target.name} sent no host key")
    return key
