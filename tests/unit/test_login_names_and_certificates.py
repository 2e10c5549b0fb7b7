"""User names refused before any login decision, and login certificates refused by their form."""

from __future__ import annotations

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth.certificates import login_certificate_refusal
from bastion.core.policy import MAX_NAME_BYTES, name_problem, printable_name

NOW = 1_800_000_000


@pytest.mark.parametrize(("raw", "problem"), [
    (b"root", None),
    (b"deploy-user.1", None),
    (b"", "an empty login is never allowed"),
    (b"ro\x01ot", "name contains control characters"),
    (b"ro\tot", "name contains control characters"),
    (b"root\x7f", "name contains control characters"),
    (b"\xff\xfe", "name is not UTF-8"),
    (b"a" * MAX_NAME_BYTES, f"name of {MAX_NAME_BYTES} bytes is too long (under {MAX_NAME_BYTES})"),
])
def test_name_problems(raw: bytes, problem: str | None) -> None:
    assert name_problem(raw) == problem


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_a_name_asyncssh_accepts_has_no_problem_and_prints_on_one_line(raw: bytes) -> None:
    """name_problem says None exactly for names asyncssh would start a login with."""
    from asyncssh.saslprep import SASLPrepError, saslprep

    try:
        saslprep(raw.decode("utf-8"))
        accepted = bool(raw)
    except (UnicodeDecodeError, SASLPrepError):
        accepted = False
    assert (name_problem(raw) is None) == accepted
    shown = printable_name(raw)
    assert shown.isascii() and shown.isprintable()


@pytest.fixture(scope="module")
def ca() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def _cert(ca: asyncssh.SSHKey, *, host: bool = False, principals: tuple[str, ...] = ("alice",),
          after: int = NOW - 60, before: int = NOW + 600, source: str | None = None) -> object:
    key = asyncssh.generate_private_key("ssh-ed25519")
    if host:
        return ca.generate_host_certificate(key, "h", principals=list(principals),
                                            valid_after=after, valid_before=before)
    return ca.generate_user_certificate(key, "u", principals=list(principals), valid_after=after,
                                        valid_before=before, source_address=[source] if source else None)


def test_certificate_refusals_name_the_reason(ca: asyncssh.SSHKey) -> None:
    def refusal(cert: object, user: str = "alice", peer: str | None = "10.0.0.5", now: float = NOW) -> str | None:
        return login_certificate_refusal(cert, user, ca, now=now, peer_address=peer)

    assert refusal(_cert(ca)) is None
    other_ca = asyncssh.generate_private_key("ssh-ed25519")
    assert refusal(_cert(other_ca)) == "unknown certificate authority"
    assert refusal(_cert(ca, host=True)) == "a host certificate cannot log in a user"
    assert refusal(_cert(ca), user="bob") == "certificate is not for user bob (principals: alice)"
    assert refusal(_cert(ca, principals=())) == "certificate is not for user alice (principals: none)"
    assert refusal(_cert(ca, before=NOW)) == "certificate expired (at 2027-01-15T08:00:00Z)"
    assert refusal(_cert(ca, after=NOW + 1)) == "certificate not yet valid (valid from 2027-01-15T08:00:01Z)"
    assert refusal(_cert(ca, source="10.0.0.0/24")) is None
    assert refusal(_cert(ca, source="10.0.1.0/24")) == "certificate does not allow source address 10.0.0.5"
    assert refusal(_cert(ca, source="10.0.0.0/24"), peer=None) == (
        "certificate has a source-address and the client's address is unknown")
