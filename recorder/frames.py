"""`recorder.messages` as bytes, between the bastion and a worker process.

Each message is a frame: a kind byte, a 4-byte big-endian length, a body. `Events` (`E`) are
packed binary, so session bytes cross without being escaped or copied into another structure:
the recording and the events' size, then each event as its code, elapsed time, payload length
and payload. Every other message (`J`) is a JSON array: its kind, then its fields by name.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import assert_never

import orjson

from recorder.messages import (
    MESSAGES,
    Event,
    Events,
    Exit,
    Flush,
    Input,
    Marker,
    Message,
    MessageKind,
    Output,
    Resize,
)

_FRAME = struct.Struct(">cI")  # kind, body length
_EVENTS = struct.Struct(">II")  # recording, the events' size
_EVENT = struct.Struct(">cdI")  # code, elapsed, payload length

# Each event's code in an events frame.
_CODES: dict[type[Event], bytes] = {
    Output: b"o", Input: b"i", Resize: b"r", Marker: b"m", Flush: b"f", Exit: b"x",
}


def frame(message: Message) -> list[bytes]:
    """A message as the buffers to send (joined, they are its frame)."""
    if isinstance(message, Events):
        return _events_frame(message)
    body = orjson.dumps([message.kind, message])
    return [_FRAME.pack(b"J", len(body)), body]


def _events_frame(message: Events) -> list[bytes]:
    parts = [b"", _EVENTS.pack(message.rid, message.size)]
    length = _EVENTS.size + _EVENT.size * len(message.events)
    pack, codes = _EVENT.pack, _CODES  # once per event: the session's bytes pass here
    for event in message.events:
        payload = event.data if isinstance(event, (Output, Input)) else _payload(event)
        parts.append(pack(codes[type(event)], event.elapsed, len(payload)))
        parts.append(payload)
        length += len(payload)
    parts[0] = _FRAME.pack(b"E", length)
    return parts


def _payload(event: Event) -> bytes:
    match event:
        case Output(_, data) | Input(_, data):
            return data
        case Marker(_, label):
            return label.encode()
        case Resize(_, width, height):
            return b"%dx%d" % (width, height)
        case Exit(_, status, signal):
            return orjson.dumps([status, signal])
        case Flush():
            return b""
    assert_never(event)


def _resize(elapsed: float, payload: bytes) -> Resize:
    width, height = payload.split(b"x")
    return Resize(elapsed, int(width), int(height))


def _exit(elapsed: float, payload: bytes) -> Exit:
    status, signal = orjson.loads(payload)
    return Exit(elapsed, status, signal)


_PARSE: dict[bytes, Callable[[float, bytes], Event]] = {
    b"o": Output,
    b"i": Input,
    b"r": _resize,
    b"m": lambda elapsed, payload: Marker(elapsed, payload.decode()),
    b"f": lambda elapsed, payload: Flush(elapsed),
    b"x": _exit,
}


def _events(body: memoryview) -> Events:
    rid, size = _EVENTS.unpack_from(body)
    events: list[Event] = []
    offset, unpack, new = _EVENTS.size, _EVENT.unpack_from, tuple.__new__
    while offset < len(body):
        code, elapsed, length = unpack(body, offset)
        offset += _EVENT.size
        payload = bytes(body[offset:offset + length])
        offset += length
        if code == b"o":  # most events: made without the named tuple's Python-level __new__
            events.append(new(Output, (elapsed, payload)))
        else:
            events.append(_PARSE[code](elapsed, payload))
    return Events(rid, events, size)


def _json(body: memoryview) -> Message:
    kind, values = orjson.loads(body)
    return MESSAGES[MessageKind(kind)](**values)


class FrameReader:
    """Splits a byte stream back into messages.

    It receives straight into one buffer it keeps: a fresh multi-megabyte `recv` result per read
    would cost the worker a page fault for every page of every read.
    """

    def __init__(self, size: int = 4 * 1024 * 1024) -> None:
        self._buffer = bytearray(size)
        self._start = self._end = 0  # the unparsed bytes

    def receive(self, sock: socket.socket) -> list[Message] | None:
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

    def _messages(self) -> list[Message]:
        messages, buffer, offset, end = [], self._buffer, self._start, self._end
        with memoryview(buffer) as view:
            while end - offset >= _FRAME.size:
                kind, length = _FRAME.unpack_from(buffer, offset)
                start, stop = offset + _FRAME.size, offset + _FRAME.size + length
                if stop > end:
                    break
                with view[start:stop] as body:
                    messages.append(_events(body) if kind == b"E" else _json(body))
                offset = stop
        if offset == end:
            self._start = self._end = 0
        else:
            self._start = offset
        return messages
