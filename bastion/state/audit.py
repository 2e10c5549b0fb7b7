"""One JSON line per event (`bastion.state.events`, `recorder.log`). Every value goes through
json.dumps, so user-controlled strings (user names, commands, client versions) are escaped: no
raw control characters reach a log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bastion.core.masker import TextMasker
from bastion.core.stored import StoredCommand
from recorder.log import LogEvent

# Commands can carry secrets (mysql --password=S3cret): these fields are masked in every event.
MASKED_FIELDS = ("command", "part")


class AuditLog:
    """Append-only JSON lines to a file (0600) or a stream; MASKED_FIELDS go through `masker`."""

    def __init__(self, stream: IO[str] | None = None, path: Path | None = None, *,
                 masker: TextMasker) -> None:
        self._masker = masker
        self.observers: list[Callable[[LogEvent], None]] = []  # told of every event (the metrics)
        self.path = path
        if path is not None:
            self._stream: IO[str] = _open_log(path)
        else:
            self._stream = stream or sys.stderr

    def reopen(self) -> str | None:
        """Open the log file again at its path (logrotate moved it away): None, or why not (the
        old file is kept then)."""
        if self.path is None:
            return None
        try:
            fresh = _open_log(self.path)
        except OSError as exc:
            return f"cannot reopen {self.path}: {exc.strerror or exc}"
        old, self._stream = self._stream, fresh
        old.close()
        return None

    def write(self, event: LogEvent) -> None:
        for observer in self.observers:
            observer(event)
        record: dict[str, Any] = {"ts": round(time.time(), 3), "event": event.name}
        for key, value in event.fields().items():
            if isinstance(value, StoredCommand):
                record.update(value.fields(key))
            else:
                record[key] = value
        for key in MASKED_FIELDS:
            if isinstance(value := record.get(key), str):
                record[key] = self._masker.mask(value)
        line = json.dumps(record, ensure_ascii=True, default=str, separators=(",", ":"))
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            # The audit trail failing must not take the process down; stderr is the last resort.
            sys.stderr.write(line + "\n")


def _open_log(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(os_open_append(path), "a", encoding="utf-8", buffering=1)


def os_open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
