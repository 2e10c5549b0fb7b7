"""Who may do what with the bastion's own commands and with other people's sessions. Pure.

Roles come from the config's `[access]` lists, each naming groups or users: a reviewer may list,
watch and replay every session; an admin may do that and kill any session. Everyone may list,
watch and replay their own sessions.
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    USER = 0
    REVIEWER = 1
    ADMIN = 2


def role_of(user: str, groups: frozenset[str], *, reviewers: frozenset[str], admins: frozenset[str]) -> Role:
    """The highest role `user` (with `groups`) holds: a list names groups or user names."""
    names = groups | {user}
    if names & admins:
        return Role.ADMIN
    if names & reviewers:
        return Role.REVIEWER
    return Role.USER


def may_watch(role: Role, user: str, owner: str) -> bool:
    """Whether `user` may list, watch or replay a session of `owner`."""
    return role >= Role.REVIEWER or user == owner


def may_kill(role: Role) -> bool:
    """Whether a user of `role` may end someone's live session."""
    return role >= Role.ADMIN
