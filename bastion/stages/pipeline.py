"""The session's input and output paths: one ordered list of stages every byte passes.

The relay knows nothing about recording, masking or screening; it hands each chunk to the
pipeline and forwards what comes back. A stage may return fewer bytes than it was given (a
masker holding a possible secret's tail, a screener holding an Enter) and release them later
through `SessionIO`. A stage that raises ends the session: fail closed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from bastion.core.shellscope import analyze
from bastion.errors import BastionError
from recorder.transfers import SessionKind, Transfer, transfer_of

VINTR = 1  # RFC 4254 terminal mode: the interrupt character


class Stream(IntEnum):
    STDOUT = 0
    STDERR = 1


@dataclass
class SessionInfo:
    """What a stage may want to know about the session it is attached to."""

    session_id: str
    channel: int
    user: str
    target: str
    login: str
    client_address: str
    client_version: str
    kind: SessionKind
    command: str | None = None
    subsystem: str | None = None
    term_type: str | None = None
    width: int = 0
    height: int = 0
    key_id: str = ""
    serial: int = 0
    env: dict[str, str] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    term_modes: dict[int, int] = field(default_factory=dict)
    machine: bool = False  # a CI job or an agent, signed in with its platform's token
    workload: tuple[tuple[str, str], ...] = ()  # what its token said: repository, ref, run id, ...
    allow_shell: bool = True

    @property
    def has_pty(self) -> bool:
        return self.term_type is not None

    @property
    def transfer(self) -> Transfer | None:
        """The file-transfer protocol the session speaks (sftp, scp, rsync), None for a terminal."""
        return transfer_of(self.kind, self.command, self.subsystem)

    @property
    def runs_a_shell(self) -> bool:
        """A shell, or a command that reads commands from the session's input (`bash`, `sh -s`,
        `python3 -`, `psql`): a shell by another name."""
        if self.kind is SessionKind.SHELL:
            return True
        return self.kind is SessionKind.EXEC and bool(analyze(self.command or "").stdin)

    @functools.cached_property
    def may_carry_data(self) -> bool:
        """Whether this session's streams may be found to be data (`bastion.core.datastream`):
        a command run without a terminal, not a file transfer, that does not read commands from
        the session's input. A shell without a terminal (`ssh -T host`, `ssh host bash`, `ssh
        host psql`) never is: a NUL in its first output must not leave the rest of the session
        unmasked and unrecorded."""
        if self.has_pty or self.transfer is not None or self.kind != SessionKind.EXEC:
            return False
        return not analyze(self.command or "").stdin  # "shell", "code", "console": commands on stdin

    @property
    def interrupt_key(self) -> bytes:
        """The key the target's terminal turns into SIGINT (Ctrl-C unless the client said)."""
        code = self.term_modes.get(VINTR, 3)
        return bytes([code]) if 0 < code < 256 else b"\x03"


class SessionIO(Protocol):
    """What a stage can do to its session outside the call it is in."""

    def to_target(self, data: bytes) -> None:
        """Send bytes upstream (e.g. a held line, released)."""

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        """Send bytes to the user (e.g. a status line, or output released late)."""

    def say(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        """The bastion's own words to the user (denied, waiting for approval, approved): sent,
        and recorded as the output they were, so the replay shows what the user read."""

    def end(self, reason: str) -> None:
        """End the session, telling the user `reason` in one line."""

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        """Output `stage` held back, now released: it passes the stages after it, then out."""

    def marker(self, kind: str, text: str = "") -> None:
        """Something notable happened (a mask, a decision): every stage and the log hear it."""

    def hold_output(self, reason: str) -> None:
        """Stop reading from the target until `release_output(reason)` (back-pressure)."""

    def release_output(self, reason: str) -> None:
        """Undo `hold_output(reason)`."""

    def hold_input(self, reason: str) -> None:
        """Stop reading from the client until `release_input(reason)` (a command or request held)."""

    def release_input(self, reason: str) -> None:
        """Undo `hold_input(reason)`."""

    def input_eof(self) -> None:
        """Send the end of input to the target (after a stage that took it over released all)."""

    def watch_input(self, watcher: Callable[[bytes], None] | None) -> None:
        """While the session's gates run (nothing reached the target yet): read what the user
        types, show it to `watcher`, and keep it for the session's start (bounded; past that
        reading pauses). None: stop (reading pauses until the session starts)."""


class SessionStage:
    """Base stage: passes everything through. Override what you need."""

    name = "stage"

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        """Called before any byte moves. Raising here refuses the session."""

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        """Before the session runs anything upstream: None to go on, or a one-line refusal."""
        return None

    def on_input(self, data: bytes) -> bytes:
        return data

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        return data

    def on_target_output(self, data: bytes, stream: Stream) -> None:
        """The output as the target sent it, before any stage changed it (the masker does):
        for a stage that must read what the target really showed. Never forwarded from here."""

    def flush_output(self, stream: Stream) -> bytes:
        """Output this stage still holds, asked for once the target sent EOF."""
        return b""

    def on_input_eof(self) -> bool:
        """The client's input ended. True: this stage sends the EOF itself (`SessionIO.input_eof`)
        once what it holds is decided."""
        return False

    def on_resize(self, width: int, height: int) -> None:
        """The client's window changed."""

    def on_marker(self, kind: str, text: str) -> None:
        """A stage reported something notable (see `SessionIO.marker`)."""

    def on_bastion_output(self, data: bytes, stream: Stream) -> None:
        """The bastion itself told the user `data` (see `SessionIO.say`)."""

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        """The session is over; release resources. Must not raise."""


class StageFailed(BastionError):
    """A stage could not do its job; the session must not go on without it (it ends with
    `exit_code`, the user told why)."""

    code = "stage_failed"
    exit_code = 255

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}"


class SessionPipeline:
    """Runs chunks through the stages in order; an empty result stops the chain early."""

    def __init__(self, stages: list[SessionStage]) -> None:
        self.stages = stages
        self._readers = [s for s in stages if type(s).on_target_output is not SessionStage.on_target_output]

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        for stage in self.stages:
            self._guard(stage, stage.start, info, io)

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        for stage in self.stages:
            try:
                refusal = await stage.gate(info, io)
            except Exception as exc:
                raise StageFailed(stage.name, str(exc) or type(exc).__name__) from exc
            if refusal:
                return refusal
        return None

    def input(self, data: bytes) -> bytes:
        for stage in self.stages:
            if not data:
                break
            data = self._guard(stage, stage.on_input, data)
        return data

    def input_eof(self) -> bool:
        """True when a stage took the EOF over (it sends it later)."""
        return any(self._guard(stage, stage.on_input_eof) for stage in self.stages)

    def output(self, data: bytes, stream: Stream, *, stages: list[SessionStage] | None = None) -> bytes:
        if stages is None:  # straight from the target (output released late was read on arrival)
            for reader in self._readers:
                self._guard(reader, reader.on_target_output, data, stream)
        for stage in self.stages if stages is None else stages:
            if not data:
                break
            data = self._guard(stage, stage.on_output, data, stream)
        return data

    def flush_output(self, stream: Stream) -> bytes:
        """Drain every stage in order: what one releases still passes the ones after it."""
        out = b""
        for stage in self.stages:
            if out:
                out = self._guard(stage, stage.on_output, out, stream)
            out += self._guard(stage, stage.flush_output, stream)
        return out

    def resize(self, width: int, height: int) -> None:
        for stage in self.stages:
            self._guard(stage, stage.on_resize, width, height)

    def output_after(self, after: SessionStage, data: bytes, stream: Stream) -> bytes:
        """Run `data` through the stages that follow `after` only."""
        return self.output(data, stream, stages=self.stages[self.stages.index(after) + 1:])

    def marker(self, kind: str, text: str) -> None:
        for stage in self.stages:
            self._guard(stage, stage.on_marker, kind, text)

    def bastion_output(self, data: bytes, stream: Stream) -> None:
        for stage in self.stages:
            self._guard(stage, stage.on_bastion_output, data, stream)

    def end(self, exit_status: int | None, exit_signal: str | None) -> None:
        # Last stage first: what a stage reports as it ends (a cancelled approval) still
        # reaches the stages before it (the recorder) while they are open.
        for stage in reversed(self.stages):
            try:
                stage.on_end(exit_status, exit_signal)
            except Exception:  # noqa: BLE001, S112 - one stage's cleanup must not skip the next
                continue

    @staticmethod
    def _guard(stage: SessionStage, method, *args):  # type: ignore[no-untyped-def]
        try:
            return method(*args)
        except StageFailed:
            raise
        except Exception as exc:
            raise StageFailed(stage.name, str(exc) or type(exc).__name__) from exc
