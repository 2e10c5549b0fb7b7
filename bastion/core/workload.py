"""Workload identities (CI jobs, agents): which configured machine a verified token is, and
whether its times and audience hold. Pure: the claims and the clock come in, a decision goes
out; the signature is checked before (bastion.auth.machines).

A machine is matched on the token's verified claims, never on a name the token chooses: its
issuer, an audience it was minted for, and every claim the config pins to a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LEEWAY = 60  # seconds of clock skew tolerated on exp, nbf and iat
# What the header, the index and the audit log show of a workload, when the token has it:
# GitHub Actions, GitLab CI, Kubernetes and generic names.
WORKLOAD_CLAIMS = (
    "repository", "ref", "sha", "workflow", "run_id", "run_attempt", "environment", "actor",
    "project_path", "pipeline_id", "job_id", "user_login",
    "sub", "jti",
)
MAX_CLAIM_TEXT = 256  # longest value of a workload claim kept (the rest is cut)


def shown(value: object) -> str:
    """A token's value in a refusal: repr'd and bounded (the token is the caller's to fill)."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class Machine(Protocol):
    """What matching reads of a configured machine (the config's MachineConfig is one)."""

    @property
    def name(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def claims(self) -> tuple[tuple[str, tuple[str | int | bool, ...]], ...]: ...
    @property
    def max_token_age(self) -> int: ...


class TokenRefused(Exception):
    """A token that does not sign anyone in; the message is the audited reason."""


@dataclass(frozen=True)
class Workload:
    """A machine a verified token was matched to, and what the token said about the job."""

    machine: str
    issuer: str
    subject: str
    expires: int
    token_id: str | None  # the token's jti, when it has one
    claims: tuple[tuple[str, str], ...]  # WORKLOAD_CLAIMS present in the token, as text

    @property
    def identity(self) -> str:
        return f"{self.issuer}#{self.subject}"


def check_times(claims: Mapping[str, Any], *, now: float, max_age: int) -> None:
    """exp, iat (both required), nbf, and the token's age against `max_age` seconds."""
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    for name, value in (("exp", exp), ("iat", iat)):
        if value is None:
            raise TokenRefused(f"the token has no {name}")
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TokenRefused(f"the token's {name} is not a number")
    assert isinstance(exp, (int, float))
    assert isinstance(iat, (int, float))
    if exp < now - LEEWAY:
        raise TokenRefused("the token has expired")
    if nbf is not None and nbf > now + LEEWAY:
        raise TokenRefused("the token is not valid yet (nbf)")
    if iat > now + LEEWAY:
        raise TokenRefused("the token was issued in the future (iat)")
    if now - iat > max_age + LEEWAY:
        raise TokenRefused(f"the token is too old (issued {int(now - iat)} s ago, at most {max_age} s)")


def audiences(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return tuple(aud)
    return ()


def _claim_matches(value: object, accepted: Sequence[str | int | bool]) -> bool:
    # Exact types: the claim "true" is not the boolean true, 1 is not True.
    return any(type(value) is type(want) and value == want for want in accepted)


def refusal(machine: Machine, claims: Mapping[str, Any]) -> str | None:
    """Why `claims` (verified, from `machine.issuer`) are not this machine, or None."""
    if machine.audience not in audiences(claims):
        return f"audience {shown(list(audiences(claims)))} is not {machine.audience!r}"
    for name, accepted in machine.claims:
        if name not in claims:
            return f"the token has no {name!r} claim"
        if not _claim_matches(claims[name], accepted):
            return f"claim {name!r} is {shown(claims[name])}, not {_shown(accepted)}"
    return None


def _shown(accepted: Sequence[str | int | bool]) -> str:
    return repr(accepted[0]) if len(accepted) == 1 else f"one of {list(accepted)!r}"


def match_machine(machines: Sequence[Machine], claims: Mapping[str, Any], *, now: float,
                  requested: str | None = None) -> Workload:
    """The one machine these verified claims are; `requested` narrows the choice (it never
    widens it: the named machine must match like any other)."""
    issuer = claims.get("iss")
    candidates = [m for m in machines if m.issuer == issuer]
    if requested is not None:
        candidates = [m for m in candidates if m.name == requested]
        if not candidates:
            raise TokenRefused(f"no machine {shown(requested)} takes tokens from {shown(issuer)}")
    if not candidates:
        raise TokenRefused(f"no machine takes tokens from issuer {shown(issuer)}")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRefused("the token has no subject")
    reasons, matched = [], []
    for machine in candidates:
        why = refusal(machine, claims)
        if why is None:
            matched.append(machine)
        else:
            reasons.append(f"{machine.name}: {why}")
    if not matched:
        raise TokenRefused("; ".join(reasons))
    if len(matched) > 1:
        names = ", ".join(m.name for m in matched)
        raise TokenRefused(f"the token matches several machines ({names}): name one (--machine)")
    machine = matched[0]
    check_times(claims, now=now, max_age=machine.max_token_age)
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not jti):
        raise TokenRefused("the token's jti is not a string")
    exp = claims["exp"]
    return Workload(
        machine=machine.name,
        issuer=str(issuer),
        subject=subject,
        expires=int(exp),
        token_id=jti,
        claims=workload_claims(claims),
    )


def workload_claims(claims: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The informative claims present (WORKLOAD_CLAIMS), as bounded text."""
    shown = []
    for name in WORKLOAD_CLAIMS:
        value = claims.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            shown.append((name, str(value)[:MAX_CLAIM_TEXT]))
        elif isinstance(value, bool):
            shown.append((name, "true" if value else "false"))
    return tuple(shown)
