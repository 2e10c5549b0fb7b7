"""The recorder's writing side: encode each event to its asciicast line, extend the hash chain,
append to the file, checkpoint and sign, keep the index.

`WriterCore` does that for every live recording and knows nothing of where its messages come
from. The bastion runs it in a worker process of its own (`python -m recorder.worker`, started
by `Recorder`): escaping every byte of every session into JSON and hashing it then never
competes with the relay for the interpreter lock, and spare cores do the work. Stores whose files
cannot be handed to another process (the in-memory store of the tests) run it in a thread.

It takes `Open`, `Events` and `Close` messages and replies `Written`, `Failed` and `Log`
(`recorder.messages`). Between a worker process and the bastion they cross as frames
(`recorder.frames`) on a socket; the files of an `Open` arrive beside it as descriptors
(SCM_RIGHTS) on a second socket: the bastion creates the files and writes the header itself, so
a store that cannot take them refuses the session at once.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, assert_never

from recorder.asciicast import CastEncoder
from recorder.chain import HashChain, checkpoint_line
from recorder.frames import FrameReader, frame
from recorder.index import RecordingIndex, is_url
from recorder.log import IndexFailed, LogEvent, RecordingFailure
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
    Message,
    Open,
    Output,
    Resize,
    Start,
    ToWriter,
    Written,
)
from recorder.signing import RecordingKey
from recorder.storage import AppendFile, FdFile, PartialWrite

WRITE_BATCH = 1024 * 1024
Reply = Callable[[FromWriter], None]
# What waiting for a message gives: the message, None when the wait timed out, False at the end.
Received = ToWriter | Literal[False] | None


class _Writing:
    """One live recording, writer side."""

    def __init__(self, session_id: str, version: int, header: str, cast: AppendFile,
                 signatures: AppendFile) -> None:
        self.session_id = session_id
        self.encoder = CastEncoder(version)
        self.chain = HashChain()
        self.chain.add(header.encode())
        self.cast, self.signatures = cast, signatures
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_size = 0  # the events' own sizes, as the session counted them
        self.dirty = True
        self.checkpointed = 0.0
        self.error: str | None = None
        self.last_event = 0.0  # seconds into the session of the last event handed over

    def close(self) -> None:
        for handle in (self.cast, self.signatures):
            with contextlib.suppress(OSError):
                handle.close()

    def encode(self, event: Event) -> bytes:
        """One event to its asciicast line (b"" for half a character so far)."""
        match event:  # class patterns only: unpacking by position would cost more than a tuple's
            case Output():
                return self.encoder.data(event.elapsed, "o", event.data)
            case Input():
                return self.encoder.data(event.elapsed, "i", event.data)
            case Resize():
                return self.encoder.resize(event.elapsed, event.width, event.height)
            case Marker():
                return self.encoder.marker(event.elapsed, event.label)
            case Flush():
                return self.encoder.flush(event.elapsed, "o") + self.encoder.flush(event.elapsed, "i")
            case Exit():
                return self.encoder.exit(event.elapsed, event.status, event.signal)
        assert_never(event)


class WriterCore:
    def __init__(self, key: RecordingKey, index: RecordingIndex | None, *, checkpoint_interval: float,
                 reply: Reply) -> None:
        self.key, self.index = key, index
        self.checkpoint_interval = checkpoint_interval
        self.reply = reply
        self.live: dict[int, _Writing] = {}
        # Index writes that failed (a full disk, a database restarting), retried in order at
        # every tick: a session must not stay "live" in the index once it has ended.
        self.unindexed: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []

    def handle(self, message: ToWriter) -> None:
        match message:
            case Events():
                self._events(message)
            case Open():
                self._open(message)
            case Close():
                self._close(message)
            case _:
                assert_never(message)

    def _open(self, message: Open) -> None:
        if message.files is None:
            raise ValueError(f"recording {message.rid} opened without its files")
        cast, signatures = message.files
        writing = _Writing(message.session_id, message.version, message.header, cast, signatures)
        self.live[message.rid] = writing
        # The header is signed at once: the signature file holds its first block before any
        # output arrives, so the checkpoint taken when a full disk cuts a write short still fits.
        now = time.time()
        try:
            writing.signatures.append(checkpoint_line(self.key, writing.chain, final=False, at=now,
                                                      session=writing.session_id))
        except OSError:
            pass  # a disk already full fails the first write instead
        else:  # the next checkpoint covers new lines: two with the same count read as out of order
            writing.dirty, writing.checkpointed = False, now
        self._index(message.session_id, "session_opened", **message.index_fields)

    def _events(self, message: Events) -> None:
        writing = self.live.get(message.rid)
        if writing is None or writing.error is not None:
            return
        lines = [line for line in map(writing.encode, message.events) if line]
        if message.events:
            writing.last_event = max(writing.last_event, message.events[-1].elapsed)
        writing.pending.extend(lines)
        writing.pending_bytes += sum(map(len, lines))
        writing.pending_size += message.size
        if writing.pending_bytes > WRITE_BATCH:
            self._flush(message.rid, writing, final=False)

    def _close(self, message: Close) -> None:
        writing = self.live.pop(message.rid, None)
        if writing is None:
            return
        self._flush(message.rid, writing, final=True)
        writing.close()
        state = "failed" if writing.error else "closed"
        self._index(writing.session_id, "session_updated", writing.session_id, lines=writing.chain.lines,
                    chain=writing.chain.head.hex(), state=state, error=writing.error, **message.fields)

    def tick(self) -> None:
        """Every flush interval: what each recording gathered goes to its file, and index
        writes that failed are tried again."""
        for rid, writing in list(self.live.items()):
            self._flush(rid, writing, final=False)
        self._retry_index()

    def stop(self) -> None:
        """The bastion is gone: write what came, leave the recordings incomplete but intact, and
        say so in the index (ended at the last event written), where they would stay live."""
        self.tick()
        for writing in self.live.values():
            writing.close()
            if writing.error is None:
                self._index(writing.session_id, "session_updated", writing.session_id,
                            lines=writing.chain.lines, state="incomplete",
                            error="the bastion stopped before the session ended",
                            **ended_at(self.index, writing.session_id, writing.last_event))
        self.live.clear()

    def _flush(self, rid: int, writing: _Writing, *, final: bool) -> None:
        if writing.error is not None:  # nothing was kept for it since
            return
        try:
            self._write(rid, writing, time.time(), final)
        except OSError as exc:
            self._failed(rid, writing, f"cannot write recording: {exc.strerror or exc}")

    def _write(self, rid: int, writing: _Writing, now: float, final: bool) -> None:
        if writing.pending:
            try:
                writing.cast.append_all(writing.pending)
            except PartialWrite as exc:
                # What fits is whole lines: sign it, so it verifies as intact up to there.
                writing.chain.extend(writing.pending[:exc.kept])
                if exc.kept or writing.dirty:  # lines no checkpoint covers yet (two with the
                    with contextlib.suppress(OSError):  # same count read as out of order)
                        writing.signatures.append(checkpoint_line(
                            self.key, writing.chain, final=False, at=now, session=writing.session_id))
                raise
            writing.chain.extend(writing.pending)
            writing.pending.clear()
            writing.pending_bytes = 0
            self.reply(Written(rid, writing.pending_size))
            writing.pending_size = 0
            writing.dirty = True
        due = now - writing.checkpointed >= self.checkpoint_interval
        if (writing.dirty and due) or final:
            writing.cast.sync()  # the data a checkpoint covers is on disk before the checkpoint
            writing.signatures.append(checkpoint_line(self.key, writing.chain, final=final, at=now,
                                                      session=writing.session_id))
            writing.signatures.sync()
            writing.checkpointed = now
            writing.dirty = False

    def _failed(self, rid: int, writing: _Writing, reason: str) -> None:
        writing.error = reason
        writing.pending.clear()
        self._log(RecordingFailure(session=writing.session_id, reason=reason))
        self._index(writing.session_id, "session_updated", writing.session_id, state="failed", error=reason,
                    lines=writing.chain.lines,
                    **ended_at(self.index, writing.session_id, writing.last_event))
        self.reply(Failed(rid, reason))

    def _index(self, session_id: str, method: str, *args: Any, **fields: Any) -> None:
        if self.index is None:
            return
        if self.unindexed:  # keep the order: an update never overtakes the write it follows
            self.unindexed.append((session_id, method, args, fields))
            return
        try:
            getattr(self.index, method)(*args, **fields)
        except Exception as exc:  # noqa: BLE001 - an index failure of any kind is reported; the recording goes on
            self._log(IndexFailed(session=session_id, reason=str(exc)))
            self.unindexed.append((session_id, method, args, fields))

    def _retry_index(self) -> None:
        while self.unindexed and self.index is not None:
            _, method, args, fields = self.unindexed[0]
            try:
                getattr(self.index, method)(*args, **fields)
            except Exception:  # noqa: BLE001 - still failing: reported once already, tried next tick
                return
            self.unindexed.pop(0)

    def _log(self, event: LogEvent) -> None:
        self.reply(Log.of(event))


def ended_at(index: RecordingIndex | None, session_id: str, elapsed: float) -> dict[str, float]:
    """`ended` and `duration` for a recording that stopped `elapsed` seconds into its session."""
    row = index.get(session_id) if index is not None else None
    if row is None:
        return {}
    return {"ended": row.started + elapsed, "duration": round(elapsed, 3)}


def run(core: WriterCore, receive: Callable[[float], Received], flush_interval: float) -> None:
    """Feed `core` until `receive` returns False; `tick` it at least every `flush_interval`.

    `receive(timeout)` returns a message, None when `timeout` passed with none, or False at the end.
    """
    deadline = time.monotonic() + flush_interval
    while True:
        message = receive(max(0.0, deadline - time.monotonic()))
        if message is False:
            core.stop()
            return
        if message is not None:
            core.handle(message)
        if time.monotonic() >= deadline:
            core.tick()
            deadline = time.monotonic() + flush_interval


# -- the worker process ------------------------------------------------------------------


def worker(data: socket.socket, files: socket.socket) -> None:
    """The worker process's life: a start message, then messages until the bastion hangs up."""
    reader = FrameReader()
    queued: deque[Message] = deque()

    def send(reply: FromWriter) -> None:
        with contextlib.suppress(OSError):  # the bastion is gone; what it sent is still written
            data.sendmsg(frame(reply))

    def next_message(timeout: float | None) -> Message | Literal[False] | None:
        while not queued:
            ready, _, _ = select.select([data], [], [], timeout)
            if not ready:
                return None
            messages = reader.receive(data)
            if messages is None:
                return False
            queued.extend(messages)
        return queued.popleft()

    def receive(timeout: float | None) -> Received:
        message = next_message(timeout)
        if message is None or message is False or isinstance(message, Events | Close):
            return message
        if isinstance(message, Open):  # its two files wait on the other socket, sent just before it
            _, fds, _, _ = socket.recv_fds(files, 64, 2)
            return replace(message, files=(FdFile(fds[0]), FdFile(fds[1])))
        raise SystemExit(f"recorder worker: unexpected {message.kind} message")

    start = next_message(None)
    if not isinstance(start, Start):
        raise SystemExit("recorder worker: expected a start message")
    key = RecordingKey.from_raw(bytes.fromhex(start.key))
    index = (RecordingIndex(start.index if is_url(start.index) else Path(start.index), wait_for_database=True)
             if start.index else None)
    core = WriterCore(key, index, checkpoint_interval=start.checkpoint_interval, reply=send)
    run(core, receive, start.flush_interval)


def main() -> None:
    # The bastion ends this process by hanging up, after its last session closed; a Ctrl-C, a
    # stop or reload signal (HUP), or a log-reopen one meant for the bastion's process group
    # (`kill -HUP -PGID`) must not lose what is still queued, nor end the live recordings.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                   signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)
    data = socket.socket(fileno=int(sys.argv[1]))
    files = socket.socket(fileno=int(sys.argv[2]))
    worker(data, files)


if __name__ == "__main__":
    main()
