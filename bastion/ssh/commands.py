"""The bastion's own commands over ssh: `ssh bastion sessions list`, `ssh bastion approvals
approve 7F3A1B`, `ssh bastion whoami`. No shell, no program: each command is served here, on the
bastion's loop, for the authenticated SSH user, with what their role allows. Everything else (a
shell, an unknown command, a subsystem) is refused with one line listing what exists, and logged.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncssh

from bastion.config import BastionConfig
from bastion.core.access import Role, may_kill, may_watch, role_of
from bastion.core.owncommands import SESSION_ID, Command, Refusal, parse
from bastion.core.policy import Identity
from bastion.ssh.viewer import TerminalProgram, ViewerSlots
from bastion.state.approvals import ApprovalError, ApprovalRequest, ApprovalState, ApprovalStore, Decision
from bastion.state.audit import AuditLog
from bastion.state.events import (
    ApprovalDecision,
    ApprovalDecisionRefused,
    ModeratorJoined,
    ModeratorLeft,
    OwnCommand,
    OwnCommandRefused,
    SessionKillRequested,
    SessionViewed,
)
from bastion.state.live import Registry, session_table
from recorder.index import RecordingIndex, SessionRow, index_location, index_missing
from recorder.printable import printable


class BastionState(Protocol):
    """What the commands read of the running bastion (`bastion.ssh.server.BastionState`)."""

    @property
    def config(self) -> BastionConfig: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def registry(self) -> Registry | None: ...
    @property
    def approvals(self) -> ApprovalStore | None: ...

KILL_WAIT = 10.0  # how long `sessions kill` waits to see the session end
# The key id of a login certificate (bastion.auth.directory): who signed in where.
LOGIN_KEY_ID = re.compile(r"bastion-login user=\S+ identity=(?P<identity>\S+) serial=(?P<serial>\d+)")
SLOTS = ViewerSlots()  # the terminal UIs this process runs


class Refused(Exception):
    """A command the user may not run (or that cannot be done): one line, exit status 1."""


@dataclass
class Caller:
    identity: Identity
    client: str
    role: Role
    certificate_expires: int | None = None
    certificate_key_id: str | None = None  # what the login certificate says of how it was issued


class OwnCommandSession(asyncssh.SSHServerSession[bytes]):
    """One session channel of a user connected to the bastion itself."""

    def __init__(self, state: BastionState, caller: Caller) -> None:
        self._state = state
        self._caller = caller
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._line: str | None = None
        self._pty = False
        self._term = ""
        self._size = (80, 24)
        self._program: TerminalProgram | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(  # type: ignore[override]
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: dict[int, int]
    ) -> bool:
        self._pty = True
        self._term = term_type
        self._size = (term_size[0] or 80, term_size[1] or 24)
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._size = (width, height)
        if self._program is not None:
            self._program.resize(width, height)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._program is not None:
            self._program.stop()  # the terminal closed: the UI ends with it

    def shell_requested(self) -> bool:
        return True  # answered with the refusal and the list of commands

    def exec_requested(self, command: str) -> bool:
        self._line = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._refused(f"subsystem {subsystem}", f"no subsystem ({subsystem}) on the bastion")
        return False

    def session_started(self) -> None:
        asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self._program is not None:
            self._program.write(data)  # keys for the terminal UI; no other command reads input

    def eof_received(self) -> bool:
        return True  # the end of the user's input does not end the answer

    def _refused(self, command: str, reason: str) -> None:
        caller = self._caller
        self._state.audit.write(OwnCommandRefused(user=caller.identity.user, client=caller.client,
                                                  command=printable(command)[:200], reason=reason))

    def _write(self, text: str, *, stderr: bool = False) -> None:
        if self._chan is None:
            return
        data = (text.replace("\n", "\r\n") if self._pty else text).encode("utf-8", "replace")
        try:
            if stderr:
                self._chan.write_stderr(data)
            else:
                self._chan.write(data)
        except BrokenPipeError:
            pass  # the user went away

    def _exit(self, status: int) -> None:
        if self._chan is not None:
            try:
                self._chan.exit(status)
            except BrokenPipeError:
                self._chan.close()

    async def _run(self) -> None:
        assert self._chan is not None
        parsed = parse(self._line)
        if self._caller.identity.machine and not isinstance(parsed, Refusal):
            parsed = Refusal("machines have no commands on the bastion (they never list, kill or approve)")
        if isinstance(parsed, Refusal):
            self._refused(self._line or "(shell)", parsed.reason)
            self._write(parsed.line() + "\n", stderr=True)
            self._exit(2)
            return
        caller = self._caller
        self._state.audit.write(OwnCommand(user=caller.identity.user, client=caller.client,
                                           command=parsed.name, about=parsed.target))
        if parsed.name in VIEWERS:
            await self._view(parsed)
            return
        handler = HANDLERS[parsed.name]
        try:
            output = await handler(self._state, caller, parsed)
        except Refused as exc:
            self._refused(self._line or "", str(exc))
            self._write(f"bastion: {exc}\n", stderr=True)
            self._exit(1)
            return
        except Exception as exc:  # noqa: BLE001 - one failed command never reaches the bastion
            self._refused(self._line or "", f"failed: {exc or type(exc).__name__}")
            self._write(f"bastion: {parsed.name} failed: {exc or type(exc).__name__}\n", stderr=True)
            self._exit(1)
            return
        self._write(output)
        self._exit(0)


    async def _view(self, command: Command) -> None:
        """The terminal UI on this channel's pty: a replay, a live session followed, the browser."""
        assert self._chan is not None
        caller, state = self._caller, self._state
        try:
            if not self._pty:
                raise Refused(f"{command.name} is a terminal UI: use ssh -t bastion {self._line}")
            argv, report = await viewer_argv(state, caller, command)
            if command.name == "join":
                await self._join(command)
        except Refused as exc:
            self._refused(self._line or "", str(exc))
            self._write(f"bastion: {exc}\n", stderr=True)
            self._exit(1)
            return
        busy = SLOTS.take(caller.identity.user)
        if busy is not None:
            if command.name == "join":
                await self._leave(command)
            self._refused(self._line or "", busy)
            self._write(f"bastion: {busy}\n", stderr=True)
            self._exit(1)
            return
        self._program = TerminalProgram(argv, term=self._term, size=self._size, report=report)
        try:
            status = await self._program.run(self._chan)
        except OSError as exc:
            self._write(f"bastion: cannot start the terminal UI: {exc.strerror or exc}\n", stderr=True)
            status = 1
        finally:
            SLOTS.give_back(caller.identity.user)
            if command.name == "join":
                await self._leave(command)
        self._exit(0 if status == 0 else 1)

    async def _join(self, command: Command) -> None:
        """Moderate: the session's instance sees this user watching (and lets it run)."""
        registry, me = _registry(self._state), self._caller.identity.user
        assert command.target is not None
        if not await registry.thread.run(registry.store.join, command.target, me):
            raise Refused(f"join: session {command.target} is not live")
        self._state.audit.write(ModeratorJoined(session=command.target, by=me))

    async def _leave(self, command: Command) -> None:
        registry, me = _registry(self._state), self._caller.identity.user
        assert command.target is not None
        await registry.thread.run(registry.store.leave, command.target, me)
        self._state.audit.write(ModeratorLeft(session=command.target, by=me))


Argv = Callable[[int | None], list[str]]


async def viewer_argv(state: BastionState, caller: Caller,
                      command: Command) -> tuple[Argv, Callable[[str], None] | None]:
    """The UI's command line for `command` (checked: who may see what) and, for the browser, what
    hears each recording it opens; the view is logged here."""
    config = state.config
    if config.path is None:
        raise Refused("the terminal UI needs the bastion's config file")
    base = ["-m", "bastion"]
    me = caller.identity.user
    if command.name == "review":
        mine = caller.role < Role.REVIEWER
        state.audit.write(SessionViewed(by=me, session=None, owner=me if mine else None, how="review"))

        def review(fd: int | None) -> list[str]:
            return [*base, "review", "-c", str(config.path), *(["--only-user", me] if mine else []),
                    "--by", me, *([] if may_kill(caller.role) else ["--no-kill"]),
                    *(["--report-fd", str(fd)] if fd is not None else [])]

        def opened(line: str) -> None:
            if line.startswith("kill "):
                _killed_in_review(state, caller, line[5:].strip())
                return
            asyncio.get_running_loop().create_task(_viewed_in_review(state, caller, line.strip()))

        return review, opened
    assert command.target is not None
    if command.name == "join":
        await _may_moderate(state, caller, command.target)
    row = await asyncio.to_thread(_index_row, config.recordings_dir, command.target, config.state_url)
    if row is None or not row.location:
        raise Refused(f"no recording of session {command.target}")
    # A session's moderator watches it whatever their role (`_may_moderate` said they are one).
    if command.name != "join" and not may_watch(caller.role, me, row.user):
        raise Refused(f"{command.name}: you may not watch {row.user}'s session {row.id} "
                      f"(reviewers: {_names(config.access.reviewers)})")
    follow = command.name in ("sessions follow", "join")
    live = row.state == "live"
    how = "moderate" if command.name == "join" else "follow" if follow else "play"
    state.audit.write(SessionViewed(by=me, session=row.id, owner=row.user, how=how, live=live))
    play = [*base, "play", "-c", str(config.path), *(["--follow"] if follow else []), row.id]
    return (lambda fd: play), None


async def _may_moderate(state: BastionState, caller: Caller, session: str) -> None:
    """Refused unless `session` is live, moderated, and the caller is one of its moderators and
    not its requester."""
    registry = _registry(state)
    live = await registry.thread.run(registry.store.get, session)
    if live is None:
        raise Refused(f"join: session {session} is not live")
    # Recorded by the serving instance as the session began to wait (the target's config and
    # the rules file's [[moderation]] scopes there): the same answer on every instance.
    moderators = await registry.thread.run(registry.store.moderated_by, session)
    me = caller.identity
    if not moderators:
        raise Refused(f"join: sessions to {live.target} are not moderated (use sessions follow)")
    if live.user == me.user:
        raise Refused("join: nobody moderates their own session")
    if not (me.groups | {me.user}) & moderators:
        raise Refused(f"join: only {_names(moderators)} moderate session {session} to {live.target}")


def _killed_in_review(state: BastionState, caller: Caller, said: str) -> None:
    """The browser's live view ended a session (it offers that to admins only)."""
    session, _, reason = said.partition(" ")
    me = caller.identity.user
    if not SESSION_ID.fullmatch(session) or not may_kill(caller.role):
        state.audit.write(OwnCommandRefused(user=me, client=caller.client,
                                            command=printable(f"review kill {said}")[:200],
                                            reason="the browser reported a kill it may not do"))
        return
    state.audit.write(SessionKillRequested(session=session, by=me, reason=printable(reason)[:200],
                                           via="ssh review"))


async def _viewed_in_review(state: BastionState, caller: Caller, session: str) -> None:
    """The browser opened `session`: logged with its owner (the browser only lists what the caller
    may see; a line that is not a listed session is logged as such)."""
    row = await asyncio.to_thread(_index_row, state.config.recordings_dir, session,
                                  state.config.state_url) if SESSION_ID.fullmatch(
        session) else None
    if row is None or not may_watch(caller.role, caller.identity.user, row.user):
        state.audit.write(OwnCommandRefused(user=caller.identity.user, client=caller.client,
                                            command=printable(f"review opened {session}")[:200],
                                            reason="the browser reported a session it may not show"))
        return
    state.audit.write(SessionViewed(by=caller.identity.user, session=row.id, owner=row.user, how="review",
                                    live=row.state == "live"))


def _index_row(recordings: Path, session: str, state_url: str | None = None) -> SessionRow | None:
    location = index_location(recordings, state_url)
    if index_missing(location):
        return None
    index = RecordingIndex(location)
    try:
        return index.get(session)
    finally:
        index.close()


VIEWERS = ("review", "play", "sessions follow", "join")


def caller_role(state: BastionState, identity: Identity) -> Role:
    access = state.config.access
    return role_of(identity.user, identity.groups, reviewers=access.reviewers, admins=access.admins)


# -- the commands ------------------------------------------------------------------------------------


async def whoami(state: BastionState, caller: Caller, command: Command) -> str:
    identity = caller.identity
    lines = [f"user        {identity.user}",
             f"groups      {', '.join(sorted(identity.groups)) or '-'}",
             f"signed in   with {identity.method} from {caller.client}",
             f"role        {caller.role.name.lower()}"]
    issued = LOGIN_KEY_ID.fullmatch(caller.certificate_key_id or "")
    if issued is not None:
        lines.append(f"certificate issued by bastion login after single sign-on as {issued.group('identity')}"
                     f" (serial {issued.group('serial')})")
    elif caller.certificate_key_id:
        lines.append(f"certificate key id {caller.certificate_key_id}")
    if caller.certificate_expires:
        left = caller.certificate_expires - time.time()
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(caller.certificate_expires))
        lines.append(f"certificate expires {when} (in {max(0, int(left // 60))} min)")
    return "".join(f"{printable(line)}\n" for line in lines)


async def sessions_list(state: BastionState, caller: Caller, command: Command) -> str:
    registry = _registry(state)
    user = command.options.get("user")
    me = caller.identity.user
    if caller.role < Role.REVIEWER:
        if user is not None and user != me:
            raise Refused(f"sessions list: you may list only your own sessions (reviewers: "
                          f"{_names(state.config.access.reviewers)})")
        user = me
    live = await registry.thread.run(registry.store.list, user=user, target=command.options.get("target"))
    live = [s for s in live if may_watch(caller.role, me, s.user)]
    now = time.time()
    if "json" in command.flags:
        return "".join(json.dumps({**s.as_dict(), "idle": round(s.idle(now), 1)}) + "\n" for s in live)
    return "".join(line + "\n" for line in session_table(live, now))


async def sessions_kill(state: BastionState, caller: Caller, command: Command) -> str:
    registry = _registry(state)
    assert command.target is not None
    if not may_kill(caller.role):
        try:
            await _may_moderate(state, caller, command.target)  # a session's moderator may end it
        except Refused:
            raise Refused(f"sessions kill: only admins ({_names(state.config.access.admins)}) and a"
                          " moderated session's moderators may end sessions") from None
    reason = command.options.get("reason") or "no reason given"
    by = caller.identity.user
    live = await registry.thread.run(registry.store.request_kill, command.target, by, reason)
    if live is None:
        raise Refused(f"no live session {command.target} (see sessions list)")
    state.audit.write(SessionKillRequested(session=live.session, by=by, reason=reason, via="ssh"))
    deadline = time.monotonic() + KILL_WAIT
    while await registry.thread.run(registry.store.get, live.session) is not None:
        if time.monotonic() > deadline:
            raise Refused(f"asked instance {live.instance} to end {live.session}; it has not yet")
        await asyncio.sleep(0.1)
    return f"ended {live.session} ({live.user}, {live.login}@{live.target})\n"


def _visible(caller: Caller, request: ApprovalRequest) -> bool:
    """Approvers see the requests they may decide; everyone sees their own; reviewers all."""
    identity = caller.identity
    return (request.requester == identity.user or bool(identity.groups & set(request.approvers))
            or caller.role >= Role.REVIEWER)


async def approvals_list(state: BastionState, caller: Caller, command: Command) -> str:
    store = _approvals(state)
    pending = [r for r in await store.thread.run(store.pending) if _visible(caller, r)]
    if not pending:
        return "no pending approval requests for you\n"
    now = time.time()
    return "".join(
        f"{r.id}  {r.requester} -> {r.login}@{r.target}  rule={printable(r.rule)}  needs {r.approvals_needed}"
        f" of {','.join(r.approvers)}  {max(0, int(r.expires - now))}s left  {printable(r.command)}\n"
        for r in pending
    )


async def approvals_show(state: BastionState, caller: Caller, command: Command) -> str:
    store = _approvals(state)
    assert command.target is not None
    request = await store.thread.run(store.get, command.target)
    if request is None or not _visible(caller, request):
        raise Refused(f"no approval request {command.target} for you")
    status, decisions = await store.thread.run(store.state, request.id)
    lines = [f"request   {request.id} ({status})", f"user      {request.requester}",
             f"target    {request.login}@{request.target}", f"rule      {request.rule}",
             f"approvers {request.approvals_needed} of {', '.join(request.approvers)}",
             f"command   {request.command}"]
    lines += [f"decision  {decision} by {approver}" for approver, decision, _ in decisions]
    if request.screen:
        lines.append("screen when submitted:")
        lines += [f"  | {line}" for line in request.screen.split("\n")]
    return "".join(printable(line) + "\n" for line in lines)


async def _decide(state: BastionState, caller: Caller, command: Command, decision: Decision) -> str:
    store = _approvals(state)
    assert command.target is not None
    identity = caller.identity
    how = f"ssh {identity.method}"
    try:
        result: ApprovalState = await store.thread.run(
            store.decide, command.target, identity.user, decision, groups=identity.groups, identity=how)
    except ApprovalError as exc:
        state.audit.write(ApprovalDecisionRefused(request=command.target, by=identity.user, identity=how,
                                                  decision=decision, reason=str(exc), client=caller.client))
        raise Refused(str(exc)) from None
    state.audit.write(ApprovalDecision(request=command.target, by=identity.user, identity=how,
                                       decision=decision, state=result, client=caller.client))
    return f"{command.target}: {decision} recorded by {identity.user}; request is {result}\n"


async def approvals_approve(state: BastionState, caller: Caller, command: Command) -> str:
    return await _decide(state, caller, command, Decision.APPROVE)


async def approvals_deny(state: BastionState, caller: Caller, command: Command) -> str:
    return await _decide(state, caller, command, Decision.DENY)


def _registry(state: BastionState) -> Registry:
    if state.registry is None:
        raise Refused("this bastion keeps no live-session registry")
    return state.registry


def _approvals(state: BastionState) -> ApprovalStore:
    if state.approvals is None:
        raise Refused("this bastion keeps no approval requests")
    return state.approvals


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none configured"


Handler = Callable[[BastionState, Caller, Command], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "whoami": whoami,
    "sessions list": sessions_list,
    "sessions kill": sessions_kill,
    "approvals list": approvals_list,
    "approvals show": approvals_show,
    "approvals approve": approvals_approve,
    "approvals deny": approvals_deny,
}
