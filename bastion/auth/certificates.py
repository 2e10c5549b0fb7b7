"""Login certificates presented to the bastion: every reason one is refused, decided before
asyncssh's own checks (which refuse silently), so that each refusal is audited with its reason.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import asyncssh

CERT_TYPE_USER = 1  # asyncssh.public_key.CERT_TYPE_USER (not exported)
CERT_TYPE_HOST = 2


def _when(stamp: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(stamp)


def login_certificate_refusal(cert: Any, username: str, ca: asyncssh.SSHKey, *, now: float,
                              peer_address: str | None) -> str | None:
    """Why the OpenSSH certificate `cert`, presented to log in as `username`, is refused by
    its form alone (signer, type, principal, validity, source address), or None."""
    signer = getattr(cert, "signing_key", None)
    if signer is None or signer.public_data != ca.public_data:
        return "unknown certificate authority"
    return _type_or_principal(cert, username) or _validity(cert, now) or _source(cert, peer_address)


def _type_or_principal(cert: Any, username: str) -> str | None:
    cert_type = getattr(cert, "_cert_type", None)
    if cert_type == CERT_TYPE_HOST:
        return "a host certificate cannot log in a user"
    if cert_type != CERT_TYPE_USER:
        return f"unknown certificate type {cert_type!r}"
    principals: Sequence[str] = getattr(cert, "principals", ())
    if username not in principals:
        listed = ", ".join(principals) or "none"
        return f"certificate is not for user {username} (principals: {listed})"
    return None


def _validity(cert: Any, now: float) -> str | None:
    valid_after = int(getattr(cert, "_valid_after", 0))
    valid_before = int(getattr(cert, "_valid_before", 0))
    if now < valid_after:
        return f"certificate not yet valid (valid from {_when(valid_after)})"
    if now >= valid_before:
        return f"certificate expired (at {_when(valid_before)})"
    return None


def _source(cert: Any, peer_address: str | None) -> str | None:
    options = getattr(cert, "options", None) or {}
    networks: Sequence[IPv4Network | IPv6Network] = options.get("source-address") or ()
    if not networks:
        return None
    try:
        address = ip_address(peer_address or "")
    except ValueError:
        return "certificate has a source-address and the client's address is unknown"
    if not any(address in network for network in networks):
        return f"certificate does not allow source address {address}"
    return None
