"""Log events: what the recorder reports to the log of whoever runs it (the bastion's audit log),
and the shape every such event has there.

A log event is a frozen dataclass: `name` is the line's `event`, its fields (in their order,
None ones left out) are the line's fields. Each event is defined once, here or in
`bastion.state.events`, so a misspelt field or a missing one is a type error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class LogEvent:
    name: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The event's fields in their order; None ones are left out."""
        values = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return {key: value for key, value in values if value is not None}


@dataclass(frozen=True, kw_only=True)
class RecordingFailure(LogEvent):
    """A recording could not be opened or written: nothing more of it will be."""

    name = "recording_failed"
    session: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class IndexFailed(LogEvent):
    """The recordings index could not take a recording's row (the recording goes on)."""

    name = "index_failed"
    session: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RecorderWorkerExited(LogEvent):
    """The writer process is gone; what it had not written is lost."""

    name = "recorder_worker_exited"
    reason: str


@dataclass(frozen=True, kw_only=True)
class RecordingIncomplete(LogEvent):
    """Found at start: a recording the index still called live, whose bastion had stopped."""

    name = "recording_incomplete"
    session: str
    reason: str
    duration: float | None = None


# By name: a writer process sends an event as its name and fields.
RECORDER_EVENTS: dict[str, type[LogEvent]] = {
    event.name: event for event in (RecordingFailure, IndexFailed, RecorderWorkerExited)
}
