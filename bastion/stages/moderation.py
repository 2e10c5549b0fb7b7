"""Moderated sessions: a session that needs a moderator (its target's `moderated_by` in the
config, or a [[moderation]] scope of the rules file) runs only while a moderator watches it.

At start the session waits (nothing reaches the target) until a member of one of its moderator
groups joins it (`ssh -t bastion join ID`, which any bastion instance records in the live-session
registry); the moderators are told in chat, as approvers are. The user may give up with Ctrl-C.
While no moderator watches any more, the user's input is paused; after the timeout without one,
the session ends. Joins and departures are markers in the recording. The requester never
moderates their own session (the join command refuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

from bastion.config import TargetConfig
from bastion.core.rules import Moderation, ModerationNeed, moderation_need
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from bastion.state.audit import AuditLog
from bastion.state.events import ModerationCancelled, ModeratorAwaited

POLL = 0.25  # how often the registry is asked who moderates (seconds)
Moderators = Callable[[str], Awaitable[tuple[str, ...]]]
Need = Callable[[SessionInfo], ModerationNeed | None]
# Records who may moderate the session (False: it is not in the registry, so nobody could join).
Require = Callable[[str, frozenset[str]], Awaitable[bool]]
# Tells the moderators in chat; what failed, one line each.
NotifyModerators = Callable[[SessionInfo, ModerationNeed], Awaitable[list[str]]]


def need_from(targets: Mapping[str, TargetConfig],
              scopes: Callable[[], tuple[Moderation, ...]] = tuple) -> Need:
    """A session's moderation from its target's config and the rules file's scopes in force."""

    def need(info: SessionInfo) -> ModerationNeed | None:
        target = targets.get(info.target)
        return moderation_need(scopes(), user=info.user, groups=info.groups, target=info.target,
                               login=info.login,
                               target_moderators=target.moderated_by if target else frozenset(),
                               target_timeout=target.moderator_timeout if target else 300)

    return need


class ModerationStage(SessionStage):
    name = "moderation"

    def __init__(self, moderators: Moderators, need: Need, *, require: Require | None = None,
                 notify: NotifyModerators | None = None, audit: AuditLog | None = None) -> None:
        self._moderators = moderators
        self._need = need
        self._require = require
        self._notify = notify
        self._audit = audit
        self._present: tuple[str, ...] = ()
        self._ended = False
        self._cancelled = False
        self._wake = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._notifying: asyncio.Task[None] | None = None
        self._paused = False

    def _say(self, io: SessionIO, info: SessionInfo, line: str) -> None:
        io.to_client(f"bastion: {line}\r\n".encode() if info.has_pty else f"bastion: {line}\n".encode(),
                     Stream.STDERR)

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        need = self._need(info)
        if need is None:
            return None
        groups = ", ".join(sorted(need.moderated_by))
        if self._require is not None:
            try:
                registered = await self._require(info.session_id, need.moderated_by)
            except Exception:  # noqa: BLE001 - what cannot be recorded cannot be joined
                registered = False
            if not registered:
                return (f"bastion: sessions to {info.target} need a moderator, and the live-session registry"
                        " cannot record this one; try again later")
        cancel = " - Ctrl-C to cancel" if info.has_pty else ""
        self._say(io, info, f"waiting for a moderator from {groups} (session {info.session_id}); "
                            f"they join with: ssh -t bastion join {info.session_id}{cancel}")
        self._notifying = asyncio.get_running_loop().create_task(self._tell_moderators(info, io, need))
        if info.has_pty:
            io.watch_input(lambda data: self._typed(info, data))
        try:
            return await self._wait(info, io, need, groups)
        finally:
            io.watch_input(None)

    async def _wait(self, info: SessionInfo, io: SessionIO, need: ModerationNeed, groups: str) -> str | None:
        deadline = time.monotonic() + need.timeout
        while not self._ended:
            if self._cancelled:
                if self._audit is not None:
                    self._audit.write(ModerationCancelled(session=info.session_id, user=info.user,
                                                          target=info.target, login=info.login))
                return (f"bastion: you stopped waiting for a moderator (session {info.session_id});"
                        f" nothing reached {info.target}")
            present = await self._moderators(info.session_id)
            if self._cancelled:
                continue  # Ctrl-C while the registry answered: the user's word comes first
            if present:
                self._changed(io, info, present)
                self._watch = asyncio.get_running_loop().create_task(self._keep_watching(info, io, need))
                return None
            if time.monotonic() > deadline:
                return f"bastion: no moderator from {groups} joined within {need.timeout} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
        return "bastion: the session ended while waiting for a moderator"

    def _typed(self, info: SessionInfo, data: bytes) -> None:
        """Input while waiting: the terminal's interrupt key gives up the wait."""
        if info.interrupt_key in data:
            self._cancelled = True
            self._wake.set()

    async def _tell_moderators(self, info: SessionInfo, io: SessionIO, need: ModerationNeed) -> None:
        failed: list[str] = []
        if self._notify is not None:
            try:
                failed = await self._notify(info, need)
            except Exception as exc:  # noqa: BLE001 - the wait goes on; the user is told
                failed = [str(exc) or type(exc).__name__]
        if self._audit is not None:
            self._audit.write(ModeratorAwaited(
                session=info.session_id, user=info.user, target=info.target, login=info.login,
                moderated_by=tuple(sorted(need.moderated_by)), scopes=need.scopes,
                notify_failed=tuple(failed)))
        if failed and not self._ended and not self._present:
            self._say(io, info, f"the moderators could not be told in chat ({'; '.join(failed)});"
                                " ask one to join")

    def _changed(self, io: SessionIO, info: SessionInfo, present: tuple[str, ...]) -> None:
        for user in present:
            if user not in self._present:
                io.marker("moderator-joined", user)
                self._say(io, info, f"moderator {user} is watching")
        for user in self._present:
            if user not in present:
                io.marker("moderator-left", user)
        self._present = present

    async def _keep_watching(self, info: SessionInfo, io: SessionIO, need: ModerationNeed) -> None:
        """While the session runs: input pauses when the last moderator leaves, resumes when one
        is back, and the session ends after the timeout without one."""
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
            if self._paused and time.monotonic() - alone_since > need.timeout:
                io.end(f"bastion: session ended: no moderator for {need.timeout} s")
                return

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        self._ended = True
        self._wake.set()
        if self._watch is not None:
            self._watch.cancel()
