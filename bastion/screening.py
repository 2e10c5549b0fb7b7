"""Command screening as a session stage: exec commands and subsystems at the gate, interactive
lines at Enter. Every decision is logged and becomes a recording marker.

At a shell prompt the Enter key is held while the submitted line is read from the screen and
decided. Allowed lines go through at once. A denied line is discarded at the target (Ctrl-C)
and the user is told which rule blocked it. A line that needs approval stays held: the user
sees one status line, keystrokes other than Ctrl-C (which cancels) are not forwarded, and the
held bytes are released only when enough approvers said yes.
"""

from __future__ import annotations

import asyncio
import re
import time

from bastion.decisions import CommandDecisions, ScreeningContext
from bastion.hidden import PROMPT
from bastion.linetrack import LineTracker, replay_keys
from bastion.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from bastion.rules import Verdict

ENTER = re.compile(rb"[\r\n]")
PASTE_START = b"\x1b[200~"
# End of line, kill it, submit the now empty line: the shell forgets the line and prompts again.
# (Ctrl-C would too, but the terminal driver then flushes whatever the user typed next.)
DISCARD_LINE = b"\x05\x15\r"
ECHO_WAIT = 0.5  # longest an Enter waits for the echo of the keys typed just before it
# ... when the line was typed ahead of any prompt (a shell still starting, a command still
# running): the shell shows it once it prompts, and would not run it any sooner.
TYPEAHEAD_WAIT = 10.0


def _red(text: str) -> bytes:
    return b"\r\n\x1b[1;31m" + text.encode("utf-8", "replace") + b"\x1b[0m\r\n"


class ScreeningStage(SessionStage):
    name = "screener"

    def __init__(self, context: ScreeningContext) -> None:
        self._ctx = context
        self._io: SessionIO | None = None
        self._decisions: CommandDecisions | None = None
        self._tracker: LineTracker | None = None
        self._held: bytes | None = None  # an Enter (and what followed it) awaiting a decision
        self._awaiting = False  # an approval hold: keys other than Ctrl-C are dropped
        self._typeahead = b""  # keys typed while a line was being decided: screened after it
        self._task: asyncio.Task[None] | None = None

    # -- decisions (see bastion.decisions) -------------------------------------------------

    def _decide(self, kind: str, command: str, *, unsure: bool = False) -> Verdict:
        assert self._decisions is not None
        return self._decisions.decide(kind, command, unsure=unsure)

    def _mark(self, verdict: Verdict, command: str) -> None:
        if self._decisions is not None:
            self._decisions.mark(verdict, command)

    async def _await_approval(self, verdict: Verdict, command: str, *, interactive: bool) -> tuple[bool, str]:
        """Hold until approved (True) or denied/expired/cancelled (False, why)."""
        assert self._decisions is not None
        screen = self._tracker.snapshot() if self._tracker is not None else f"$ {command}"
        return await self._decisions.await_approval(verdict, command, screen=screen, interactive=interactive)

    # -- the gate: exec commands and subsystems, before anything runs upstream -------------

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        self._io = io
        self._decisions = CommandDecisions(self._ctx, info, io)
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

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        if self._tracker is not None:
            self._tracker.output(data)
        return data

    def on_resize(self, width: int, height: int) -> None:
        if self._tracker is not None:
            self._tracker.resize(width, height)

    def on_input(self, data: bytes) -> bytes:
        tracker = self._tracker
        if self._held is not None:
            if self._awaiting:
                if b"\x03" in data and self._decisions is not None:
                    self._decisions.cancelled = True  # Ctrl-C cancels a hold; nothing else gets through
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
        assert self._decisions is not None
        self._decisions.cancelled, self._awaiting = b"\x03" in self._typeahead, True
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
        if self._decisions is not None:
            self._decisions.end()
        if self._task is not None and not self._task.done():
            self._task.cancel()
