"""The recorder: sessions encode events on the event loop; one thread writes, chains and signs.

`SessionRecording` methods are cheap and never touch the disk: they encode a line and put it
on a queue. The `Recorder` thread appends each recording's lines at least every
`flush_interval` seconds (so a killed bastion loses at most that much), extends the hash
chain, and every `checkpoint_interval` makes the file durable (fsync) and signs a checkpoint
covering it. A write error marks the recording failed and
calls its `on_error`, from the event loop when one was given: the session decides what next.

The queue is bounded per recording: past `BACKLOG_HIGH` bytes not yet written, `on_backlog(True)`
asks the session to stop reading from the target; below `BACKLOG_LOW` it may read again. A slow
disk slows the session down instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from recorder.asciicast import V2, CastEncoder, build_header
from recorder.chain import HashChain, checkpoint_line
from recorder.index import RecordingIndex
from recorder.signing import RecordingKey
from recorder.storage import AppendFile, RecordingStore, dated_name

_STOP = object()
BACKLOG_HIGH = 8 * 1024 * 1024
BACKLOG_LOW = 2 * 1024 * 1024
WRITE_BATCH = 1024 * 1024
HANDOFF_BYTES = 256 * 1024


class RecordingFailed(Exception):
    """The recording cannot be written; the session must not go on unrecorded."""


class SessionRecording:
    """One session's recording. Call from one thread (the event loop)."""

    def __init__(self, recorder: Recorder, session_id: str, name: str, *, started: float,
                 cast: AppendFile, signatures: AppendFile, encoder: CastEncoder) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.name = name
        self.started = started
        self.encoder = encoder
        self.markers: Counter[str] = Counter()
        self.error: str | None = None
        self.on_error: Callable[[str], None] | None = None
        self.on_backlog: Callable[[bool], None] | None = None
        self.closed = False
        self._queued = 0  # bytes put on the queue (event loop thread only)
        self._batch: list[tuple[str, float, Any]] = []  # events not yet handed to the writer
        self._batch_bytes = 0
        self._handoff_scheduled = False
        self._written = 0  # bytes taken off it (writer thread only)
        self._held = False
        # Written by the writer thread only:
        self._cast, self._signatures = cast, signatures
        self._chain = HashChain()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_raw = 0  # the events' own sizes, as counted in _queued
        self._dirty = False
        self._checkpointed = 0.0

    def _elapsed(self) -> float:
        return time.time() - self.started

    def _put(self, event: tuple[str, float, Any], size: int) -> None:
        """Queue an event; it is encoded on the writer thread, off the session's event loop."""
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
        """Pass the lines gathered on the event loop to the writer thread in one queue item."""
        self._handoff_scheduled = False
        if self._batch:
            self.recorder._queue.put((self, self._batch))
            self._batch = []
            self._batch_bytes = 0

    def _release(self) -> None:
        """After a failure nothing more is written: stop holding the session back."""
        if self._held:
            self._held = False
            if self.on_backlog:
                self.on_backlog(False)

    def _resume(self) -> None:
        if self._held and self._queued - self._written < BACKLOG_LOW:
            self._held = False
            if self.on_backlog:
                self.on_backlog(False)

    def output(self, data: bytes) -> None:
        self._put(("o", self._elapsed(), data), len(data))

    def input(self, data: bytes) -> None:
        self._put(("i", self._elapsed(), data), len(data))

    def resize(self, width: int, height: int) -> None:
        self._put(("r", self._elapsed(), (width, height)), 16)

    def marker(self, kind: str, text: str = "") -> None:
        """A marker labelled `kind: text`; counts by kind go to the index."""
        self.markers[kind] += 1
        label = f"{kind}: {text}" if text else kind
        self._put(("m", self._elapsed(), label), len(label))

    def _encode(self, event: tuple[str, float, Any]) -> bytes:
        """Writer thread: one event to its asciicast line (b"" for half a character so far)."""
        code, elapsed, value = event
        if code in ("o", "i"):
            return self.encoder.data(elapsed, code, value)
        if code == "r":
            return self.encoder.resize(elapsed, *value)
        if code == "m":
            return self.encoder.marker(elapsed, value)
        if code == "flush":
            return self.encoder.flush(elapsed, "o") + self.encoder.flush(elapsed, "i")
        return self.encoder.exit(elapsed, *value)

    def close(self, *, exit_status: int | None = None, exit_signal: str | None = None,
              **summary: Any) -> None:
        """Flush the decoders, write the exit, sign the final checkpoint, update the index."""
        if self.closed:
            return
        elapsed = self._elapsed()
        with contextlib.suppress(RecordingFailed):
            self._put(("flush", elapsed, None), 0)
            if exit_status is not None or exit_signal is not None:
                self._put(("x", elapsed, (exit_status, exit_signal)), 0)
        self.closed = True
        self._handoff()
        fields = dict(summary, ended=time.time(), duration=round(elapsed, 3), exit_status=exit_status,
                      exit_signal=exit_signal, markers=dict(self.markers))
        self.recorder._queue.put((self, ("close", fields)))

    # -- writer thread --------------------------------------------------------------------

    def _write(self, now: float, final: bool) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._cast.append(data)
            self._chain.extend_joined(data, len(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
            self._written += self._pending_raw
            self._pending_raw = 0
            self._dirty = True
            if self._held:
                self.recorder._call(self._resume)
        due = now - self._checkpointed >= self.recorder.checkpoint_interval
        if (self._dirty and due) or final:
            self._cast.sync()  # the data a checkpoint covers is on disk before the checkpoint
            self._signatures.append(checkpoint_line(self.recorder.key, self._chain, final=final, at=now))
            self._signatures.sync()
            self._checkpointed = now
            self._dirty = False


class Recorder:
    """Owns the writer thread, the store, the index and the signing key."""

    def __init__(self, store: RecordingStore, index: RecordingIndex | None, key: RecordingKey, *,
                 version: int = V2, flush_interval: float = 0.5, checkpoint_interval: float = 2.0,
                 loop: asyncio.AbstractEventLoop | None = None,
                 log: Callable[..., None] | None = None) -> None:
        self.store, self.index, self.key = store, index, key
        self.version = version
        self.flush_interval = flush_interval
        self.checkpoint_interval = checkpoint_interval
        self.loop = loop
        self.log = log or (lambda event, **fields: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._live: set[SessionRecording] = set()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def open(self, *, session_id: str, width: int, height: int, term: str | None, command: str | None,
             metadata: dict[str, Any], index_fields: dict[str, Any]) -> SessionRecording:
        """Create the files and write the header now, so a store that cannot take it fails here."""
        started = time.time()
        name = dated_name(session_id, started)
        cast, signatures = self.store.create(name)
        encoder = CastEncoder(self.version)
        header = encoder.header(build_header(
            version=self.version, width=width, height=height, timestamp=int(started), term=term,
            command=command, metadata=metadata,
        ))
        try:
            cast.append(header)
        except OSError:
            cast.close()
            signatures.close()
            self.store.delete(name)
            raise
        recording = SessionRecording(self, session_id, name, started=started, cast=cast,
                                     signatures=signatures, encoder=encoder)
        recording._chain.add(header)
        recording._dirty = True
        self._queue.put((recording, ("open", dict(index_fields, id=session_id, name=name, started=started,
                                                   location=self.store.location(name)))))
        return recording

    def stop(self, timeout: float = 10) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        deadline = time.monotonic() + self.flush_interval
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                for recording in list(self._live):
                    self._flush(recording, final=False)
                return
            if item is not None:
                recording, payload = item
                if isinstance(payload, list):
                    self._encode_batch(recording, payload)
                    if recording._pending_bytes > WRITE_BATCH:
                        self._flush(recording, final=False)
                else:
                    self._command(recording, *payload)
            if time.monotonic() >= deadline:
                for recording in list(self._live):
                    self._flush(recording, final=False)
                deadline = time.monotonic() + self.flush_interval

    @staticmethod
    def _encode_batch(recording: SessionRecording, events: list[tuple[str, float, Any]]) -> None:
        lines = [line for line in map(recording._encode, events) if line]
        recording._pending.extend(lines)
        recording._pending_bytes += sum(map(len, lines))
        recording._pending_raw += sum(len(e[2]) if e[0] in ("o", "i", "m") else 16 if e[0] == "r" else 0
                                      for e in events)

    def _command(self, recording: SessionRecording, command: str, fields: dict[str, Any]) -> None:
        if command == "open":
            self._live.add(recording)
            self._index("session_opened", recording, **fields)
        elif command == "close":
            self._flush(recording, final=True)
            self._live.discard(recording)
            for handle in (recording._cast, recording._signatures):
                with contextlib.suppress(OSError):
                    handle.close()
            state = "failed" if recording.error else "closed"
            self._index("session_updated", recording, recording.session_id, lines=recording._chain.lines,
                        chain=recording._chain.head.hex(), state=state, error=recording.error, **fields)

    def _flush(self, recording: SessionRecording, *, final: bool) -> None:
        if recording.error is not None:
            recording._pending.clear()
            return
        try:
            recording._write(time.time(), final)
        except OSError as exc:
            self._failed(recording, f"cannot write recording: {exc.strerror or exc}")

    def _failed(self, recording: SessionRecording, reason: str) -> None:
        recording.error = reason
        recording._pending.clear()
        self.log("recording_failed", session=recording.session_id, reason=reason)
        self._index("session_updated", recording, recording.session_id, state="failed", error=reason)
        callback = recording.on_error
        if callback is not None:
            self._call(callback, reason)
        if recording._held:
            self._call(recording._release)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the sessions' event loop (directly when there is none)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)
        else:
            callback(*args)

    def _index(self, method: str, recording: SessionRecording, *args: Any, **fields: Any) -> None:
        if self.index is None:
            return
        try:
            getattr(self.index, method)(*args, **fields)
        except Exception as exc:  # an index failure is reported; the recording goes on
            self.log("index_failed", session=recording.session_id, reason=str(exc))
