"""An index write that fails (a full disk, a database restarting) is tried again at every tick,
in order, so a session that ended never stays "live" in the index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recorder.index import RecordingIndex
from recorder.log import IndexFailed
from recorder.messages import Log
from recorder.worker import WriterCore


class FailingFor(RecordingIndex):
    """The real SQLite index, whose updates fail while `failing` is set."""

    failing = True

    def session_updated(self, session_id: str, **fields: Any) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        super().session_updated(session_id, **fields)


def test_a_failed_index_update_is_written_once_it_can_be(tmp_path: Path) -> None:
    index = FailingFor(tmp_path / "index.db")
    replies: list[object] = []
    core = WriterCore(key=None, index=index, checkpoint_interval=1, reply=replies.append)  # type: ignore[arg-type]
    core._index("s1", "session_opened", id="s1", name="s1", user="alice", target="db-1",
                login="root", kind="shell", started=1000.0, location=str(tmp_path / "s1.cast"))
    core._index("s1", "session_updated", "s1", state="failed", error="disk full", ended=1010.0, duration=10.0)
    core._index("s1", "session_updated", "s1", lines=7)  # after the failed one: waits its turn
    core.tick()
    row = index.get("s1")
    assert row is not None and row.state == "live"
    assert [r for r in replies if isinstance(r, Log) and isinstance(r.event(), IndexFailed)]
    index.failing = False
    core.tick()
    row = index.get("s1")
    assert row is not None and row.state == "failed" and row.ended == 1010.0 and not core.unindexed
