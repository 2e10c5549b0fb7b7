"""Recordings the index still calls live whose bastion instance stopped without closing them
(killed, or its machine went down): the other instances (or the next start) find them once that
instance's lease has run out. They end at their last event written, as
`incomplete`, so that no listing shows a session as live forever."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from recorder.asciicast import V3, CastFormatError, load_cast
from recorder.index import RecordingIndex
from recorder.log import IndexFailed, LogEvent, RecordingIncomplete

TAIL = 1024 * 1024
STOPPED = "the bastion stopped before the session ended"


def last_event_time(path: Path) -> float | None:
    """Seconds into the recording of its last whole event (0.0 with none; None if unreadable)."""
    try:
        with path.open("rb") as file:
            header = orjson.loads(file.readline())
            if not isinstance(header, dict):
                return None
            if header.get("version") == V3:  # times are intervals: the sum is needed
                file.seek(0)
                events = load_cast(file.read()).events
                return events[-1].time if events else 0.0
            size = file.seek(0, 2)
            file.seek(max(0, size - TAIL))
            tail = file.read()
    except (OSError, ValueError, CastFormatError):
        return None
    # The first piece is the header or a line cut by the seek; the last is empty or cut short.
    for line in reversed(tail.split(b"\n")[1:-1]):
        with contextlib.suppress(ValueError):
            value = orjson.loads(line)
            if isinstance(value, list) and value and isinstance(value[0], int | float):
                return float(value[0])
    return 0.0


def reconcile(index: RecordingIndex, log: Callable[[LogEvent], None],
              alive: Sequence[str] | None = None) -> int:
    """End every recording still marked live whose writer is gone; returns how many. `alive`:
    the bastion instances still serving (their recordings are theirs to end); None: every
    recording still live is orphaned (call it before any session opens)."""
    ended = 0
    for row in index.live() if alive is None else index.abandoned(alive):
        elapsed = last_event_time(Path(row.location)) if row.location else None
        fields: dict[str, object] = {"state": "incomplete", "error": STOPPED}
        if elapsed is not None:
            fields.update(ended=row.started + elapsed, duration=round(elapsed, 3))
        try:
            index.session_updated(row.id, **fields)
        except Exception as exc:  # noqa: BLE001 - reported; the bastion starts either way
            log(IndexFailed(session=row.id, reason=str(exc)))
            continue
        log(RecordingIncomplete(session=row.id, reason=STOPPED,
                                duration=None if elapsed is None else round(elapsed, 3)))
        ended += 1
    return ended
