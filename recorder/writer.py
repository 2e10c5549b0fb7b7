"""The recorder's session side: sessions queue events on the event loop; a worker writes them.

`SessionRecording` methods are cheap and never touch the disk: they gather events and hand
them, a batch at a time, to the writer (`recorder.worker.WriterCore`). The writer runs in a
worker process when the store's files can be passed to one (local files, the bastion's case),
otherwise in a thread. It appends each recording's lines at least every `flush_interval` seconds
(so a killed bastion loses at most that much; a worker process even writes what it was sent
after the bastion died), extends the hash chain, and every `checkpoint_interval` makes the file
durable (fsync) and signs a checkpoint covering it. A write error, or a worker that died, marks
the recording failed and calls its `on_error` on the event loop: the session decides what next.

Back-pressure is per recording: past `BACKLOG_HIGH` bytes handed over but not yet written,
`on_backlog(True)` asks the session to stop reading from the target; below `BACKLOG_LOW` it may
read again. A slow disk slows the session down instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, assert_never, runtime_checkable

from recorder.asciicast import V2, CastEncoder, build_header
from recorder.frames import FrameReader, frame
from recorder.index import RecordingIndex
from recorder.log import IndexFailed, LogEvent, RecorderWorkerExited, RecordingFailure
from recorder.messages import (
    Close,
    Event,
    Events,
    Exit,
    Failed,
    Flush,
    FromWriter,
    Input,
    Log,
    Marker,
    Open,
    Output,
    Resize,
    Start,
    ToWriter,
    Written,
)
from recorder.signing import RecordingKey
from recorder.storage import RecordingStore, dated_name
from recorder.worker import Received, WriterCore, run

_STOP = object()
BACKLOG_HIGH = 8 * 1024 * 1024
BACKLOG_LOW = 2 * 1024 * 1024
HANDOFF_BYTES = 256 * 1024


@runtime_checkable
class _Descriptor(Protocol):
    """A file a worker process can be handed."""

    def fileno(self) -> int: ...


class RecordingFailed(Exception):
    """The recording cannot be written; the session must not go on unrecorded."""


class SessionRecording:
    """One session's recording. Call from one thread (the event loop)."""

    def __init__(self, recorder: Recorder, rid: int, session_id: str, name: str, *,
                 started: float) -> None:
        self.recorder = recorder
        self.rid = rid
        self.session_id = session_id
        self.name = name
        self.started = started
        self.markers: Counter[str] = Counter()
        self.error: str | None = None
        self.on_error: Callable[[str], None] | None = None
        self.on_backlog: Callable[[bool], None] | None = None
        self.closed = False
        self.index_row: dict[str, Any] = {}  # the index row as opened
        self.orphaned = False  # its worker process died while it was live
        self._queued = 0  # event bytes handed over
        self._written = 0  # of which the writer wrote
        self.behind_since: float | None = None  # monotonic: since when not all handed over is written
        self._batch: list[Event] = []  # events not yet handed to the writer
        self._batch_bytes = 0
        self._handoff_scheduled = False
        self._held = False

    def _elapsed(self) -> float:
        return time.time() - self.started

    def _put(self, event: Event, size: int) -> None:
        """Queue an event; it is encoded by the writer, off the session's event loop."""
        if self.error is not None:
            raise RecordingFailed(self.error)
        if not self.closed:
            self._queued += size
            self._batch.append(event)
            self._batch_bytes += size
            if self._batch_bytes >= HANDOFF_BYTES or self.recorder.loop is None:
                self._handoff()
            elif not self._handoff_scheduled:
                self._handoff_scheduled = True
                self.recorder.loop.call_later(self.recorder.flush_interval / 4, self._handoff)
            if not self._held and self._queued - self._written > BACKLOG_HIGH and self.on_backlog:
                self._held = True
                self.on_backlog(True)

    def _handoff(self) -> None:
        """Pass the events gathered on the event loop to the writer in one message."""
        self._handoff_scheduled = False
        if self._batch and self.error is None:
            if self.behind_since is None:  # once a batch, not once an event: off the data path
                self.behind_since = time.monotonic()
            self.recorder._send(Events(self.rid, self._batch, self._batch_bytes))
        self._batch = []
        self._batch_bytes = 0

    @property
    def backlog(self) -> int:
        """Event bytes handed over and not yet written."""
        return self._queued - self._written

    def _wrote(self, size: int) -> None:
        self._written += size
        if self._written >= self._queued:
            self.behind_since = None
        if self._queued - self._written < BACKLOG_LOW:
            self._unhold()

    def _failed(self, reason: str) -> None:
        if self.error is not None:
            return
        self.error = reason
        if self.on_error is not None:
            self.on_error(reason)
        self._unhold()  # nothing more is written: stop holding the session back

    def _unhold(self) -> None:
        if self._held:
            self._held = False
            if self.on_backlog:
                self.on_backlog(False)

    def output(self, data: bytes) -> None:
        self._put(Output(self._elapsed(), data), len(data))

    def input(self, data: bytes) -> None:
        self._put(Input(self._elapsed(), data), len(data))

    def resize(self, width: int, height: int) -> None:
        self._put(Resize(self._elapsed(), width, height), 16)

    def marker(self, kind: str, text: str = "") -> None:
        """A marker labelled `kind: text`; counts by kind go to the index."""
        self.markers[kind] += 1
        label = f"{kind}: {text}" if text else kind
        self._put(Marker(self._elapsed(), label), len(label))

    def close(self, *, exit_status: int | None = None, exit_signal: str | None = None,
              **summary: Any) -> None:
        """Flush the decoders, write the exit, sign the final checkpoint, update the index."""
        if self.closed:
            return
        elapsed = self._elapsed()
        with contextlib.suppress(RecordingFailed):
            self._put(Flush(elapsed), 0)
            if exit_status is not None or exit_signal is not None:
                self._put(Exit(elapsed, exit_status, exit_signal), 0)
        self.closed = True
        self._handoff()
        fields = dict(summary, ended=time.time(), duration=round(elapsed, 3), exit_status=exit_status,
                      exit_signal=exit_signal, markers=dict(self.markers))
        self.recorder._recordings.pop(self.rid, None)
        if self.orphaned:  # its writer died: nobody else will index the end
            self.recorder._index_failed(self, **fields)
        else:
            self.recorder._send(Close(self.rid, fields))


class Recorder:
    """Owns the store, the index, the signing key and the writer (a worker process or a thread).

    `process=True` writes in a worker process, started once `loop` is set; the store's files
    must then have a `fileno()`. Without it, or without a loop, a thread of this process writes.
    """

    def __init__(self, store: RecordingStore, index: RecordingIndex | None, key: RecordingKey, *,
                 version: int = V2, flush_interval: float = 0.5, checkpoint_interval: float = 2.0,
                 loop: asyncio.AbstractEventLoop | None = None, process: bool = False,
                 log: Callable[[LogEvent], None] | None = None, instance: str | None = None) -> None:
        self.store, self.index, self.key = store, index, key
        self.instance = instance  # the bastion instance whose sessions these are, in each index row
        self.version = version
        self.flush_interval = flush_interval
        self.checkpoint_interval = checkpoint_interval
        self.loop = loop
        self.process = process
        self.log = log or (lambda event: None)
        self._recordings: dict[int, SessionRecording] = {}
        self._ids = itertools.count(1)
        self._thread: _ThreadWriter | None = None
        self._worker: _WorkerProcess | None = None

    def open(self, *, session_id: str, width: int, height: int, term: str | None, command: str | None,
             metadata: dict[str, Any], index_fields: dict[str, Any]) -> SessionRecording:
        """Create the files and write the header now, so a store that cannot take it fails here."""
        started = time.time()
        name = dated_name(session_id, started)
        cast, signatures = self.store.create(name)
        header = CastEncoder(self.version).header(build_header(
            version=self.version, width=width, height=height, timestamp=int(started), term=term,
            command=command, metadata=metadata,
        ))
        try:
            cast.append(header)
            rid = next(self._ids)
            row = dict(index_fields, id=session_id, name=name, started=started,
                       location=self.store.location(name))
            if self.instance is not None:
                row["instance"] = self.instance
            message = Open(rid, session_id, self.version, header.decode(), row, (cast, signatures))
            if self.process and self.loop is not None:
                self._process_writer().open(message)
            else:
                self._thread_writer().send(message)
        except OSError:
            cast.close()
            signatures.close()
            self.store.delete(name)
            raise
        recording = SessionRecording(self, rid, session_id, name, started=started)
        recording.index_row = row
        self._recordings[rid] = recording
        return recording

    def figures(self) -> tuple[int, float]:
        """Of the live recordings: (event bytes handed over and not yet written, seconds the
        writer has been behind)."""
        live = [r for r in self._recordings.values() if r.error is None and r.backlog > 0]
        since = min((r.behind_since for r in live if r.behind_since is not None), default=None)
        return sum(r.backlog for r in live), 0.0 if since is None else time.monotonic() - since

    @property
    def worker_lost(self) -> str | None:
        """Why the worker process is gone, while it is (the next recording starts a new one)."""
        worker = self._worker
        return None if worker is None or worker.alive else worker.lost_reason

    def stop(self, timeout: float = 10) -> None:
        """Write what every recording was given; the writer stops once it is on disk."""
        for recording in list(self._recordings.values()):
            recording._handoff()
        if self._worker is not None:
            self._worker.stop(timeout)
        if self._thread is not None:
            self._thread.stop(timeout)

    def _send(self, message: ToWriter) -> None:
        if self._worker is not None and self._worker.alive:
            self._worker.send(message)
        elif self._thread is not None:
            self._thread.send(message)

    def _reply(self, reply: FromWriter) -> None:
        """A writer's reply, on the event loop when there is one."""
        match reply:
            case Log():
                self.log(reply.event())
            case Written(rid, size):
                if (recording := self._recordings.get(rid)) is not None:
                    recording._wrote(size)
            case Failed(rid, reason):
                if (recording := self._recordings.get(rid)) is not None:
                    recording._failed(reason)
            case _:
                assert_never(reply)

    def _worker_lost(self, reason: str) -> None:
        """The worker process is gone: what it had not written is lost, its recordings failed
        (each with a `recording_failed` event, and so in the index, ended now)."""
        self.log(RecorderWorkerExited(reason=reason))
        for recording in list(self._recordings.values()):
            if recording.closed:
                continue
            # Orphaned first: failing it ends the session, which closes it at once, and that
            # close must be indexed here (nobody else will).
            recording.orphaned = True
            error = f"recording stopped: {reason}"
            if recording.error is None:
                self.log(RecordingFailure(session=recording.session_id, reason=error))
            recording._failed(error)
            if not recording.closed:
                elapsed = recording._elapsed()
                self._index_failed(recording, ended=recording.started + elapsed, duration=round(elapsed, 3))

    def _index_failed(self, recording: SessionRecording, **fields: Any) -> None:
        """Index a recording whose writer died; the writer would have done it otherwise."""
        if self.index is None:
            return
        try:
            if self.index.get(recording.session_id) is None:  # it died before indexing the open
                self.index.session_opened(**recording.index_row)
            self.index.session_updated(recording.session_id, state="failed", error=recording.error, **fields)
        except Exception as exc:  # noqa: BLE001 - whatever the index raises is reported; the session ends either way
            self.log(IndexFailed(session=recording.session_id, reason=str(exc)))

    def _thread_writer(self) -> _ThreadWriter:
        if self._thread is None:
            self._thread = _ThreadWriter(self)
        return self._thread

    def _process_writer(self) -> _WorkerProcess:
        if self._worker is None or not self._worker.alive:
            assert self.loop is not None
            self._worker = _WorkerProcess(self, self.loop)
        return self._worker


class _ThreadWriter:
    """The writer in a thread of this process: replies reach the loop by `call_soon_threadsafe`."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._queue: queue.SimpleQueue[ToWriter | object] = queue.SimpleQueue()
        core = WriterCore(recorder.key, recorder.index, checkpoint_interval=recorder.checkpoint_interval,
                          reply=self._reply)
        self._thread = threading.Thread(target=run, args=(core, self._receive, recorder.flush_interval),
                                        name="recorder", daemon=True)
        self._thread.start()

    def send(self, message: ToWriter) -> None:
        self._queue.put(message)

    def stop(self, timeout: float) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _receive(self, timeout: float) -> Received:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Open | Events | Close):
            return item
        return False  # _STOP

    def _reply(self, reply: FromWriter) -> None:
        loop = self._recorder.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._recorder._reply, reply)
        else:
            self._recorder._reply(reply)


class _WorkerProcess:
    """`python -m recorder.worker`, fed over a socket pair without ever blocking the loop.

    What the socket does not take at once waits in `_out` (no copies) until it is writable; the
    recordings' back-pressure bounds how much that can be.
    """

    def __init__(self, recorder: Recorder, loop: asyncio.AbstractEventLoop) -> None:
        self._recorder, self._loop = recorder, loop
        self.lost_reason = ""
        self._data, data_child = socket.socketpair()
        self._files, files_child = socket.socketpair()
        with contextlib.suppress(OSError):
            self._data.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        fds = (data_child.fileno(), files_child.fileno())
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "recorder.worker", *map(str, fds)],
                                            pass_fds=fds, stdin=subprocess.DEVNULL)
        except OSError:
            self._data.close()
            self._files.close()
            raise
        finally:
            data_child.close()
            files_child.close()
        index = recorder.index
        self._data.sendmsg(frame(Start(recorder.key.raw().hex(), str(index.path) if index else None,
                                       recorder.flush_interval, recorder.checkpoint_interval)))
        self._data.setblocking(False)
        self._files.setblocking(False)
        self._out: deque[bytes | memoryview] = deque()
        self._writing = False
        self._sending_soon = False
        self._reader = FrameReader(64 * 1024)
        self.alive = True
        loop.add_reader(self._data, self._readable)

    def open(self, message: Open) -> None:
        """Hand over the files (then closed here) and the open; raises OSError if it cannot."""
        assert message.files is not None
        cast, signatures = message.files
        if not (isinstance(cast, _Descriptor) and isinstance(signatures, _Descriptor)):
            raise TypeError("a recorder process needs files with descriptors")
        socket.send_fds(self._files, [b"f"], [cast.fileno(), signatures.fileno()])
        cast.close()
        signatures.close()
        self.send(replace(message, files=None))
        self._send_now()
        if not self.alive:  # it died just now: this recording would go nowhere
            raise OSError(errno.EPIPE, "the recorder process exited")

    def send(self, message: ToWriter) -> None:
        """Queue `message`; what every session queues in one turn of the loop goes in one call."""
        if not self.alive:
            return
        self._out.extend(frame(message))
        if not self._writing and not self._sending_soon:
            self._sending_soon = True
            self._loop.call_soon(self._send_now)

    def _send_now(self) -> None:
        self._sending_soon = False
        if self.alive and self._out and not self._writing:
            self._writable()

    def _writable(self) -> None:
        """Send as much of `_out` as the socket takes; wait for writability for the rest."""
        try:
            sent = self._data.sendmsg(list(itertools.islice(self._out, 512)))  # IOV_MAX is 1024
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(f"cannot reach the recorder process: {exc.strerror or exc}")
            return
        out = self._out
        while out and sent >= len(out[0]):
            sent -= len(out.popleft())
        if sent:
            out[0] = memoryview(out[0])[sent:]
        if out and not self._writing:
            self._loop.add_writer(self._data, self._writable)
        elif not out and self._writing:
            self._loop.remove_writer(self._data)
        self._writing = bool(out)

    def _readable(self) -> None:
        try:
            replies = self._reader.receive(self._data)
        except BlockingIOError:
            return
        except OSError:
            replies = None
        if replies is None:
            status = self.process.poll()
            self._lost("the recorder process exited" + (f" (status {status})" if status is not None else ""))
            return
        for reply in replies:
            if not isinstance(reply, Written | Failed | Log):
                self._lost(f"the recorder process sent a {reply.kind} message")
                return
            self._recorder._reply(reply)

    def _lost(self, reason: str) -> None:
        if not self.alive:
            return
        self.lost_reason = reason
        self._detach()
        self._data.close()
        self._files.close()
        self._recorder._worker_lost(reason)

    def _detach(self) -> None:
        """Nothing more goes to it, and the loop stops watching its socket."""
        self.alive = False
        self._loop.remove_reader(self._data)
        self._loop.remove_writer(self._data)

    def stop(self, timeout: float) -> None:
        """Send what waits, hang up, and let the worker finish writing."""
        if self.alive:
            self._detach()
            with contextlib.suppress(OSError):
                self._data.setblocking(True)
                for part in self._out:
                    self._data.sendall(part)
                self._data.shutdown(socket.SHUT_WR)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._data.close()
            self._files.close()
