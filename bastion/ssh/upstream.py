"""The bastion -> target hop: an asyncssh client logging in with a certificate minted for it."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import time
from dataclasses import dataclass

import asyncssh

from bastion.config import AlgorithmSettings, CertificateSettings, TargetConfig
from bastion.core.certs import SessionCertificateSpec, mint_session_certificate, session_certificate_spec
from bastion.errors import TargetHostKeyError, TargetUnreachable, UpstreamAuthError
from bastion.ssh.transport import FairTCPConnector
from bastion.state.keys import KeyStore

CONNECT_TIMEOUT = 10.0
# A burst of sessions can trip the target sshd's own MaxStartups, which drops the connections
# over it (reset, or closed before the SSH handshake): those are retried with backoff for as
# long as the caller allows, up to DROPPED_RETRY_FOR (a burst clears in seconds; a port that
# is not an sshd and hangs up at once says so then). A refused TCP connection is retried only
# REFUSED_RETRY_FOR (an sshd restarting), so a target that is down says so quickly. Auth and
# host key failures never are.
REFUSED_RETRY_FOR = 2.0
DROPPED_RETRY_FOR = 15.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0
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
    attempts: int = 1

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


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED


def _transient(exc: BaseException, elapsed: float) -> bool:
    """Worth another attempt: the target dropped the connection before login, or (briefly)
    refused it. Never a timeout, an unknown name, an auth or a host key failure."""
    if _refused(exc):
        return elapsed < REFUSED_RETRY_FOR
    dropped = isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError))
    return dropped and elapsed < DROPPED_RETRY_FOR


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): doubling up to
    BACKOFF_MAX, half of it random so that a burst of sessions does not retry in step."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - spreading retries, not a secret


async def connect_upstream(
    *,
    target: TargetConfig,
    login: str,
    user: str,
    session_id: str,
    keys: KeyStore,
    settings: CertificateSettings,
    port_forwarding: bool = False,
    algorithms: AlgorithmSettings = AlgorithmSettings(),  # noqa: B008 - frozen, shared on purpose
    retry_for: float = 0.0,
    reads_as: object = None,
) -> UpstreamConnection:
    """Mint a certificate for `login` and log into `target` with it; fail closed on any doubt.
    Transient failures are tried again, with backoff, for up to `retry_for` seconds."""
    host_keys, host_cas = keys.trusted_target_keys(target)
    if not host_keys and not host_cas:
        raise TargetHostKeyError(
            f"no host key is pinned for {target.name}; an operator must run: "
            f"bastion targets scan {target.name}"
        )
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + retry_for
    attempt = 0
    while True:
        attempt += 1
        timeout = CONNECT_TIMEOUT if attempt == 1 else max(0.5, min(CONNECT_TIMEOUT, deadline - loop.time()))
        try:
            return await _log_in(target=target, login=login, user=user, session_id=session_id,
                                 known_hosts=(host_keys, host_cas, []), user_ca=keys.user_ca,
                                 settings=settings, port_forwarding=port_forwarding, algorithms=algorithms,
                                 connect_timeout=timeout, attempt=attempt, reads_as=reads_as)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TargetHostKeyError(
                f"host key of {target.name} does not match the pinned key ({exc.reason}); "
                f"if it changed on purpose, run: bastion targets scan {target.name}"
            ) from None
        except asyncssh.PermissionDenied:
            raise UpstreamAuthError(f"{target.name} refused login {login!r}") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            delay = backoff(attempt)
            if _transient(exc, loop.time() - start) and loop.time() + delay < deadline:
                await asyncio.sleep(delay)
                continue
            reason = "connection refused" if _refused(exc) else _reason(exc)
            tried = f" ({attempt} attempts)" if attempt > 1 else ""
            raise TargetUnreachable(f"cannot reach {target.name}: {reason}{tried}") from None


async def _log_in(
    *,
    target: TargetConfig,
    login: str,
    user: str,
    session_id: str,
    known_hosts: tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]],
    user_ca: asyncssh.SSHKey,
    settings: CertificateSettings,
    port_forwarding: bool,
    algorithms: AlgorithmSettings,
    connect_timeout: float,
    attempt: int,
    reads_as: object,
) -> UpstreamConnection:
    """One attempt, with a certificate minted for it (valid from now: retries may take longer
    than a short certificate lives)."""
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
    key, cert = mint_session_certificate(user_ca, spec)
    local_addr = (settings.source_address, 0) if settings.source_address else None
    conn = await asyncssh.connect(
        target.host,
        target.port,
        username=login,
        client_keys=[(key, cert)],
        known_hosts=known_hosts,
        config=None,
        agent_path=None,
        preferred_auth=["publickey"],
        tunnel=FairTCPConnector(local_addr, owner=reads_as),
        connect_timeout=connect_timeout,
        **algorithms.client_options(),
    )
    return UpstreamConnection(conn=conn, target=target, login=login, spec=spec, attempts=attempt)


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
