from __future__ import annotations

import pytest

from bastion.config import TargetConfig
from bastion.core.policy import Identity, decide_login, decide_target

DB = TargetConfig(name="db-1", host="h", port=22, logins=("root", "deploy"),
                  groups=frozenset({"ops", "dba"}), users=frozenset({"carol"}))


@pytest.mark.parametrize(
    ("identity", "allowed"),
    [
        (Identity("alice", frozenset({"ops"})), True),
        (Identity("dan", frozenset({"dev", "dba"})), True),
        (Identity("carol"), True),
        (Identity("bob", frozenset({"dev"})), False),
        (Identity("eve"), False),
        (Identity("ops"), False),  # a user named like a group is not in it
    ],
)
def test_decide_target(identity: Identity, allowed: bool) -> None:
    assert bool(decide_target(identity, DB)) is allowed


@pytest.mark.parametrize(
    ("identity", "login", "allowed", "why"),
    [
        (Identity("alice", frozenset({"ops"})), "root", True, "login root is allowed"),
        (Identity("alice", frozenset({"ops"})), "deploy", True, "allowed"),
        (Identity("alice", frozenset({"ops"})), "postgres", False, "'postgres' is not allowed on db-1"),
        (Identity("alice", frozenset({"ops"})), "", False, "empty login"),
        (Identity("alice", frozenset({"ops"})), "Root", False, "not allowed"),
        (Identity("bob", frozenset({"dev"})), "root", False, "bob may not reach db-1"),
    ],
)
def test_decide_login(identity: Identity, login: str, allowed: bool, why: str) -> None:
    decision = decide_login(identity, DB, login)
    assert decision.allowed is allowed
    assert why in decision.reason


def test_target_without_logins_allows_none() -> None:
    target = TargetConfig(name="t", host="h", port=22, groups=frozenset({"ops"}))
    decision = decide_login(Identity("alice", frozenset({"ops"})), target, "root")
    assert not decision and "allowed: none" in decision.reason
