"""The moderation stage with a stand-in registry: it waits for a moderator, pauses input when the
last one leaves, resumes when one is back, and gives up after the timeout."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bastion.config import TargetConfig, load_config
from bastion.core.rules import ModerationNeed, parse_rules
from bastion.errors import ConfigError
from bastion.rules_file import load_rules
from bastion.stages.moderation import ModerationStage, need_from
from tests.support.stages import SHELL, MarkedSession

VAULT = TargetConfig(name="db-1", host="10.0.0.9", port=22, moderated_by=frozenset({"sec"}), moderator_timeout=60)


class Session(MarkedSession):
    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.ended: str | None = None

    def hold_input(self, reason: str) -> None:
        self.held.add(reason)

    def release_input(self, reason: str) -> None:
        self.held.discard(reason)

    def end(self, reason: str) -> None:
        self.ended = reason


async def settle(probe, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        if probe():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


def test_a_session_to_an_unmoderated_target_does_not_wait() -> None:
    async def nobody(session: str) -> tuple[str, ...]:
        raise AssertionError("the registry is not asked")

    stage = ModerationStage(nobody, need_from({"db-1": replace(VAULT, moderated_by=frozenset())}))
    assert asyncio.run(stage.gate(SHELL, Session())) is None


def test_waits_for_a_moderator_then_pauses_input_while_none_watches() -> None:
    present: list[tuple[str, ...]] = [()]

    async def moderators(session: str) -> tuple[str, ...]:
        assert session == SHELL.session_id
        return present[0]

    async def scenario() -> Session:
        io = Session()
        stage = ModerationStage(moderators, need_from({"db-1": VAULT}))
        gate = asyncio.create_task(stage.gate(SHELL, io))
        await settle(lambda: io.client, "the waiting line")
        assert b"waiting for a moderator from sec (session s1)" in io.client[0]
        assert not gate.done()
        present[0] = ("sue",)
        assert await gate is None
        assert io.markers == ["moderator-joined: sue"]
        present[0] = ()
        await settle(lambda: "moderator" in io.held, "input paused")
        assert io.markers[-1] == "moderator-left: sue"
        present[0] = ("bob",)
        await settle(lambda: not io.held, "input resumed")
        assert io.markers[-1] == "moderator-joined: bob"
        stage.on_end(0, None)
        return io

    io = asyncio.run(scenario())
    assert io.ended is None


def test_no_moderator_within_the_timeout_refuses_the_session() -> None:
    async def nobody(session: str) -> tuple[str, ...]:
        return ()

    stage = ModerationStage(nobody, need_from({"db-1": replace(VAULT, moderator_timeout=0)}))
    refusal = asyncio.run(stage.gate(SHELL, Session()))
    assert refusal == "bastion: no moderator from sec joined within 0 s"


def test_ctrl_c_while_waiting_gives_up_and_nothing_starts() -> None:
    async def nobody(session: str) -> tuple[str, ...]:
        return ()

    async def scenario() -> tuple[str | None, Session]:
        io = Session()
        stage = ModerationStage(nobody, need_from({"db-1": VAULT}))
        gate = asyncio.create_task(stage.gate(SHELL, io))
        await settle(lambda: io.watcher is not None, "the wait reads what is typed")
        assert b"Ctrl-C to cancel" in io.client[0]
        assert io.watcher is not None
        io.watcher(b"ls -l")  # typed ahead: kept, no effect on the wait
        assert not gate.done()
        io.watcher(b"\x03")
        refusal = await gate
        return refusal, io

    refusal, io = asyncio.run(scenario())
    assert refusal == "bastion: you stopped waiting for a moderator (session s1); nothing reached db-1"
    assert io.watcher is None  # the wait no longer reads input


def test_ctrl_c_while_the_registry_answers_a_moderator_is_there_still_cancels() -> None:
    """A moderator joining at the very moment the user gives up: the user's word comes first."""
    io = Session()

    async def joined_as_ctrl_c(session: str) -> tuple[str, ...]:
        assert io.watcher is not None
        io.watcher(b"\x03")  # typed while the registry was being asked
        return ("sue",)

    stage = ModerationStage(joined_as_ctrl_c, need_from({"db-1": VAULT}))
    refusal = asyncio.run(stage.gate(SHELL, io))
    assert refusal is not None and "you stopped waiting" in refusal
    assert io.markers == []  # the moderator never counted as watching


def test_without_a_terminal_the_wait_reads_no_input() -> None:
    present: list[tuple[str, ...]] = [()]
    io = Session()
    exec_session = replace(SHELL, term_type=None)

    async def moderators(session: str) -> tuple[str, ...]:
        assert io.watcher is None  # a 0x03 byte of a data stream is no Ctrl-C
        seen, present[0] = present[0], ("sue",)
        return seen

    stage = ModerationStage(moderators, need_from({"db-1": VAULT}))
    assert asyncio.run(stage.gate(exec_session, io)) is None
    assert b"Ctrl-C" not in io.client[0]
    stage.on_end(0, None)


def test_a_session_the_registry_cannot_record_does_not_start() -> None:
    async def never(session: str) -> tuple[str, ...]:
        raise AssertionError("nobody could have joined")

    async def unrecorded(session: str, names: frozenset[str]) -> bool:
        return False

    io = Session()
    stage = ModerationStage(never, need_from({"db-1": VAULT}), require=unrecorded)
    refusal = asyncio.run(stage.gate(SHELL, io))
    assert refusal is not None and "cannot record this one" in refusal and io.client == []


def test_the_moderators_are_told_and_a_failed_message_is_said() -> None:
    told: list[tuple[str, frozenset[str], int]] = []

    async def notify(info, need):  # type: ignore[no-untyped-def]
        told.append((info.session_id, need.moderated_by, need.timeout))
        return ["chat: HTTP 500"]

    calls = [0]

    async def later(session: str) -> tuple[str, ...]:
        calls[0] += 1
        return ("sue",) if calls[0] > 8 else ()

    io = Session()
    stage = ModerationStage(later, need_from({"db-1": VAULT}), notify=notify)
    assert asyncio.run(stage.gate(SHELL, io)) is None
    stage.on_end(0, None)
    assert told == [("s1", frozenset({"sec"}), 60)]
    assert any(b"the moderators could not be told in chat (chat: HTTP 500); ask one to join" in line
               for line in io.client)


def test_rules_file_scopes_add_moderators_and_the_shortest_timeout_applies() -> None:
    scopes = parse_rules({"moderation": [
        {"name": "prod-root", "targets": ["db-*"], "logins": ["root"], "moderated_by": ["dba"], "timeout": "2m"},
        {"name": "contractors", "groups": ["contractors"], "moderated_by": ["sec"], "timeout": "10m"},
    ]}).moderations
    need = need_from({"db-1": replace(VAULT, moderated_by=frozenset())}, lambda: scopes)
    assert need(SHELL) == ModerationNeed(frozenset({"dba"}), 120, ("prod-root",))
    assert need(replace(SHELL, login="deploy")) is None
    contractor = replace(SHELL, groups=frozenset({"contractors"}))
    assert need(contractor) == ModerationNeed(frozenset({"dba", "sec"}), 120, ("prod-root", "contractors"))
    with_target = need_from({"db-1": VAULT}, lambda: scopes)
    assert with_target(replace(SHELL, login="deploy")) == ModerationNeed(frozenset({"sec"}), 60, ("target",))


@pytest.mark.parametrize(("scope", "error"), [
    ({"targets": ["db-*"]}, "needs moderated_by"),
    ({"moderated_by": "sec"}, "expected a non-empty list of group or user names, got 'sec'"),
    ({"moderated_by": []}, "expected a non-empty list"),
    ({"moderated_by": ["sec ops"]}, "'sec ops' is not a group or user name"),
    ({"moderated_by": [3]}, "3 is not a group or user name"),
    ({"moderated_by": ["sec"], "timeout": "soon"}, "timeout"),
    ({"moderated_by": ["sec"], "timeout": 0}, "must be more than 0"),
    ({"moderated_by": ["sec"], "approvers": ["x"]}, "unknown key 'approvers'"),
])
def test_a_malformed_moderation_scope_names_file_line_and_what_is_wrong(tmp_path: Path, scope: dict[str, object],
                                                                        error: str) -> None:
    lines = ["[[rule]]", 'name = "r"', 'action = "deny"', 'program = "rm"', "", "[[moderation]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in scope.items()]
    path = tmp_path / "rules.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert f"{path}:6:" in caught.value.reason and error in caught.value.reason, caught.value.reason


@pytest.mark.parametrize(("value", "error"), [
    ('"sec"', "moderated_by"),
    ("[]", "expected a non-empty list"),
    ('["", "sec"]', "'' is not a group or user name"),
])
def test_a_malformed_moderated_by_in_the_config_is_named(tmp_path: Path, value: str, error: str) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(f'[targets.vault-1]\naddress = "10.0.0.9:22"\nlogins = ["root"]\nmoderated_by = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "vault-1" in caught.value.reason and error in caught.value.reason, caught.value.reason
