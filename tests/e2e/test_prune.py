"""Retention: `bastion recordings prune` removes files and index rows together."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bastion.demo.sandbox import Sandbox
from recorder.index import RecordingIndex
from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder


def test_prune_removes_old_recordings_and_their_rows(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    box.write_config()
    recordings = tmp_path / "recordings"
    index = RecordingIndex(recordings / "index.db")
    recorder = Recorder(LocalDirectoryStore(recordings), index,
                        RecordingKey.load_or_create(box.keys.dir / "recording_key"), flush_interval=0.01)
    for session in ("old-1", "old-2", "new-1"):
        rec = recorder.open(session_id=session, width=80, height=24, term=None, command=None, metadata={},
                            index_fields={"user": "alice", "login": "root", "target": "db-1"})
        rec.output(b"hello\r\n")
        rec.close(exit_status=0)
    recorder.stop()
    for session in ("old-1", "old-2"):
        index.session_updated(session, started=time.time() - 100 * 86400)
    files = {row.id: Path(row.location or "") for row in index.search()}
    assert all(path.exists() for path in files.values())

    def prune(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "bastion", "recordings", "prune", "-c",
                                 str(box.config_path), *args], capture_output=True, text=True, check=True)
        return result.stdout

    assert prune("--older-than", "90d", "--dry-run") == "would remove 2 recordings older than 90d\n"
    assert all(path.exists() for path in files.values())
    assert prune("--older-than", "90d") == "removed 2 recordings older than 90d\n"
    assert [row.id for row in index.search()] == ["new-1"]
    assert files["new-1"].exists() and not files["old-1"].exists() and not files["old-2"].exists()
    assert not Path(f"{files['old-1']}.sig").exists()
