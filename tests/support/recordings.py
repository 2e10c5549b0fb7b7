"""Recordings from the tests: the finished .cast of a session, the real asciinema's rendering of
it; and recordings written straight through the recorder."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.demo.sandbox import Sandbox
from recorder.signing import RecordingKey
from recorder.writer import Recorder
from tests.support.lab import eventually, need


def recording_for(box: Sandbox, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> Path:
    """The .cast of the newest session_ended event matching `predicate`, once complete: the
    recorder process finishes a recording (final signed checkpoint) just after the session."""

    def finished() -> Path | None:
        ended = [e for e in box.events() if e["event"] == "session_ended" and predicate(e)]
        if not ended:
            return None
        for path in (box.directory / "recordings").rglob(f"{ended[-1]['session']}.cast"):
            signatures = path.with_name(path.name + ".sig")
            if signatures.exists() and b'"final":true' in signatures.read_bytes():
                return path
        return None

    return eventually(finished, "a finished recording of that session", timeout)


def asciinema_cat(path: Path) -> bytes:
    """`asciinema cat` wants a terminal: give it one with script(1)."""
    need("asciinema", "script")
    result = subprocess.run(["script", "-qec", f"asciinema cat {path}", "/dev/null"],
                            capture_output=True, timeout=60, check=True)
    return result.stdout


KEY = RecordingKey.generate()


def open_recording(recorder: Recorder, session_id: str = "s1", **index: object):  # type: ignore[no-untyped-def]
    fields = {"user": "alice", "login": "root", "target": "db-1", **index}
    return recorder.open(session_id=session_id, width=80, height=24, term="xterm", command=None,
                         metadata={"session_id": session_id}, index_fields=fields)
