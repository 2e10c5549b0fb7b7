"""Which bastion user an identity from the provider acts as."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from bastion.auth.oidc import ProviderIdentity
from bastion.config import UserConfig
from bastion.errors import BastionError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class SignInRefused(BastionError):
    """The provider's identity may not act as the bastion user it names."""

    code = "sign_in_refused"
    http_status = 403


def resolve_approver(identity: ProviderIdentity, users: Mapping[str, UserConfig],
                     machines: Collection[str] = ()) -> tuple[str, frozenset[str]]:
    """The bastion user an identity acts as, and its groups (the provider's and the config's).

    A config user with `oidc_subject` is that subject and no one else; a config user without
    one is whoever the provider names so (documented: bind subjects for certainty). A machine's
    name is never a person's: a machine never approves, and nobody signs in as one.
    """
    for user in users.values():
        if user.oidc_subject is not None and user.oidc_subject == identity.subject:
            break
    else:
        if identity.username in machines:
            raise SignInRefused(f"{identity.username!r} is a machine; people cannot sign in as it")
    for user in users.values():
        if user.oidc_subject is not None and user.oidc_subject == identity.subject:
            return user.name, user.groups | identity.groups
    if not _NAME.match(identity.username):
        raise SignInRefused(
            f"the provider's user name {identity.username!r} is not a valid bastion user name"
        )
    named = users.get(identity.username)
    if named is not None and named.oidc_subject is not None:
        raise SignInRefused(f"user {identity.username!r} is bound to a different identity at the provider")
    return identity.username, identity.groups | (named.groups if named else frozenset())
