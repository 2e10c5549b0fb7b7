"""The moderation stage with a stand-in registry: it waits for a moderator, pauses input when the
last one leaves, resumes when one is back, and gives up after the timeout."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bastion.config import TargetConfig
from bastion.stages.moderation import ModerationStage
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

    stage = ModerationStage(nobody, {"db-1": replace(VAULT, moderated_by=frozenset())})
    assert asyncio.run(stage.gate(SHELL, Session())) is None


def test_waits_for_a_moderator_then_pauses_input_while_none_watches() -> None:
    present: list[tuple[str, ...]] = [()]

    async def moderators(session: str) -> tuple[str, ...]:
        assert session == SHELL.session_id
        return present[0]

    async def scenario() -> Session:
        io = Session()
        stage = ModerationStage(moderators, {"db-1": VAULT})
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

    stage = ModerationStage(nobody, {"db-1": replace(VAULT, moderator_timeout=0)})
    refusal = asyncio.run(stage.gate(SHELL, Session()))
    assert refusal == "bastion: no moderator from sec joined within 0 s"
