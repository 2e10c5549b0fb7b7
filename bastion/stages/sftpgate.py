"""The sftp gate: each request of an sftp session decided before the target sees it.

The client's stream is cut into whole packets; requests that change or read files (see
`recorder.sftp.OPERATIONS`) are decided by the rules, the rest need no decision and pass.
Allowed packets go on unchanged and in order. A denied request never reaches the target: the
gate answers it itself with SSH_FX_PERMISSION_DENIED and the rule's message (OpenSSH's sftp
shows only "Permission denied", so the message also goes to the client's stderr). A request
needing approval is held, with everything the client sends after it, until it is decided.

Paths are decided absolute. The target resolves a relative one (`scp file host:` sends
`./file`) from the session's working directory, which SFTP cannot change: the first time a
decision needs it, the gate asks the target itself (REALPATH ".") and holds the request until
the answer, which the client never sees.
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
from dataclasses import dataclass, field

from bastion.core.rules import Action, Verdict
from bastion.core.stored import stored_command
from bastion.stages.decisions import CommandDecisions, ScreeningContext
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from recorder.sftp import (
    CLOSE,
    FSETSTAT,
    FX_PERMISSION_DENIED,
    OPEN,
    OPENDIR,
    UNKNOWN,
    UNKNOWN_EXTENDED,
    PacketFramer,
    SftpProtocolError,
    SftpRequest,
    parse_name_reply,
    parse_reply,
    parse_request,
    realpath_packet,
    remember,
    split_packets,
    status_packet,
)
from recorder.transfers import SessionKind

HOLD = "sftp gate"


def normal_path(path: str) -> str:
    """`path` as a rule sees it: `.`, `..` and repeated slashes resolved without asking the
    target (which is why a symbolic link there can still name a file by another path)."""
    if not path:
        return path
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def refusal(verdict: Verdict) -> str:
    if verdict.rule is None:
        return "bastion: denied by the target's default"
    return f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"


@dataclass
class _Held:
    """A request awaiting approval or its working directory (the first packet), and every packet
    the client sent after it."""

    request: SftpRequest
    data: bytearray
    ends: list[int] = field(default_factory=list)

    def add(self, whole: bytes, ends: list[int]) -> None:
        offset = len(self.data)
        self.data += whole
        self.ends += [offset + end for end in ends]

    def first(self) -> bytes:
        return bytes(self.data[:self.ends[0]])

    def rest(self) -> tuple[bytes, list[int]]:
        """The packets after the first one, and where each ends."""
        start = self.ends[0]
        return bytes(self.data[start:]), [end - start for end in self.ends[1:]]


class SftpGateStage(SessionStage):
    """Screens sftp sessions request by request; other sessions pass untouched."""

    name = "sftp-gate"

    def __init__(self, context: ScreeningContext) -> None:
        self._ctx = context
        self._io: SessionIO | None = None
        self._decisions: CommandDecisions | None = None  # set for sftp sessions only
        self._requests = PacketFramer("request from the client")
        self._replies = PacketFramer("reply from the target")
        self._opening: dict[int, str] = {}  # request id of a forwarded open -> its path
        self._handles: dict[bytes, str] = {}  # open handle -> the path it was opened with
        self._held: _Held | None = None
        self._task: asyncio.Task[None] | None = None
        self._home: str | None = None  # the working directory; "" when the target did not say
        self._asking: int | None = None  # the request id of the gate's own REALPATH
        self._ended = False

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        if info.kind is SessionKind.SUBSYSTEM and info.subsystem == "sftp":
            self._io = io
            self._decisions = CommandDecisions(self._ctx, info, io)

    # -- the client's requests ----------------------------------------------------------------

    def on_input(self, data: bytes) -> bytes:
        if self._decisions is None:
            return data
        whole, ends = self._requests.feed(data)
        if self._held is not None:
            # Bounded: reading from the client is paused while a request is held.
            self._held.add(whole, ends)
            return b""
        return self._screen(whole, ends)

    def _screen(self, whole: bytes, ends: list[int]) -> bytes:
        """The packets of `whole` that go on now; the others are answered or held."""
        view = memoryview(whole)
        kept: list[memoryview] = []
        run = start = 0  # `run`: where the packets to forward since the last refusal begin
        for index, end in enumerate(ends):
            request = parse_request(view[start:end])
            waits = self._needs_home(request)
            verdict, command = (None, "") if waits else self._decide(request)
            if waits or (verdict is not None and verdict.action is Action.APPROVE):
                kept.append(view[run:start])
                held = _Held(request, bytearray(view[start:]), [e - start for e in ends[index:]])
                if verdict is None:
                    self._ask_home(request, held)
                else:
                    self._hold(held, verdict, command)
                return b"".join(kept)
            if verdict is not None and verdict.action is Action.DENY:
                kept.append(view[run:start])
                self._refuse(request, refusal(verdict))
                run = end
            else:
                self._forwarded(request)
            start = end
        if not kept:
            return whole
        kept.append(view[run:])
        return b"".join(kept)

    def _resolve(self, path: str) -> str:
        if self._home and path and not path.startswith("/"):
            return normal_path(posixpath.join(self._home, path))
        return normal_path(path)

    def _decide(self, request: SftpRequest) -> tuple[Verdict | None, str]:
        if not request.operation:
            return None, ""
        paths = tuple(self._resolve(p) for p in request.paths)
        unknown = request.operation in (UNKNOWN, UNKNOWN_EXTENDED)
        why = ("a malformed request" if request.malformed
               else "a request this bastion does not know" if unknown
               else "a path with a NUL (the target reads it only up to it)" if any("\0" in p for p in paths)
               else "")
        if request.type == FSETSTAT:
            path = self._handles.get(request.handle or b"")
            if path is None:
                why = why or "a change through a handle the gate never saw opened"
            paths = (path,) if path is not None else ()
        command = " ".join([request.describe(), *(shlex.quote(p) for p in paths)])
        assert self._decisions is not None
        verdict = self._decisions.decide("sftp", command, unsure=bool(why), why=why,
                                         operation=request.operation, paths=paths)
        self._decisions.mark(verdict, command)
        return verdict, command

    def _forwarded(self, request: SftpRequest) -> None:
        """Follows handles, so that a change made through one is decided on its path."""
        if request.type in (OPEN, OPENDIR) and request.paths and request.id is not None:
            remember(self._opening, request.id, self._resolve(request.paths[0]))
        elif request.type == CLOSE and request.handle is not None:
            self._handles.pop(request.handle, None)

    def _refuse(self, request: SftpRequest, message: str) -> None:
        # Everything that reached the client so far ends on a packet boundary (see on_output):
        # the answer can go out at once, maybe before answers to earlier requests. Clients match
        # answers to requests by id (servers may answer out of order too), and OpenSSH's sftp
        # awaits the answer to a request like this one before it sends the next.
        assert self._io is not None
        assert request.id is not None  # INIT, the only request without an id, is never decided
        self._io.to_client(status_packet(request.id, FX_PERMISSION_DENIED, message))
        self._io.say(message.encode("utf-8", "replace") + b"\r\n", Stream.STDERR)

    def _go_on(self, whole: bytes, ends: list[int]) -> None:
        """After a hold: the packets behind it are screened as if they had just come."""
        assert self._io is not None
        try:
            forward = self._screen(whole, ends)
        except SftpProtocolError as exc:
            self._io.end(f"bastion: session ended: {self.name} failed: {exc}")
            return
        if forward:
            self._io.to_target(forward)
        if self._held is None:  # not held again by a later request
            self._io.release_input(HOLD)

    # -- the working directory, for relative paths ------------------------------------------

    def _needs_home(self, request: SftpRequest) -> bool:
        return bool(request.operation) and self._home is None and any(
            p and not p.startswith("/") for p in request.paths)

    def _ask_home(self, request: SftpRequest, held: _Held) -> None:
        assert self._io is not None
        assert request.id is not None
        self._held = held
        self._io.hold_input(HOLD)
        # An id far from the client's own (clients count up from theirs).
        self._asking = (request.id + 0x80000000) & 0xFFFFFFFF
        self._io.to_target(realpath_packet(self._asking, "."))

    def _answered(self, whole: bytes, ends: list[int]) -> bytes:
        """`whole` without the answer to the gate's REALPATH, if it is there (then noted)."""
        view, start = memoryview(whole), 0
        for end in ends:
            packet = view[start:end]
            if parse_reply(packet)[0] == self._asking:
                self._asking = None
                self._home = parse_name_reply(packet) or ""
                # After this output has gone on: answers to refused requests follow it.
                asyncio.get_running_loop().call_soon(self._home_known)
                return b"".join([view[:start], view[end:]])
            start = end
        return whole

    def _home_known(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._ended:
            self._go_on(bytes(held.data), held.ends)

    # -- approvals ----------------------------------------------------------------------------

    def _hold(self, held: _Held, verdict: Verdict, command: str) -> None:
        assert self._io is not None
        self._held = held
        self._io.hold_input(HOLD)
        self._task = asyncio.get_running_loop().create_task(self._await(verdict, command))

    async def _await(self, verdict: Verdict, command: str) -> None:
        assert self._decisions is not None
        assert self._io is not None
        screen = f"sftp> {stored_command(command, self._ctx.masker)}"
        approved, why = await self._decisions.await_approval(
            verdict, command, screen=screen, interactive=False, hint="")
        held, self._held = self._held, None
        assert held is not None
        if approved:
            self._forwarded(held.request)
            self._io.to_target(held.first())
        else:
            self._refuse(held.request, f"bastion: {command!r} was not approved ({why})")
        self._go_on(*held.rest())

    # -- the target's replies -----------------------------------------------------------------

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        # Only whole packets go on, so the client's stream is always at a packet boundary when
        # the gate answers a request itself. The gate is the last stage output passes.
        if self._decisions is None or stream is Stream.STDERR:
            return data
        whole, ends = self._replies.feed(data)
        if self._opening:  # else nothing in the replies matters here: skip reading them
            for packet in split_packets(whole, ends):
                request_id, handle = parse_reply(packet)
                path = self._opening.pop(request_id, None) if request_id is not None else None
                if path is not None and handle is not None:
                    remember(self._handles, handle, path)
        if self._asking is not None:
            whole = self._answered(whole, ends)
        return whole

    def flush_output(self, stream: Stream) -> bytes:
        return self._replies.drain() if stream is Stream.STDOUT else b""

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        self._ended = True
        if self._decisions is not None:
            self._decisions.end()
        if self._task is not None and not self._task.done():
            self._task.cancel()
