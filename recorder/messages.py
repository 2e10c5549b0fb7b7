"""The messages between a recording's session side (`recorder.writer`) and its writer
(`recorder.worker`), each defined once, here.

To the writer: `Start` (a worker process's first message), then `Open`, `Events` and `Close`
for each recording. From the writer: `Written`, `Failed` and `Log`. Each end builds these and
tells them apart by their type; `recorder.frames` turns them into bytes and back where the
writer is another process.

A recording's events (`Output`, `Input`, `Resize`, `Marker`, `Flush`, `Exit`) travel in
`Events` batches. They are named tuples, as cheap to make as the plain tuples they name: there
is one for every chunk a session reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple

from recorder.log import RECORDER_EVENTS, LogEvent
from recorder.storage import AppendFile

# -- events ------------------------------------------------------------------------------------


class Output(NamedTuple):
    """Bytes the target sent the user."""

    elapsed: float  # seconds since the recording started
    data: bytes


class Input(NamedTuple):
    """Bytes the user sent the target."""

    elapsed: float
    data: bytes


class Resize(NamedTuple):
    elapsed: float
    width: int
    height: int


class Marker(NamedTuple):
    elapsed: float
    label: str  # `kind: text`


class Flush(NamedTuple):
    """The streams' end: what their decoders hold of an incomplete character is written raw."""

    elapsed: float


class Exit(NamedTuple):
    elapsed: float
    status: int | None
    signal: str | None


Event = Output | Input | Resize | Marker | Flush | Exit


# -- messages ----------------------------------------------------------------------------------


class MessageKind(StrEnum):
    """Which message a frame holds."""

    START = "start"
    OPEN = "open"
    EVENTS = "events"
    CLOSE = "close"
    WRITTEN = "written"
    FAILED = "failed"
    LOG = "log"


@dataclass(frozen=True, slots=True)
class Start:
    """A worker process's first message: what it writes with."""

    kind: ClassVar[MessageKind] = MessageKind.START
    key: str  # the signing key's private bytes, hex
    index: str | None  # the recordings index's path
    flush_interval: float
    checkpoint_interval: float


@dataclass(frozen=True, slots=True)
class Open:
    """A recording begins: its files exist and hold `header`; the writer indexes the row."""

    kind: ClassVar[MessageKind] = MessageKind.OPEN
    rid: int  # the recording's number in the messages that follow
    session_id: str
    version: int  # asciicast 2 or 3
    header: str  # the header line, for the hash chain
    index_fields: dict[str, Any]
    # The cast file and its signatures. Never in a frame: to a worker process they go as
    # descriptors beside it, and it puts its own handles on them here.
    files: tuple[AppendFile, AppendFile] | None = None


@dataclass(frozen=True, slots=True)
class Events:
    kind: ClassVar[MessageKind] = MessageKind.EVENTS
    rid: int
    events: list[Event]
    size: int  # the events' bytes as the session counted them, for back-pressure


@dataclass(frozen=True, slots=True)
class Close:
    """The recording ends: the last checkpoint, then `fields` go to its index row."""

    kind: ClassVar[MessageKind] = MessageKind.CLOSE
    rid: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Written:
    """`size` more event bytes of recording `rid` reached its file."""

    kind: ClassVar[MessageKind] = MessageKind.WRITTEN
    rid: int
    size: int


@dataclass(frozen=True, slots=True)
class Failed:
    """Nothing more of recording `rid` will be written."""

    kind: ClassVar[MessageKind] = MessageKind.FAILED
    rid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """A `recorder.log` event for the bastion's audit log, by its name and fields."""

    kind: ClassVar[MessageKind] = MessageKind.LOG
    name: str
    fields: dict[str, Any]

    @classmethod
    def of(cls, event: LogEvent) -> Log:
        return cls(event.name, event.fields())

    def event(self) -> LogEvent:
        return RECORDER_EVENTS[self.name](**self.fields)


ToWriter = Open | Events | Close
FromWriter = Written | Failed | Log
Message = Start | ToWriter | FromWriter
MESSAGES: dict[MessageKind, type[Message]] = {
    message.kind: message for message in (Start, Open, Events, Close, Written, Failed, Log)
}
