"""Who may reach which target as which login. Pure: no I/O, exhaustively unit-tested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from asyncssh.saslprep import SASLPrepError, saslprep


class Target(Protocol):
    """What the policy reads of a target (the config's TargetConfig is one)."""

    @property
    def name(self) -> str: ...
    @property
    def logins(self) -> tuple[str, ...]: ...
    @property
    def groups(self) -> frozenset[str]: ...
    @property
    def users(self) -> frozenset[str]: ...


MACHINE_METHOD = "machine"


@dataclass(frozen=True)
class Identity:
    """An authenticated bastion user, however they proved it."""

    user: str
    groups: frozenset[str] = frozenset()
    method: str = "publickey"
    # A machine (a CI job, an agent) signed in with its platform's token: what the token said
    # of the job (repository, ref, run id, ...), shown wherever the session is.
    workload: tuple[tuple[str, str], ...] = ()
    allow_shell: bool = True

    @property
    def machine(self) -> bool:
        return self.method == MACHINE_METHOD


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def decide_target(identity: Identity, target: Target) -> Decision:
    """May this identity open a jump to this target at all?"""
    if identity.user in target.users:
        return Decision(True, f"user {identity.user} is listed on target {target.name}")
    shared = sorted(identity.groups & target.groups)
    if shared:
        return Decision(True, f"group {shared[0]} may reach target {target.name}")
    return Decision(False, f"{identity.user} may not reach {target.name}")


def decide_login(identity: Identity, target: Target, login: str) -> Decision:
    """May this identity log into this target as `login`? Implies `decide_target`."""
    reach = decide_target(identity, target)
    if not reach:
        return reach
    if not login:
        return Decision(False, "an empty login is never allowed")
    if login not in target.logins:
        allowed = ", ".join(target.logins) or "none"
        return Decision(False, f"login {login!r} is not allowed on {target.name} (allowed: {allowed})")
    return Decision(True, f"{reach.reason}; login {login} is allowed")


MAX_NAME_BYTES = 1024  # asyncssh drops a connection whose user name is this long or longer


def name_problem(raw: bytes) -> str | None:
    """What is wrong with a user name as the SSH client sent it (the bastion user on the outer
    connection, the login on the inner one), or None. Such names never reach a policy decision
    (asyncssh drops the connection, or, for an empty name, never starts the login): the reason
    is what the audit line says."""
    if not raw:
        return "an empty login is never allowed"
    if len(raw) >= MAX_NAME_BYTES:
        return f"name of {len(raw)} bytes is too long (under {MAX_NAME_BYTES})"
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "name is not UTF-8"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return "name contains control characters"
    try:
        saslprep(name)
    except SASLPrepError as exc:
        return f"name is refused by SASLprep ({exc})"
    return None


def printable_name(raw: bytes) -> str:
    """A user name as the audit log shows it: control characters and bytes that are not
    UTF-8 escaped, so that the line reads as one line and names what was sent."""
    return raw.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")
