"""Moderated sessions: a session to a target with `moderated_by` runs only while a moderator
watches it.

At start the session waits (nothing reaches the target) until a member of one of the target's
moderator groups joins it (`ssh -t bastion join ID`, which any bastion instance records in the
live-session registry); while no moderator watches any more, the user's input is paused; after
`moderator_timeout` without one, the session ends. Joins and departures are markers in the
recording. The requester never moderates their own session (the join command refuses it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from bastion.config import TargetConfig
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream

POLL = 0.25  # how often the registry is asked who moderates (seconds)
Moderators = Callable[[str], Awaitable[tuple[str, ...]]]


class ModerationStage(SessionStage):
    name = "moderation"

    def __init__(self, moderators: Moderators, targets: Mapping[str, TargetConfig]) -> None:
        self._moderators = moderators
        self._targets = targets
        self._present: tuple[str, ...] = ()
        self._ended = False
        self._watch: asyncio.Task[None] | None = None
        self._paused = False

    def _say(self, io: SessionIO, info: SessionInfo, line: str) -> None:
        io.to_client(f"bastion: {line}\r\n".encode() if info.has_pty else f"bastion: {line}\n".encode(),
                     Stream.STDERR)

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        target = self._targets.get(info.target)
        if target is None or not target.moderated_by:
            return None
        groups = ", ".join(sorted(target.moderated_by))
        self._say(io, info, f"waiting for a moderator from {groups} (session {info.session_id}); "
                            f"they join with: ssh -t bastion join {info.session_id}")
        deadline = time.monotonic() + target.moderator_timeout
        while not self._ended:
            present = await self._moderators(info.session_id)
            if present:
                self._changed(io, info, present)
                self._watch = asyncio.get_running_loop().create_task(self._keep_watching(info, io, target))
                return None
            if time.monotonic() > deadline:
                return f"bastion: no moderator from {groups} joined within {target.moderator_timeout} s"
            await asyncio.sleep(POLL)
        return "bastion: the session ended while waiting for a moderator"

    def _changed(self, io: SessionIO, info: SessionInfo, present: tuple[str, ...]) -> None:
        for user in present:
            if user not in self._present:
                io.marker("moderator-joined", user)
                self._say(io, info, f"moderator {user} is watching")
        for user in self._present:
            if user not in present:
                io.marker("moderator-left", user)
        self._present = present

    async def _keep_watching(self, info: SessionInfo, io: SessionIO, target: TargetConfig) -> None:
        """While the session runs: input pauses when the last moderator leaves, resumes when one
        is back, and the session ends after `moderator_timeout` without one."""
        alone_since = 0.0
        while not self._ended:
            await asyncio.sleep(POLL)
            try:
                present = await self._moderators(info.session_id)
            except Exception:  # noqa: BLE001 - the registry cannot say: nobody is known to watch
                present = ()
            if self._ended:
                return
            self._changed(io, info, present)
            if not present and not self._paused:
                self._paused, alone_since = True, time.monotonic()
                io.hold_input("moderator")
                self._say(io, info, "the moderator left; your input is paused until one returns")
            elif present and self._paused:
                self._paused = False
                io.release_input("moderator")
            if self._paused and time.monotonic() - alone_since > target.moderator_timeout:
                io.end(f"bastion: session ended: no moderator for {target.moderator_timeout} s")
                return

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        self._ended = True
        if self._watch is not None:
            self._watch.cancel()

