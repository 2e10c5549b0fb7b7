"""Certificates and what they are for: a session certificate's spec, a fresh public key, an SSO
identity."""

from __future__ import annotations

import asyncssh

from bastion.auth.oidc import ProviderIdentity
from bastion.core.certs import session_certificate_spec


def spec(**overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"user": "alice", "target": "db-1", "login": "root", "session_id": "abc",
                                   "now": 1_000_000.0, "ttl": 120, "backdate": 30}
    args.update(overrides)
    return session_certificate_spec(**args)  # type: ignore[arg-type]


def public(key_type: str = "ssh-ed25519", **kwargs: int) -> str:
    return asyncssh.generate_private_key(key_type, **kwargs).export_public_key().decode()


def ident(sub: str, name: str, groups: tuple[str, ...] = ("ops",)) -> ProviderIdentity:
    return ProviderIdentity("https://idp.test", sub, name, frozenset(groups))
