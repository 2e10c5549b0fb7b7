"""Per-session upstream credentials: the parameters are pure, minting is one call."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncssh


@dataclass(frozen=True)
class SessionCertificateSpec:
    """Everything a session certificate says, decided before any key exists."""

    principal: str
    key_id: str
    serial: int
    valid_after: int
    valid_before: int
    source_address: tuple[str, ...] = ()
    permit_pty: bool = True
    permit_port_forwarding: bool = False
    permit_agent_forwarding: bool = False


def new_session_id() -> str:
    """A short, unguessable session id that reads well in logs and key ids."""
    return secrets.token_hex(8)


def session_certificate_spec(
    *,
    user: str,
    target: str,
    login: str,
    session_id: str,
    now: float,
    ttl: int,
    backdate: int,
    source_address: str | None = None,
    port_forwarding: bool = False,
    agent_forwarding: bool = False,
) -> SessionCertificateSpec:
    """The certificate for one inner connection: principal is exactly `login`, never empty."""
    if not login:
        raise ValueError("a session certificate needs a login")
    if ttl <= 0:
        raise ValueError("a session certificate needs a positive lifetime")
    start = int(now)
    return SessionCertificateSpec(
        principal=login,
        key_id=f"bastion user={user} target={target} login={login} session={session_id}",
        serial=secrets.randbits(63) | 1,
        valid_after=start - backdate,
        valid_before=start + ttl,
        source_address=(source_address,) if source_address else (),
        permit_port_forwarding=port_forwarding,
        permit_agent_forwarding=agent_forwarding,
    )


def mint_session_certificate(
    user_ca: asyncssh.SSHKey, spec: SessionCertificateSpec
) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    """A fresh ed25519 key and its certificate, signed by the bastion's user CA."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    cert = user_ca.generate_user_certificate(
        key,
        key_id=spec.key_id,
        serial=spec.serial,
        principals=[spec.principal],
        valid_after=spec.valid_after,
        valid_before=spec.valid_before,
        source_address=list(spec.source_address) or None,
        permit_x11_forwarding=False,
        permit_agent_forwarding=spec.permit_agent_forwarding,
        permit_port_forwarding=spec.permit_port_forwarding,
        permit_pty=spec.permit_pty,
        permit_user_rc=False,
    )
    return key, cert
