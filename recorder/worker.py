"""The recorder's writing side: encode each event to its asciicast line, extend the hash chain,
append to the file, checkpoint and sign, keep the index.

`WriterCore` does that for every live recording and knows nothing of where its messages come
from. The bastion runs it in a worker process of its own (`python -m recorder.worker`, started
by `Recorder`): escaping every byte of every session into JSON and hashing it then never
competes with the relay for the interpreter lock, and spare cores do the work. Stores whose files
cannot be handed to another process (the in-memory store of the tests) run it in a thread.

Messages in, as tuples:

    ("open", rid, session_id, version, header (str), index_fields, cast, signatures)
    ("events", rid, [(code, elapsed, value), ...], size)   size: the events' bytes, for back-pressure
    ("close", rid, fields)

Replies out, through `reply(kind, *args)`:

    ("written", rid, size)     that many event bytes reached the file
    ("failed", rid, reason)    nothing more of that recording will be written
    ("log", name, fields)      a `recorder.log` event, for the bastion's audit log

Between a worker and the bastion each message is a frame: a kind byte, a 4-byte big-endian
length, a body. Events (`E`) are packed binary, so session bytes cross without being escaped or
copied into another structure; everything else (`J`) is a JSON array. The files of an open
arrive beside it as descriptors (SCM_RIGHTS) on a second socket: the bastion creates the files
and writes the header itself, so a store that cannot take them refuses the session at once.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

from recorder.asciicast import CastEncoder
from recorder.chain import HashChain, checkpoint_line
from recorder.index import RecordingIndex
from recorder.log import IndexFailed, LogEvent, RecordingFailure
from recorder.signing import RecordingKey
from recorder.storage import AppendFile, FdFile

WRITE_BATCH = 1024 * 1024
Reply = Callable[..., None]
# What waiting for a message gives: the message, None when the wait timed out, False at the end.
Received = tuple[Any, ...] | Literal[False] | None


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

    def close(self) -> None:
        for handle in (self.cast, self.signatures):
            with contextlib.suppress(OSError):
                handle.close()

    def encode(self, event: tuple[str, float, Any]) -> bytes:
        """One event to its asciicast line (b"" for half a character so far)."""
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


class WriterCore:
    def __init__(self, key: RecordingKey, index: RecordingIndex | None, *, checkpoint_interval: float,
                 reply: Reply) -> None:
        self.key, self.index = key, index
        self.checkpoint_interval = checkpoint_interval
        self.reply = reply
        self.live: dict[int, _Writing] = {}

    def handle(self, message: tuple[Any, ...]) -> None:
        kind, rid, *args = message
        if kind == "events":
            self._events(rid, *args)
        elif kind == "open":
            self._open(rid, *args)
        elif kind == "close":
            self._close(rid, *args)
        else:
            raise ValueError(f"unknown recorder message {kind!r}")

    def _open(self, rid: int, session_id: str, version: int, header: str,
              index_fields: dict[str, Any], cast: AppendFile, signatures: AppendFile) -> None:
        self.live[rid] = _Writing(session_id, version, header, cast, signatures)
        self._index(session_id, "session_opened", **index_fields)

    def _events(self, rid: int, events: list[tuple[str, float, Any]], size: int) -> None:
        writing = self.live.get(rid)
        if writing is None or writing.error is not None:
            return
        lines = [line for line in map(writing.encode, events) if line]
        writing.pending.extend(lines)
        writing.pending_bytes += sum(map(len, lines))
        writing.pending_size += size
        if writing.pending_bytes > WRITE_BATCH:
            self._flush(rid, writing, final=False)

    def _close(self, rid: int, fields: dict[str, Any]) -> None:
        writing = self.live.pop(rid, None)
        if writing is None:
            return
        self._flush(rid, writing, final=True)
        writing.close()
        state = "failed" if writing.error else "closed"
        self._index(writing.session_id, "session_updated", writing.session_id, lines=writing.chain.lines,
                    chain=writing.chain.head.hex(), state=state, error=writing.error, **fields)

    def tick(self) -> None:
        """Every flush interval: what each recording gathered goes to its file."""
        for rid, writing in list(self.live.items()):
            self._flush(rid, writing, final=False)

    def stop(self) -> None:
        """The bastion is gone: write what came, leave the recordings incomplete but intact."""
        self.tick()
        for writing in self.live.values():
            writing.close()
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
            writing.cast.append_all(writing.pending)
            writing.chain.extend(writing.pending)
            writing.pending.clear()
            writing.pending_bytes = 0
            self.reply("written", rid, writing.pending_size)
            writing.pending_size = 0
            writing.dirty = True
        due = now - writing.checkpointed >= self.checkpoint_interval
        if (writing.dirty and due) or final:
            writing.cast.sync()  # the data a checkpoint covers is on disk before the checkpoint
            writing.signatures.append(checkpoint_line(self.key, writing.chain, final=final, at=now))
            writing.signatures.sync()
            writing.checkpointed = now
            writing.dirty = False

    def _failed(self, rid: int, writing: _Writing, reason: str) -> None:
        writing.error = reason
        writing.pending.clear()
        self._log(RecordingFailure(session=writing.session_id, reason=reason))
        self._index(writing.session_id, "session_updated", writing.session_id, state="failed", error=reason)
        self.reply("failed", rid, reason)

    def _index(self, session_id: str, method: str, *args: Any, **fields: Any) -> None:
        if self.index is None:
            return
        try:
            getattr(self.index, method)(*args, **fields)
        except Exception as exc:  # noqa: BLE001 - an index failure of any kind is reported; the recording goes on
            self._log(IndexFailed(session=session_id, reason=str(exc)))

    def _log(self, event: LogEvent) -> None:
        self.reply("log", event.name, event.fields())


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


_FRAME = struct.Struct(">cI")  # kind, body length
_EVENTS = struct.Struct(">II")  # recording, the events' size
_EVENT = struct.Struct(">cdI")  # code, elapsed, payload length
_CODES = {"flush": b"f"}


def _payload(code: str, value: Any) -> bytes:
    if code in ("o", "i"):
        return value  # type: ignore[no-any-return]
    if code == "m":
        return value.encode()  # type: ignore[no-any-return]
    if code == "r":
        return b"%dx%d" % value
    if code == "x":
        return orjson.dumps(value)
    return b""


def _value(code: str, payload: bytes) -> Any:
    if code in ("o", "i"):
        return payload
    if code == "m":
        return payload.decode()
    if code == "r":
        return tuple(int(n) for n in payload.split(b"x"))
    if code == "x":
        return tuple(orjson.loads(payload))
    return None


def frame(message: tuple[Any, ...]) -> list[bytes]:
    """A message as the buffers to send (joined, they are its frame)."""
    if message[0] != "events":
        body = orjson.dumps(message)
        return [_FRAME.pack(b"J", len(body)), body]
    _, rid, events, size = message
    parts = [b"", _EVENTS.pack(rid, size)]
    length = _EVENTS.size
    for code, elapsed, value in events:
        payload = _payload(code, value)
        parts += (_EVENT.pack(_CODES.get(code, code.encode()), elapsed, len(payload)), payload)
        length += _EVENT.size + len(payload)
    parts[0] = _FRAME.pack(b"E", length)
    return parts


def _events(body: memoryview) -> tuple[Any, ...]:
    rid, size = _EVENTS.unpack_from(body)
    events, offset = [], _EVENTS.size
    while offset < len(body):
        code, elapsed, length = _EVENT.unpack_from(body, offset)
        offset += _EVENT.size
        name = "flush" if code == b"f" else code.decode()
        events.append((name, elapsed, _value(name, bytes(body[offset:offset + length]))))
        offset += length
    return ("events", rid, events, size)


class FrameReader:
    """Splits a byte stream back into messages.

    It receives straight into one buffer it keeps: a fresh multi-megabyte `recv` result per read
    would cost the worker a page fault for every page of every read.
    """

    def __init__(self, size: int = 4 * 1024 * 1024) -> None:
        self._buffer = bytearray(size)
        self._start = self._end = 0  # the unparsed bytes

    def receive(self, sock: socket.socket) -> list[tuple[Any, ...]] | None:
        """Read what `sock` has into the buffer; the messages it completes, None at its end."""
        self._make_room()
        with memoryview(self._buffer) as view, view[self._end:] as free:
            received = sock.recv_into(free)
        if not received:
            return None
        self._end += received
        return self._messages()

    def _make_room(self) -> None:
        """Move a partial frame to the front; grow for a frame larger than the buffer."""
        buffer, start, end = self._buffer, self._start, self._end
        if end < len(buffer):
            return
        if start:
            buffer[:end - start] = buffer[start:end]
            self._start, self._end = 0, end - start
        if self._end == len(buffer):  # one frame fills all of it
            _, length = _FRAME.unpack_from(buffer)
            buffer.extend(bytes(max(len(buffer), _FRAME.size + length - len(buffer))))

    def _messages(self) -> list[tuple[Any, ...]]:
        messages, buffer, offset, end = [], self._buffer, self._start, self._end
        with memoryview(buffer) as view:
            while end - offset >= _FRAME.size:
                kind, length = _FRAME.unpack_from(buffer, offset)
                start, stop = offset + _FRAME.size, offset + _FRAME.size + length
                if stop > end:
                    break
                with view[start:stop] as body:
                    messages.append(_events(body) if kind == b"E" else tuple(orjson.loads(body)))
                offset = stop
        if offset == end:
            self._start = self._end = 0
        else:
            self._start = offset
        return messages


def worker(data: socket.socket, files: socket.socket) -> None:
    """The worker process's life: a start message, then messages until the bastion hangs up."""
    reader = FrameReader()
    queued: deque[tuple[Any, ...]] = deque()

    def send(*reply: Any) -> None:
        with contextlib.suppress(OSError):  # the bastion is gone; what it sent is still written
            data.sendmsg(frame(reply))

    def receive(timeout: float | None) -> Received:
        while not queued:
            ready, _, _ = select.select([data], [], [], timeout)
            if not ready:
                return None
            messages = reader.receive(data)
            if messages is None:
                return False
            queued.extend(messages)
        message = queued.popleft()
        if message[0] == "open":  # its two files wait on the other socket, sent just before it
            _, fds, _, _ = socket.recv_fds(files, 64, 2)
            message = (*message[:-2], FdFile(fds[0]), FdFile(fds[1]))
        return message

    start = receive(None)
    if not isinstance(start, tuple) or start[0] != "start":
        raise SystemExit("recorder worker: expected a start message")
    _, private, index_path, flush_interval, checkpoint_interval = start
    key = RecordingKey.from_raw(bytes.fromhex(private))
    index = RecordingIndex(Path(index_path)) if index_path else None
    core = WriterCore(key, index, checkpoint_interval=checkpoint_interval, reply=send)
    run(core, receive, flush_interval)


def main() -> None:
    # The bastion ends this process by hanging up, after its last session closed; a Ctrl-C or a
    # stop signal meant for the bastion's process group must not lose what is still queued.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    data = socket.socket(fileno=int(sys.argv[1]))
    files = socket.socket(fileno=int(sys.argv[2]))
    worker(data, files)


if __name__ == "__main__":
    main()
