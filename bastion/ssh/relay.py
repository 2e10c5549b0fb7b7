"""One inner session channel relayed to one upstream channel, through the session pipeline.

`InnerSession` receives the OpenSSH client's requests (pty, env, shell/exec/subsystem, data,
window changes, signals, EOF); `UpstreamSession` receives the target's replies. `SessionRelay`
owns both and is the only place that moves bytes between them. Flow control is symmetric:
when one side's send buffer fills, reading from the other side pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from bastion import metrics
from bastion.core.masker import TextMasker
from bastion.stages.pipeline import SessionInfo, SessionPipeline, SessionStage, StageFailed, Stream
from recorder.transfers import SessionKind

STDERR = asyncssh.EXTENDED_DATA_STDERR


EOF_HOLD = 0.5  # seconds the target's EOF waits for its exit status (see target_eof)
EARLY_INPUT = 64 * 1024  # what a gate reading the user's input keeps before the session starts


class _Pause:
    """Reading pauses while any reason holds it (waiting for upstream, peer buffer full...)."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause, self._resume, self._reasons = pause, resume, set[str]()

    def hold(self, reason: str) -> None:
        if not self._reasons:
            self._pause()
        self._reasons.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self._resume()


class SessionRelay:
    """Both halves of one session and the pipeline between them."""

    def __init__(
        self,
        *,
        info: SessionInfo,
        upstream: asyncssh.SSHClientConnection,
        pipeline: SessionPipeline,
        env_allow: tuple[str, ...],
        on_end: Callable[[SessionRelay], None],
        masker: TextMasker,
        on_start: Callable[[SessionRelay], None] | None = None,
    ) -> None:
        self.info = info
        self.pipeline = pipeline
        self._masker = masker  # the text of markers
        self.started = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None
        self._target_eof = False
        self._eof_hold: asyncio.TimerHandle | None = None  # the target's EOF waiting for its exit status
        self._client_exited = False
        self.end_reason: str | None = None
        self.markers: dict[str, int] = {}
        self._upstream_conn = upstream
        self._env_allow = env_allow
        self._on_end = on_end
        self._on_start = on_start
        self._client: asyncssh.SSHServerChannel[bytes] | None = None
        self._target: asyncssh.SSHClientChannel[bytes] | None = None
        self._client_reading: _Pause | None = None
        self._target_reading: _Pause | None = None
        self._term_pixels = (0, 0)
        # Input that arrives before the upstream channel is open (bounded by the SSH window,
        # since reading is paused until then).
        self._early_input: list[bytes] = []
        self._early_size = 0
        self._input_watcher: Callable[[bytes], None] | None = None  # a gate reading what is typed
        self._pending_eof = False
        self._ended = False

    # -- requests from the client (called by InnerSession) -------------------------------

    def client_opened(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._client = chan
        self._client_reading = _Pause(chan.pause_reading, chan.resume_reading)

    def pty_requested(self, term_type: str, size: tuple[int, int, int, int], modes: dict[int, int]) -> None:
        self.info.term_type = term_type
        self.info.width, self.info.height = size[0], size[1]
        self.info.term_modes = dict(modes)
        self._term_pixels = size[2], size[3]

    def client_started(self) -> None:
        """Shell/exec/subsystem accepted: open the upstream channel before reading input."""
        assert self._client_reading is not None
        self._client_reading.hold("upstream")
        if self._on_start is not None:
            self._on_start(self)  # what the client asked for is known now (shell, exec, subsystem)
        asyncio.get_running_loop().create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        assert self._client is not None
        env = {
            name: value
            for name, value in self._client.get_environment().items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self._env_allow)
        }
        self.info.env = env
        try:
            self.pipeline.start(self.info, self)
            refusal = await self.pipeline.gate(self.info, self)
        except StageFailed as exc:
            self._refuse(f"bastion: cannot start session: {exc.stage}: {exc.reason}", status=exc.exit_code)
            return
        if refusal:
            self._refuse(refusal, status=1)
            return
        if self._ended:
            return
        kwargs: dict[str, Any] = {"env": env, "encoding": None}
        if self.info.term_type is not None:
            kwargs.update(
                request_pty="force",
                term_type=self.info.term_type,
                term_size=(self.info.width, self.info.height, *self._term_pixels),
                term_modes=self.info.term_modes,
            )
        else:
            kwargs["request_pty"] = False
        try:
            chan, _ = await self._upstream_conn.create_session(
                lambda: UpstreamSession(self),
                self.info.command,
                subsystem=self.info.subsystem,
                **kwargs,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc)
            self._refuse(f"bastion: {self.info.target} refused the session: {reason}")
            return
        if self._ended:
            chan.close()
            return
        self._target = chan
        self._target_reading = _Pause(chan.pause_reading, chan.resume_reading)
        assert self._client_reading is not None
        early, self._early_input, self._early_size = self._early_input, [], 0
        for data in early:
            self._input(data)
        self._client_reading.release("upstream")
        if self._pending_eof:
            self.client_eof()

    def _refuse(self, message: str, status: int = 255) -> None:
        if self._ended:
            return  # the client left while the gate decided (an approval wait): nobody to tell
        self.end_reason = message
        if self._client is not None:
            self.say(message.encode() + b"\r\n", Stream.STDERR)
            self._client.exit(status)

    def client_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._target is None:
            # Typed before the upstream channel (and the pipeline) started: it goes through
            # the pipeline then, like everything else.
            self._early_input.append(data)
            self._early_size += len(data)
            if self._input_watcher is not None:
                self._input_watcher(data)
                if self._early_size > EARLY_INPUT and self._client_reading is not None:
                    self._client_reading.hold("upstream")  # enough kept: the rest waits in the SSH window
        else:
            self._input(data)

    def _input(self, data: bytes) -> None:
        assert self._target is not None
        try:
            data = self.pipeline.input(data)
        except StageFailed as exc:
            self._stage_failed(exc)
            return
        if data:
            self._target.write(data)

    def client_eof(self) -> None:
        if self._target is None:
            self._pending_eof = True
            return
        try:
            taken = self.pipeline.input_eof()
        except StageFailed as exc:
            self._stage_failed(exc)
            return
        if not taken:
            self._target.write_eof()

    def client_resized(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.info.width, self.info.height = width, height
        try:
            self.pipeline.resize(width, height)
        except StageFailed as exc:
            self._stage_failed(exc)
            return
        if self._target is not None:
            self._target.change_terminal_size(width, height, pixwidth, pixheight)

    def client_break(self, msec: int) -> None:
        if self._target is not None:
            self._target.send_break(msec)

    def client_signal(self, signal: str) -> None:
        if self._target is not None:
            self._target.send_signal(signal)

    def client_closed(self) -> None:
        if self._target is not None:
            self._target.close()
        self._finish()

    # -- flow control -------------------------------------------------------------------

    def client_buffer_full(self) -> None:
        if self._target_reading:
            self._target_reading.hold("client")

    def client_buffer_drained(self) -> None:
        if self._target_reading:
            self._target_reading.release("client")

    def target_buffer_full(self) -> None:
        if self._client_reading:
            self._client_reading.hold("target")

    def target_buffer_drained(self) -> None:
        if self._client_reading:
            self._client_reading.release("target")

    # -- replies from the target (called by UpstreamSession) -----------------------------

    def target_data(self, data: bytes, datatype: int | None) -> None:
        if self._ended:
            return  # the session ended while this was on its way: nobody to show it to
        stream = Stream.STDERR if datatype == STDERR else Stream.STDOUT
        self.bytes_out += len(data)
        try:
            data = self.pipeline.output(data, stream)
        except StageFailed as exc:
            self._stage_failed(exc)
            return
        if data:
            self.to_client(data, stream)

    # The target's end, passed on in the order clients rely on: the exit status, then EOF and
    # close. sshd sends its EOF when the program's output ends and the exit status when the
    # program exits, in either order; a client that has sent its own EOF may close the channel
    # as soon as EOF arrives (PuTTY's plink does), and an exit status coming after that is lost
    # (plink then exits 0). So the target's EOF waits up to EOF_HOLD for the exit status (or the
    # close), and the two go on together; a program that closes its output and keeps running
    # gets its EOF passed on when the wait is over.

    def target_eof(self) -> None:
        self._flush_output()
        self._target_eof = True
        if self.exit_status is not None or self.exit_signal is not None:
            self._exit_client()
        elif self._client is not None and self._eof_hold is None:
            self._eof_hold = asyncio.get_running_loop().call_later(EOF_HOLD, self._pass_eof)

    def _pass_eof(self) -> None:
        self._eof_hold = None
        if self._client is not None and not self._client_exited:
            self._client.write_eof()

    def target_exit_status(self, status: int) -> None:
        self.exit_status = status
        if self._target_eof:
            self._exit_client()

    def target_exit_signal(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)
        if self._target_eof:
            self._exit_client()

    def target_closed(self) -> None:
        self._flush_output()
        self._exit_client()
        self._finish()

    def _exit_client(self) -> None:
        """The target's exit status (or signal) to the client, with EOF and close: no more output
        can come (the target sent EOF, or closed)."""
        if self._eof_hold is not None:
            self._eof_hold.cancel()
            self._eof_hold = None
        client = self._client
        if client is None or self._client_exited:
            return
        self._client_exited = True
        if self.exit_signal is not None:
            client.exit_with_signal(*self.exit_signal)
        elif self.exit_status is not None:
            client.exit(self.exit_status)
        else:
            client.close()

    def _flush_output(self) -> None:
        for stream in Stream:
            try:
                data = self.pipeline.flush_output(stream)
            except StageFailed:
                continue
            if data:
                self.to_client(data, stream)

    # -- SessionIO: what pipeline stages may do ------------------------------------------

    def to_target(self, data: bytes) -> None:
        if self._target is not None:
            self._target.write(data)

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        if self._client is None:
            return
        # With a pty the target sends one stream (its programs' stderr arrives in its stdout), and
        # the bastion's words go the same way: OpenSSH writes what it holds for stdout before what
        # it holds for stderr, so a notice sent on stderr just before output could be drawn after it.
        if stream is Stream.STDERR and not self.info.has_pty:
            self._client.write_stderr(data)
        else:
            self._client.write(data)

    def say(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.to_client(data, stream)
        try:
            self.pipeline.bastion_output(data, stream)
        except StageFailed as exc:
            self._stage_failed(exc)

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        if self._ended:
            return
        try:
            data = self.pipeline.output_after(stage, data, stream)
        except StageFailed as exc:
            self._stage_failed(exc)
            return
        if data:
            self.to_client(data, stream)

    def marker(self, kind: str, text: str = "") -> None:
        self.markers[kind] = self.markers.get(kind, 0) + 1
        try:
            # Markers quote commands, and commands can carry secrets: masked once, here.
            self.pipeline.marker(kind, self._masker.mask(text))
        except StageFailed as exc:
            self._stage_failed(exc)

    def hold_output(self, reason: str) -> None:
        if self._target_reading is not None:
            self._target_reading.hold(reason)

    def release_output(self, reason: str) -> None:
        if self._target_reading is not None:
            self._target_reading.release(reason)

    def hold_input(self, reason: str) -> None:
        if self._client_reading is not None:
            self._client_reading.hold(reason)

    def release_input(self, reason: str) -> None:
        if self._client_reading is not None:
            self._client_reading.release(reason)

    def watch_input(self, watcher: Callable[[bytes], None] | None) -> None:
        if self._target is not None or self._client_reading is None:
            return  # the session runs: its input goes through the pipeline
        self._input_watcher = watcher
        if watcher is not None and self._early_size <= EARLY_INPUT:
            self._client_reading.release("upstream")
        elif watcher is None:
            self._client_reading.hold("upstream")

    def input_eof(self) -> None:
        if self._target is not None and not self._ended:
            self._target.write_eof()

    def _stage_failed(self, exc: StageFailed) -> None:
        self.end(f"bastion: session ended: {exc.stage} failed: {exc.reason}", status=exc.exit_code)

    def end(self, reason: str, status: int = 255) -> None:
        """End the session with one line to the user (fail closed) and exit status `status`."""
        if self._ended:
            return
        self.end_reason = reason
        if self._client is not None:
            line = reason.encode("utf-8", "replace") + b"\r\n"
            self._client.write_stderr(line)
            with contextlib.suppress(StageFailed):  # the recorder may be what failed
                self.pipeline.bastion_output(line, Stream.STDERR)
            if not self._client_exited:
                self._client_exited = True
                self._client.exit(status)
        if self._target is not None:
            self._target.close()
        self._finish()

    def _finish(self) -> None:
        if self._eof_hold is not None:
            self._eof_hold.cancel()
            self._eof_hold = None
        if self._ended:
            return
        self._ended = True
        signal = self.exit_signal[0] if self.exit_signal else None
        self.pipeline.end(self.exit_status, signal)
        self._on_end(self)


class InnerSession(asyncssh.SSHServerSession[bytes]):
    """Adapter: asyncssh server-session callbacks -> SessionRelay."""

    def __init__(self, relay: SessionRelay, *, allow_subsystems: frozenset[str]) -> None:
        self._relay = relay
        self._subsystems = allow_subsystems

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._relay.client_opened(chan)

    def pty_requested(  # type: ignore[override]
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: dict[int, int]
    ) -> bool:
        self._relay.pty_requested(term_type, term_size, term_modes)
        return True

    def shell_requested(self) -> bool:
        self._relay.info.kind = SessionKind.SHELL
        return True

    def exec_requested(self, command: str) -> bool:
        self._relay.info.kind, self._relay.info.command = SessionKind.EXEC, command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem not in self._subsystems:
            return False
        self._relay.info.kind, self._relay.info.subsystem = SessionKind.SUBSYSTEM, subsystem
        return True

    def session_started(self) -> None:
        metrics.SESSIONS.labels(kind=self._relay.info.kind.value).inc()
        self._relay.client_started()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self._relay.client_data(data)

    def eof_received(self) -> bool:
        self._relay.client_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._relay.client_resized(width, height, pixwidth, pixheight)

    def break_received(self, msec: int) -> bool:
        self._relay.client_break(msec)
        return True

    def signal_received(self, signal: str) -> None:
        self._relay.client_signal(signal)

    def pause_writing(self) -> None:
        self._relay.client_buffer_full()

    def resume_writing(self) -> None:
        self._relay.client_buffer_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.client_closed()


class UpstreamSession(asyncssh.SSHClientSession[bytes]):
    """Adapter: asyncssh client-session callbacks -> SessionRelay.

    The packets of one read from the target's socket (up to 256 KB, 32 KB each) go through the
    pipeline as one chunk, right after that read: masking, recording and screening pay their
    cost per chunk once instead of once per packet, and nothing waits on a timer.
    """

    def __init__(self, relay: SessionRelay) -> None:
        self._relay = relay
        self._pending: list[bytes] = []
        self._pending_type: int | None = None
        self._flush_scheduled = False

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self._pending and datatype != self._pending_type:
            self._flush()  # stdout and stderr stay apart, in order
        self._pending.append(data)
        self._pending_type = datatype
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Whatever arrived goes on now (before any other event of the channel)."""
        self._flush_scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._relay.target_data(pending[0] if len(pending) == 1 else b"".join(pending), self._pending_type)

    def eof_received(self) -> bool:
        self._flush()
        self._relay.target_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self._flush()
        self._relay.target_exit_status(status)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._flush()
        self._relay.target_exit_signal(signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self._relay.target_buffer_full()

    def resume_writing(self) -> None:
        self._relay.target_buffer_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()
        self._relay.target_closed()
