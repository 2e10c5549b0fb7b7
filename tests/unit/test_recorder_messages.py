"""The messages between the recorder's session side and its writer, through their frames."""

from __future__ import annotations

import contextlib
import socket

import pytest

from recorder.frames import FrameReader, frame
from recorder.log import RecordingFailure
from recorder.messages import (
    MESSAGES,
    Close,
    Event,
    Events,
    Exit,
    Failed,
    Flush,
    Input,
    Log,
    Marker,
    Message,
    MessageKind,
    Open,
    Output,
    Resize,
    Start,
    Written,
)
from tests.support.memory import MemoryStore

EVENTS: list[Event] = [
    Output(0.5, b"caf\xc3"), Output(0.6, b"\xa9 \xff\x00\r\n"), Input(0.7, b"ls\r"), Input(0.75, b""),
    Resize(0.8, 132, 43), Marker(0.9, "masked: aws-secret-key \u2713"), Marker(0.95, "exit"),
    Flush(1.0), Exit(1.1, None, "KILL"), Exit(1.2, 0, None),
]
MESSAGE_OF_EACH_KIND: list[Message] = [
    Start("00" * 32, None, 0.5, 2.0),
    Start("ab" * 32, "/var/lib/bastion/recordings/index.db", 0.05, 10.0),
    Open(7, "S1", 3, '{"version":3}', {"user": "alice", "kind": "exec", "command": None}),
    Events(7, EVENTS, 4242),
    Events(8, [], 0),
    Close(7, {"exit_status": 0, "markers": {"masked": 1}, "duration": 1.25}),
    Written(7, 1 << 20),
    Failed(7, "cannot write recording: No space left on device"),
    Log.of(RecordingFailure(session="S1", reason="disk full")),
]


def read_back(stream: bytes, buffer: int = 4 * 1024 * 1024) -> list[Message]:
    """What a reader with a `buffer`-byte buffer makes of `stream`."""
    reader, got = FrameReader(buffer), []
    sender, receiver = socket.socketpair()
    with sender, receiver:
        receiver.setblocking(False)
        sender.sendall(stream)
        with contextlib.suppress(BlockingIOError):  # read until the socket is empty
            while True:
                got += reader.receive(receiver) or []
    return got


@pytest.mark.parametrize("message", MESSAGE_OF_EACH_KIND, ids=lambda m: type(m).__name__)
def test_each_message_round_trips_through_its_frame(message: Message) -> None:
    [back] = read_back(b"".join(frame(message)))
    assert type(back) is type(message)
    assert back == message


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_each_event_round_trips_through_an_events_frame(event: Event) -> None:
    [back] = read_back(b"".join(frame(Events(1, [event], 9))))
    assert isinstance(back, Events)
    assert back.events == [event] and type(back.events[0]) is type(event)


def test_every_kind_names_one_message() -> None:
    assert set(MESSAGES) == set(MessageKind)
    assert all(message.kind is kind for kind, message in MESSAGES.items())
    assert {type(m) for m in MESSAGE_OF_EACH_KIND} == set(MESSAGES.values())


def test_an_opens_files_never_go_into_its_frame() -> None:
    cast, signatures = MemoryStore().create("S1")
    with pytest.raises(TypeError):
        frame(Open(1, "S1", 2, "{}", {}, (cast, signatures)))


def test_a_log_message_carries_its_event() -> None:
    event = RecordingFailure(session="S1", reason="disk full")
    [back] = read_back(b"".join(frame(Log.of(event))))
    assert isinstance(back, Log) and back.event() == event


@pytest.mark.parametrize("buffer", [4 * 1024 * 1024, 16, 64])
def test_frames_round_trip_split_anywhere(buffer: int) -> None:
    """Whatever the reader's buffer: partial frames move to its front, larger ones grow it."""
    stream = b"".join(part for message in MESSAGE_OF_EACH_KIND for part in frame(message))
    for cut in range(0, len(stream) + 1, 7):
        reader, got = FrameReader(buffer), []
        sender, receiver = socket.socketpair()
        with sender, receiver:
            receiver.setblocking(False)
            for part in (stream[:cut], stream[cut:]):
                sender.sendall(part)
                with contextlib.suppress(BlockingIOError):  # read until the socket is empty
                    while True:
                        got += reader.receive(receiver) or []
        assert got == MESSAGE_OF_EACH_KIND
