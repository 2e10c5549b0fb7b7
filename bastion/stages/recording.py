"""The recorder as a session stage: every session's bytes become an asciicast recording."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from bastion import metrics
from bastion.config import OnFailure, RecordingSettings
from bastion.core.datastream import DataTally, StreamKinds
from bastion.core.hidden import HiddenInput
from bastion.core.masker import MaskResult, SecretMasker, TextMasker
from bastion.core.screenview import NOT_SGR
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from bastion.state.audit import AuditLog
from bastion.state.events import DataStream, SecretDrawn
from recorder.log import RecordingFailure
from recorder.transfers import ScpTransferParser, SessionKind, SftpTransferParser, Transfer
from recorder.writer import Recorder, RecordingFailed, SessionRecording

DEFAULT_SIZE = (80, 24)
KEYFRAMES_FROM = 256 * 1024  # output bytes from which a session's keyframes are built ahead


class KeyframeBuilds:
    """Builds the player's keyframes of long sessions as they end, one at a time, in a niced
    process (`python -m player.keyframes`), so that a reviewer's first open seeks at once. A
    cache that cannot be built is only a slower first open: failures are not reported."""

    def __init__(self, recordings_dir: Path, index: Path | str) -> None:
        self.cache = recordings_dir / "keyframes"
        self.index = index  # a file, or a PostgreSQL URL (given in the environment, never in argv)
        self._waiting: deque[tuple[str, str]] = deque()
        self._running: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, location: str, session_id: str) -> None:
        self._waiting.append((location, session_id))
        self._next()

    def _next(self) -> None:
        if self._running is not None and self._running.poll() is None:
            return
        self._running = None
        if not self._waiting or self._loop is None or self._loop.is_closed():
            return
        location, session_id = self._waiting.popleft()
        command = [sys.executable, "-m", "player.keyframes", location, str(self.cache), session_id]
        environment = dict(os.environ, BASTION_RECORDINGS_INDEX=str(self.index))
        try:
            self._running = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, env=environment)
        except OSError:
            return
        self._loop.call_later(0.5, self._check)

    def _check(self) -> None:
        if self._running is not None and self._running.poll() is None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_later(0.5, self._check)
            return
        self._next()

    def stop(self) -> None:
        """The bastion stops: the build under way ends with it (the next open builds its own)."""
        self._waiting.clear()
        if self._running is not None and self._running.poll() is None:
            self._running.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._running.wait(5)
        self._running = None


class RecordingStage(SessionStage):
    """Records output, input, resizes, transfers and the exit; file contents are never kept.

    Without a pty, a stream whose first chunk is not text is data (`bastion.core.datastream`):
    its bytes are not recorded; a `data` marker says when and why it was decided, and at its end
    a `download` (stdout, stderr) or `upload` (stdin) marker and a `data_stream` audit event
    hold its size and SHA-256.
    """

    name = "recorder"

    def __init__(self, recorder: Recorder, settings: RecordingSettings, audit: AuditLog, *,
                 text_masker: TextMasker, masker: SecretMasker | None = None,
                 input_masker: SecretMasker | None = None, keyframes: KeyframeBuilds | None = None) -> None:
        self._recorder = recorder
        self._keyframes = keyframes
        self._text_masker = text_masker  # the command in the header and the index, always
        self._masker = masker  # set when masking applies to the recording only
        # Set whenever masking is on: a token pasted at a prompt, or a secrets file sent on
        # stdin, is recorded masked. What reaches the target is never changed. The masker holds
        # a possible secret until the next keystroke shows what it is (no timer: a token typed
        # by hand, key by key, is still seen whole).
        self._input_masker = input_masker
        self._hidden = HiddenInput(self._hidden_input)
        self._echo_timer: asyncio.TimerHandle | None = None
        self._on_failure = settings.on_failure
        self._audit = audit
        self._rec: SessionRecording | None = None
        self._info: SessionInfo | None = None
        self._transfer: Transfer | None = None  # a file transfer's bytes are never recorded
        self._sftp: SftpTransferParser | None = None
        self._scp: ScpTransferParser | None = None
        self._stream = Stream.STDOUT
        self._bytes_in = 0
        self._bytes_out = 0
        # Output with an escape sequence other than colours: a replay must draw it (moves,
        # modes, erases), so keyframes ahead help. Text, line ends and colours the player skips
        # at about 150 MB/s: its first open is quick without them, and their build is not paid.
        self._draws = False
        self._kinds: StreamKinds | None = None  # set for sessions without a pty
        self._data: dict[str, DataTally] = {}  # the data streams, by name
        self._io: SessionIO | None = None

    @property
    def recording(self) -> SessionRecording | None:
        return self._rec

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        self._info = info
        self._io = io
        self._transfer = info.transfer
        if info.may_carry_data:
            self._kinds = StreamKinds()
        self._hidden = HiddenInput(self._hidden_input, terminal=info.has_pty)
        width, height = (info.width, info.height) if info.has_pty else DEFAULT_SIZE
        if self._masker is not None and info.has_pty:  # masking the recording only: its screen too
            self._masker.on_screen(width or DEFAULT_SIZE[0], height or DEFAULT_SIZE[1])
        # Commands can carry secrets (mysql -pPASSWORD): what is stored is masked.
        command = info.command if info.kind is SessionKind.EXEC else info.subsystem
        if info.kind is SessionKind.EXEC and command:
            command = self._text_masker.mask(command)
        metadata = {
            "session_id": info.session_id, "user": info.user, "login": info.login,
            "target": info.target, "client_address": info.client_address,
            "client_version": info.client_version, "kind": info.kind, "pty": info.has_pty,
            "key_id": info.key_id, "serial": info.serial,
        }
        if info.subsystem:
            metadata["subsystem"] = info.subsystem
        workload = dict(info.workload) if info.machine else None
        if workload is not None:
            metadata["machine"] = True
            metadata["workload"] = workload
        try:
            self._rec = self._recorder.open(
                session_id=info.session_id, width=width or DEFAULT_SIZE[0],
                height=height or DEFAULT_SIZE[1], term=info.term_type, command=command,
                metadata=metadata,
                index_fields={"user": info.user, "login": info.login, "target": info.target,
                              "client": info.client_address, "kind": info.kind, "command": command,
                              **({"workload": json.dumps(workload, sort_keys=True)} if workload else {})},
            )
        except OSError as exc:
            reason = f"cannot write recording: {exc.strerror or exc}"
            self._audit.write(RecordingFailure(session=info.session_id, reason=reason))
            if self._on_failure is OnFailure.CONTINUE:
                return
            raise OSError(reason) from None
        if self._on_failure is not OnFailure.CONTINUE:
            self._rec.on_error = lambda reason: io.end(f"bastion: session ended: recorder failed: {reason}")
        self._rec.on_backlog = lambda full: (io.hold_output if full else io.release_output)("recorder")
        # Transfers are read for their markers where a parser knows the protocol (not rsync's).
        if self._transfer is Transfer.SFTP:
            self._sftp = SftpTransferParser(self._rec.marker)
        elif self._transfer is Transfer.SCP:
            self._scp = ScpTransferParser(info.command or "", self._rec.marker)

    def _usable(self) -> SessionRecording | None:
        """The recording, unless it failed under the explicit `continue` policy."""
        rec = self._rec
        if rec is not None and rec.error is not None:
            if self._on_failure is not OnFailure.CONTINUE:
                raise RecordingFailed(rec.error)
            self._rec = rec = None
        return rec

    def on_input(self, data: bytes) -> bytes:
        self._bytes_in += len(data)
        if self._data_stream("stdin", data):
            self._usable()
            return data
        rec = self._usable()
        if rec is None:
            return data
        if self._sftp is not None:
            self._sftp.client.feed(data)
        elif self._scp is not None:
            self._scp.from_client(data)
        elif self._transfer is None:
            self._record_input(rec, self._hidden.input(data, time.monotonic()))
        return data

    def _record_keys(self, rec: SessionRecording, keys: bytes) -> None:
        """Keys the hidden-input check let through: masked, then recorded."""
        if keys and self._input_masker is not None:
            keys = self._mask_input(rec, self._input_masker.feed(keys))
        if keys:
            rec.input(keys)

    def _record_input(self, rec: SessionRecording, keys: bytes) -> None:
        self._record_keys(rec, keys)
        deadline = self._hidden.deadline
        if deadline is not None and self._echo_timer is None:
            # A line waits for its echo: decide it at its deadline even if no output comes.
            delay = max(0.0, deadline - time.monotonic())
            self._echo_timer = asyncio.get_running_loop().call_later(delay, self._echo_deadline)

    def _echo_deadline(self) -> None:
        self._echo_timer = None
        rec = self._rec
        if rec is not None and rec.error is None:
            self._record_input(rec, self._hidden.due(time.monotonic()))

    @staticmethod
    def _mask_input(rec: SessionRecording, result: MaskResult) -> bytes:
        for name in result.masked:
            metrics.MASKING_HITS.labels(detector=name, direction="input").inc()
            rec.marker("masked", f"{name} (input)")
        return result.data

    def on_bastion_output(self, data: bytes, stream: Stream) -> None:
        """The bastion's own words to the user, recorded as the output they were (not masked:
        the commands they quote are masked already)."""
        rec = self._rec
        if rec is None or rec.error is not None or self._transfer is not None or self._sftp is not None \
                or self._scp is not None:
            return  # transfers keep markers only; their refusals are markers already
        if self._kinds is not None and self._kinds.is_data(stream.name.lower()):
            return
        if stream is not self._stream and self._info is not None and not self._info.has_pty:
            self._stream = stream
            rec.marker(stream.name.lower())
        rec.output(data)

    def _hidden_input(self, keystrokes: int) -> None:
        if self._rec is not None and self._rec.error is None:
            self._rec.marker("hidden-input", f"{keystrokes} keystrokes")

    # -- data streams ---------------------------------------------------------------------

    def _data_stream(self, name: str, data: bytes) -> bool:
        """Count and hash `data` if the stream `name` is data (deciding it on its first chunk)."""
        if self._kinds is None:
            return False
        decision = self._kinds.see(name, data)
        if decision is None or not self._kinds.is_data(name):
            return False
        tally = self._data.get(name)
        if tally is None:
            tally = self._data[name] = DataTally(decision.reason, time.monotonic())
            if self._io is not None:  # through the session: counted in `session_ended` too
                self._io.marker("data", f"{name} ({decision.reason})")
        tally.feed(data)
        return True

    def _data_ended(self, name: str, *, complete: bool) -> None:
        """The stream's summary, once: a transfer marker in the recording and an audit event."""
        tally = self._data.get(name)
        if tally is None or tally.ended:
            return
        tally.ended = True
        seconds = round(time.monotonic() - tally.started, 3)
        direction = "upload" if name == "stdin" else "download"
        digest = tally.hexdigest()
        self._mark(direction, f"{name} {tally.size} bytes sha256 {digest} in {seconds} s"
                              + ("" if complete else ", cut off by the session's end"))
        if self._info is not None:
            self._audit.write(DataStream(
                session=self._info.session_id, stream=name, direction=direction,
                reason=tally.reason, size=tally.size, sha256=digest, seconds=seconds,
                complete=complete))

    def _mark(self, kind: str, text: str) -> None:
        rec = self._rec
        if rec is not None and rec.error is None:
            rec.marker(kind, text)

    def on_target_output(self, data: bytes, stream: Stream) -> None:
        # The target's own bytes, as the masker decides on them: a data stream reaches the user
        # unmasked, so these are the bytes the user gets and the hash is theirs.
        self._data_stream(stream.name.lower(), data)

    def on_input_eof(self) -> bool:
        self._data_ended("stdin", complete=True)
        return False

    def flush_output(self, stream: Stream) -> bytes:
        self._data_ended(stream.name.lower(), complete=True)
        return b""

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        self._bytes_out += len(data)
        rec = self._usable()
        if rec is None:
            return data
        if self._kinds is not None and self._kinds.is_data(stream.name.lower()):
            return data
        if self._sftp is not None:
            self._sftp.server.feed(data)
            return data
        if self._scp is not None:
            self._scp.from_server(data)
            return data
        if self._transfer is not None:
            return data
        if stream is not self._stream and self._info is not None and not self._info.has_pty:
            # Non-pty sessions keep stdout and stderr apart: output after a `stderr` marker
            # came from stderr until a `stdout` marker says otherwise.
            self._stream = stream
            rec.marker(stream.name.lower())
        recorded = data
        if self._masker is not None:
            result = self._masker.feed(data)
            recorded = result.data
            for name in result.masked:
                metrics.MASKING_HITS.labels(detector=name, direction="output").inc()
                rec.marker("masked", name)
            for secret in result.drawn:
                rec.marker("secret-drawn", secret)
                if self._info is not None:
                    detector, _, where = secret.partition(" (")
                    self._audit.write(SecretDrawn(session=self._info.session_id, detector=detector,
                                                  where=where.rstrip(")")))
        # Keys whose echo this is are recorded first: they came before it.
        self._record_input(rec, self._hidden.output(recorded, time.monotonic()))
        if recorded:
            if not self._draws and b"\x1b" in recorded and NOT_SGR.search(recorded) is not None:
                self._draws = True
            rec.output(recorded)
        return data

    def on_marker(self, kind: str, text: str) -> None:
        rec = self._usable()
        if rec is not None:
            rec.marker(kind, text)

    def on_resize(self, width: int, height: int) -> None:
        if self._masker is not None:
            self._masker.resize(width, height)
        rec = self._usable()
        if rec is not None:
            rec.resize(width, height)

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        for name in list(self._data):
            self._data_ended(name, complete=False)
        if self._echo_timer is not None:
            self._echo_timer.cancel()
            self._echo_timer = None
        if self._rec is not None and self._rec.error is None:
            self._record_keys(self._rec, self._hidden.flush(time.monotonic()))
            if self._input_masker is not None:
                typed = self._mask_input(self._rec, self._input_masker.flush())
                if typed:
                    self._rec.input(typed)
            if self._masker is not None:
                tail = self._masker.flush()
                if tail.data:
                    self._rec.output(tail.data)
        if self._rec is not None:
            self._rec.close(exit_status=exit_status, exit_signal=exit_signal,
                            bytes_in=self._bytes_in, bytes_out=self._bytes_out)
            if (self._keyframes is not None and self._rec.error is None and self._bytes_out >= KEYFRAMES_FROM
                    and self._draws):
                location = self._rec.index_row.get("location")
                if location:
                    self._keyframes.add(str(location), self._rec.session_id)

