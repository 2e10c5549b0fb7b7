"""Command screening as a session stage: exec commands and subsystems at the gate, interactive
lines at Enter. Every decision is logged and becomes a recording marker; what they store of a
command is masked and bounded (`bastion.stored`).

At a shell prompt the Enter key is held while the submitted line is read from the screen (as
the target drew it, before masking) and decided. Allowed lines go through at once. A denied
line is discarded at the target (Ctrl-C) and the user is told which rule blocked it. A line
that needs approval stays held: the user sees one status line, keystrokes other than Ctrl-C
(which cancels) are not forwarded but recorded as a marker, and the held bytes are released
only when enough approvers said yes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion.approvals import ApprovalRequest, ApprovalStore
from bastion.audit import AuditLog
from bastion.hidden import PROMPT
from bastion.linetrack import LineTracker, replay_keys
from bastion.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from bastion.rules import CommandRequest, RulesHolder, Verdict
from bastion.stored import HEAD, MARGIN, StoredCommand, stored_command, stored_keys, stored_screen

ENTER = re.compile(rb"[\r\n]")
PASTE_START = b"\x1b[200~"
# End of line, kill it, submit the now empty line: the shell forgets the line and prompts again.
# (Ctrl-C would too, but the terminal driver then flushes whatever the user typed next.)
DISCARD_LINE = b"\x05\x15\r"
ECHO_WAIT = 0.5  # longest an Enter waits for the echo of the keys typed just before it
# ... when the line was typed ahead of any prompt (a shell still starting, a command still
# running): the shell shows it once it prompts, and would not run it any sooner.
TYPEAHEAD_WAIT = 10.0
POLL = 0.25


# Tells approvers (chat); returns what could not be reached, e.g. ["slack: HTTP 500"].
Notify = Callable[[ApprovalRequest], Awaitable[list[str]]]


@dataclass
class ScreeningContext:
    rules: RulesHolder
    approvals: ApprovalStore | None
    audit: AuditLog
    notify: Notify | None = None


def _red(text: str) -> bytes:
    return b"\r\n\x1b[1;31m" + text.encode("utf-8", "replace") + b"\x1b[0m\r\n"


class ScreeningStage(SessionStage):
    name = "screener"

    def __init__(self, context: ScreeningContext) -> None:
        self._ctx = context
        self._info: SessionInfo | None = None
        self._io: SessionIO | None = None
        self._tracker: LineTracker | None = None
        self._held: bytes | None = None  # an Enter (and what followed it) awaiting a decision
        self._request: str | None = None
        self._awaiting = False  # an approval hold: keys other than Ctrl-C are dropped
        self._dropped = b""  # ... and kept (bounded) for a marker, with their count
        self._dropped_count = 0
        self._wake = asyncio.Event()  # a hold is cancelled: stop waiting for the next poll
        self._decided: tuple[str, StoredCommand] | None = None  # the last decision's command, stored
        self._typeahead = b""  # keys typed while a line was being decided: screened after it
        self._cancelled = False
        self._task: asyncio.Task[None] | None = None

    # -- decisions ------------------------------------------------------------------------

    def _decide(self, kind: str, command: str, *, unsure: bool = False) -> Verdict:
        info = self._info
        assert info is not None
        verdict = self._ctx.rules.rules.decide(CommandRequest(
            user=info.user, groups=info.groups, target=info.target, login=info.login,
            kind=kind, command=command, unsure=unsure))
        stored = stored_command(command)
        part = stored if verdict.part == command else stored_command(verdict.part)
        self._ctx.audit.event(
            "command_decision", session=info.session_id, user=info.user, target=info.target,
            login=info.login, kind=kind, **stored.fields(), action=verdict.action,
            rule=verdict.rule, **part.fields("part"), unsure=verdict.unsure or None)
        self._decided = (command, stored)  # for the marker that follows (masking costs time at Enter)
        return verdict

    def _mark(self, verdict: Verdict, command: str) -> None:
        if self._io is None:
            return
        rule = f" [{verdict.rule}]" if verdict.rule else ""
        label = {"allow": "command", "log": "logged", "deny": "denied", "approve": "held"}[verdict.action]
        unsure = " (unsure)" if verdict.unsure else ""
        decided, self._decided = self._decided, None
        stored = decided[1] if decided is not None and decided[0] is command else stored_command(command)
        self._io.marker(label, f"{stored}{rule}{unsure}" if label != "command" else f"{stored}{unsure}")

    async def _await_approval(self, verdict: Verdict, command: str, *, interactive: bool) -> tuple[bool, str]:
        """Hold until approved (True) or denied/expired/cancelled (False, why)."""
        store, info, io = self._ctx.approvals, self._info, self._io
        assert info is not None
        assert io is not None
        if store is None:
            return False, "approvals are not configured on this bastion"
        stored = stored_command(command)
        tracker = self._tracker
        screen = (stored_screen(tracker.snapshot(), tracker.screen.columns) if tracker is not None
                  else f"$ {stored}")
        request = store.create(session=info.session_id, requester=info.user, target=info.target,
                               login=info.login, command=command, rule=verdict.rule or "",
                               approvers=verdict.approvers, approvals=verdict.approvals,
                               timeout=verdict.timeout, screen=screen)
        self._request = request.id
        minutes = max(1, round(verdict.timeout / 60))
        # At a prompt the status goes on a line of its own; an exec session gets it on stderr.
        status = (f"bastion: waiting for approval (request {request.id}, expires in {minutes} min)"
                  " - Ctrl-C to cancel\r\n").encode()
        if interactive:
            io.to_client(b"\r\n" + status)
        else:
            io.to_client(status, Stream.STDERR)
        io.marker("approval-requested", f"{request.id} [{verdict.rule}] {stored}")
        self._ctx.audit.event("approval_requested", request=request.id, session=info.session_id,
                              user=info.user, target=info.target, **stored.fields(), rule=verdict.rule)
        notifying = (asyncio.get_running_loop().create_task(self._notify(request, interactive))
                     if self._ctx.notify is not None else None)
        seen = 0
        self._wake.clear()
        try:
            while True:
                if self._cancelled:
                    self._cancel_request("ctrl-c")  # unless the session's end did already
                    return False, "cancelled"
                state, decisions = store.state(request.id)
                for approver, decision, identity in decisions[seen:]:
                    io.marker("approval-decision", f"{request.id} {decision} by {approver}"
                                                   + (f" ({identity})" if identity else ""))
                seen = len(decisions)
                if state != "pending":
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
        finally:
            self._report_dropped()
            if notifying is not None and not notifying.done():
                notifying.cancel()
        self._request = None
        who = ", ".join(a for a, d, _ in decisions if d == ("approve" if state == "approved" else "deny"))
        io.marker(f"approval-{state}", f"{request.id} by {who}" if who else request.id)
        self._ctx.audit.event(f"approval_{state}", request=request.id, session=info.session_id,
                              by=who or None)
        if state == "approved":
            return True, f"approved by {who}"
        return False, f"{state} by {who}" if who else state

    async def _notify(self, request: ApprovalRequest, interactive: bool) -> None:
        assert self._ctx.notify is not None
        info, io = self._info, self._io
        assert info is not None
        assert io is not None
        failed = await self._ctx.notify(request)
        self._ctx.audit.event("approval_notified", request=request.id, session=info.session_id,
                              failed=failed or None)
        if not failed:
            io.marker("approval-notified", request.id)
        if failed:
            io.marker("approval-notify-failed", f"{request.id}: {'; '.join(failed)}")
            line = (f"bastion: could not notify approvers ({'; '.join(failed)});"
                    f" request {request.id} still waits\r\n").encode()
            io.to_client(line, Stream.STDOUT if interactive else Stream.STDERR)

    def _during_hold(self, data: bytes) -> None:
        """Keys typed while a line waits for approval: never forwarded, but a reviewer sees
        them (masked, bounded) in the recording."""
        if b"\x03" in data:
            self._cancelled = True
            self._wake.set()
        self._dropped_count += len(data)
        self._dropped += data[:max(0, HEAD + MARGIN - len(self._dropped))]

    def _report_dropped(self) -> None:
        if self._dropped_count and self._io is not None:
            self._io.marker("dropped-input", stored_keys(self._dropped, self._dropped_count))
        self._dropped, self._dropped_count = b"", 0

    def _cancel_request(self, reason: str) -> None:
        """The pending request can never be approved now (Ctrl-C, or the session ended)."""
        request, self._request = self._request, None
        store, info = self._ctx.approvals, self._info
        if request is None or store is None or info is None:
            return
        self._report_dropped()
        if not store.cancel(request):
            return  # decided or expired a moment before: the hold reports that
        if self._io is not None:
            self._io.marker("approval-cancelled", f"{request} ({reason})")
        self._ctx.audit.event("approval_cancelled", request=request, session=info.session_id,
                              user=info.user, reason=reason)

    # -- the gate: exec commands and subsystems, before anything runs upstream -------------

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        self._info, self._io = info, io
        if info.kind == "shell" and info.has_pty:
            self._tracker = LineTracker(info.width, info.height)

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        if info.kind == "exec":
            kind, command = "exec", info.command or ""
        elif info.kind == "subsystem":
            kind, command = info.subsystem or "", info.subsystem or ""
        else:
            return None
        verdict = self._decide(kind, command)
        self._mark(verdict, command)
        if verdict.action == "deny":
            return f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"
        if verdict.action == "approve":
            approved, why = await self._await_approval(verdict, command, interactive=False)
            if not approved:
                return f"bastion: {command!r} was not approved ({why})"
        return None

    # -- interactive lines ------------------------------------------------------------------

    def on_target_output(self, data: bytes, stream: Stream) -> None:
        # The real output, not the masked one the user sees: a secret typed at the prompt
        # echoes masked, and the masked screen would disagree with the keys (unsure).
        if self._tracker is not None:
            self._tracker.output(data)

    def on_resize(self, width: int, height: int) -> None:
        if self._tracker is not None:
            self._tracker.resize(width, height)

    def on_input(self, data: bytes) -> bytes:
        tracker = self._tracker
        if self._held is not None:
            if self._awaiting:
                self._during_hold(data)  # Ctrl-C cancels a hold; nothing else gets through
                return b""
            self._typeahead = (self._typeahead + data)[-65536:]
            return b""
        if tracker is None or tracker.alternate:
            return data  # full-screen programs (vim, less): their launch was screened
        enter = ENTER.search(data)
        if enter is None:
            tracker.typed(data)
            return data
        if PASTE_START in data or len(ENTER.findall(data)) > 1:
            return self._paste(data)
        before, self._held = data[:enter.start()], data[enter.start():]
        if before:
            tracker.typed(before)
        self._task = asyncio.get_running_loop().create_task(self._on_enter())
        return before

    def _paste(self, data: bytes) -> bytes:
        """Several lines at once: each is screened from the keystrokes before any is released."""
        tracker, io = self._tracker, self._io
        assert tracker is not None
        assert io is not None
        text = data.replace(PASTE_START, b"").replace(b"\x1b[201~", b"")
        pieces = ENTER.split(tracker.keys + text)
        lines = [replay_keys(piece) for piece in pieces[:-1] if replay_keys(piece).strip()]
        verdicts = [(self._decide("shell", line), line) for line in lines]
        if not verdicts:
            tracker.entered()
            return data
        verdict, line = max(verdicts, key=lambda v: ("allow", "log", "approve", "deny").index(v[0].action))
        for each, each_line in verdicts:
            self._mark(each, each_line)
        if verdict.action in ("allow", "log"):
            tracker.entered()
            if pieces[-1]:
                tracker.typed(pieces[-1])
            return data
        if verdict.action == "deny":
            io.to_client(_red(f"bastion: paste denied by rule {verdict.rule!r} on: {line}"))
            io.to_target(DISCARD_LINE)
            tracker.entered()
            return b""
        self._held = data
        hold = self._hold(verdict, "\n".join(lines))
        self._task = asyncio.get_running_loop().create_task(hold)
        return b""

    async def _on_enter(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        if PROMPT.search(tracker.prompt.rstrip().encode() + b" "):
            self._release()  # typed at a password prompt: not a command, never logged as one
            return
        deadline = time.monotonic() + (TYPEAHEAD_WAIT if tracker.typed_ahead else ECHO_WAIT)
        while not tracker.echoed() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        line = tracker.submitted()
        if not line.text.strip():
            self._release()
            return
        verdict = self._decide("shell", line.text, unsure=line.unsure)
        self._mark(verdict, line.text)
        if verdict.action in ("allow", "log"):
            self._release()
        elif verdict.action == "deny":
            self._discard(f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}")
        else:
            await self._hold(verdict, line.text)

    async def _hold(self, verdict: Verdict, command: str) -> None:
        # Ctrl-C typed while the line was still being decided cancels the hold, too.
        self._cancelled, self._awaiting = b"\x03" in self._typeahead, True
        self._typeahead = b""
        try:
            approved, why = await self._await_approval(verdict, command, interactive=True)
        finally:
            self._awaiting = False
        if approved:
            if self._io is not None:
                self._io.to_client(f"bastion: {why}\r\n".encode())
            self._release()
        else:
            self._discard(f"bastion: not run: {why}")

    def _release(self) -> None:
        held, self._held = self._held or b"", None
        if self._tracker is not None:
            self._tracker.entered()
        if self._io is None or not held:
            return
        first, rest = held[:1], held[1:] + self._typeahead
        self._typeahead = b""
        self._io.to_target(first)
        self._screen_typeahead(rest)

    def _screen_typeahead(self, data: bytes) -> None:
        """Keys typed after an Enter while it was decided go through screening the same way."""
        if data and self._io is not None:
            forward = self.on_input(data)
            if forward:
                self._io.to_target(forward)

    def _discard(self, message: str) -> None:
        held, self._held = self._held or b"", None
        typeahead, self._typeahead = held[1:] + self._typeahead, b""
        if self._tracker is not None:
            self._tracker.entered()
        if self._io is not None:
            self._io.to_client(_red(message))
            self._io.to_target(DISCARD_LINE)
            if typeahead:
                self._held = b""  # keys keep queueing until the shell has prompted again
                self._task = asyncio.get_running_loop().create_task(self._after_discard(typeahead))

    async def _after_discard(self, typeahead: bytes) -> None:
        tracker = self._tracker
        deadline = time.monotonic() + ECHO_WAIT
        sent = time.monotonic()
        while tracker is not None and time.monotonic() < deadline:
            if tracker.last_output > sent and time.monotonic() - tracker.last_output >= 0.03:
                break
            await asyncio.sleep(0.01)
        self._held = None
        rest, self._typeahead = typeahead + self._typeahead, b""
        self._screen_typeahead(rest)

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        self._cancelled = True
        self._cancel_request("session ended")
        self._wake.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
