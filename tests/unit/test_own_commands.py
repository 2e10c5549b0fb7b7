"""The bastion's own command lines and roles, without ssh: what is accepted, what is refused."""

from __future__ import annotations

import pytest

from bastion.core.access import Role, may_kill, may_watch, role_of
from bastion.core.owncommands import Command, Refusal, parse

SESSION = "0123456789abcdef"


@pytest.mark.parametrize(("line", "command"), [
    ("whoami", Command("whoami")),
    ("  whoami  ", Command("whoami")),
    ("sessions list", Command("sessions list")),
    ("sessions list --json --user bob --target db-1",
     Command("sessions list", options={"user": "bob", "target": "db-1"}, flags=frozenset({"json"}))),
    (f"sessions kill {SESSION}", Command("sessions kill", target=SESSION, options={"reason": ""})),
    (f"sessions kill {SESSION}.2 --reason disk is full",
     Command("sessions kill", target=f"{SESSION}.2", options={"reason": "disk is full"})),
    (f"sessions kill {SESSION} --reason 'quoted reason'",
     Command("sessions kill", target=SESSION, options={"reason": "quoted reason"})),
    ("approvals list", Command("approvals list")),
    ("review", Command("review")),
    (f"join {SESSION}", Command("join", target=SESSION)),
    (f"play {SESSION}", Command("play", target=SESSION)),
    (f"sessions follow {SESSION}.3", Command("sessions follow", target=f"{SESSION}.3")),
    ("approvals approve 7f3a1b", Command("approvals approve", target="7F3A1B")),
    ("approvals deny 7F3A1B", Command("approvals deny", target="7F3A1B")),
    ("approvals show 7F3A1B", Command("approvals show", target="7F3A1B")),
])
def test_our_commands_are_read(line: str, command: Command) -> None:
    assert parse(line) == command


@pytest.mark.parametrize(("line", "reason"), [
    (None, "no shell on the bastion"),
    ("", "no shell on the bastion"),
    ("bash", "unknown command 'bash'"),
    ("sh -c id", "unknown command 'sh -c'"),
    ("whoami; id", "character ';' is not accepted"),
    ("whoami && id", "character '&' is not accepted"),
    ("whoami | id", "character '|' is not accepted"),
    ("sessions list --user $(id)", "character '$' is not accepted"),
    ("sessions list --user `id`", "character '`' is not accepted"),
    ("whoami\nid", "character '\\n' is not accepted"),
    ("whoami > /tmp/x", "character '>' is not accepted"),
    ("sessions list --user *", "character '*' is not accepted"),
    ("whoami\x1b]0;x\x07", "character '\\x1b' is not accepted"),
    ("-c id", "unknown command '-c id'"),
    ("-- whoami", "unknown command '-- whoami'"),
    ("whoami extra", "whoami takes no argument 'extra'"),
    ("whoami '", "cannot read the command (No closing quotation)"),
    ("sessions list --user=bob", "empty words and --option=value are not accepted"),
    ("sessions list ''", "empty words and --option=value are not accepted"),
    ("sessions list --user", "sessions list: unexpected '--user'"),
    ("sessions list --user -rf", "sessions list: unexpected '--user'"),
    ("sessions kill ../../etc", "sessions kill: give a session id (see sessions list)"),
    (f"sessions kill {SESSION} now", "sessions kill: unexpected 'now'"),
    ("sessions exec id", "unknown command 'sessions exec'"),
    ("approvals approve 7F3A1B 000000", "approvals approve: give one request id (see approvals list)"),
    ("approvals approve --as=bob", "empty words and --option=value are not accepted"),
    ("approvals approve 7F3A1B2", "approvals approve: give one request id (see approvals list)"),
    ("x" * 2000, "command too long"),
    ("play /etc/passwd", "play: give one session id (see sessions list)"),
    ("play ../recordings/x.cast", "play: give one session id (see sessions list)"),
    (f"play {SESSION} --follow", "play: give one session id (see sessions list)"),
    (f"play -c /tmp/evil.toml {SESSION}", "play: give one session id (see sessions list)"),
    (f"sessions follow {SESSION.upper()}", "sessions follow: give one session id (see sessions list)"),
    ("review --only-user bob", "review takes no argument '--only-user'"),
    ("join", "join: give one session id (see sessions list)"),
])
def test_anything_else_is_refused_with_the_list_of_commands(line: str | None, reason: str) -> None:
    refusal = parse(line)
    assert isinstance(refusal, Refusal) and refusal.reason == reason
    assert refusal.line().startswith(f"bastion: {reason}; this bastion offers: whoami | sessions list")
    assert "\n" not in refusal.line()


def test_roles_come_from_groups_or_names() -> None:
    access = {"reviewers": frozenset({"sec", "carol"}), "admins": frozenset({"oncall"})}
    assert role_of("alice", frozenset({"ops"}), **access) is Role.USER
    assert role_of("sue", frozenset({"sec"}), **access) is Role.REVIEWER
    assert role_of("carol", frozenset(), **access) is Role.REVIEWER
    assert role_of("olga", frozenset({"sec", "oncall"}), **access) is Role.ADMIN
    assert may_watch(Role.USER, "alice", "alice") and not may_watch(Role.USER, "alice", "bob")
    assert may_watch(Role.REVIEWER, "sue", "bob")
    assert may_kill(Role.ADMIN) and not may_kill(Role.REVIEWER) and not may_kill(Role.USER)


def test_terminal_uis_are_bounded_per_user_and_in_all() -> None:
    from bastion.ssh.viewer import ViewerSlots

    slots = ViewerSlots(per_user=2, in_all=3)
    assert slots.take("alice") is None and slots.take("alice") is None
    assert "you have 2 terminal UIs open" in (slots.take("alice") or "")
    assert slots.take("bob") is None
    assert "the bastion runs 3 terminal UIs" in (slots.take("carol") or "")
    slots.give_back("alice")
    assert slots.take("carol") is None
    assert "the bastion runs 3" in (slots.take("alice") or "")
