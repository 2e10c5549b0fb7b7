"""Recording files and folders: whole lines only, private folders, and the index set right
after a bastion that stopped without closing its recordings."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.asciicast import V3, CastEncoder, build_header
from recorder.index import RecordingIndex
from recorder.log import LogEvent
from recorder.reconcile import STOPPED, last_event_time, reconcile
from recorder.storage import FdFile, LocalDirectoryStore, PartialWrite, UnsafeFolder


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_every_level_is_private_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    store = LocalDirectoryStore(tmp_path / "a" / "recordings")
    cast, sig = store.create("2026/11/30/s1")
    cast.close()
    sig.close()
    folder = tmp_path / "a" / "recordings"
    for level in (folder, folder / "2026", folder / "2026/11", folder / "2026/11/30"):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_recordings_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(UnsafeFolder, match=rf"{folder} is writable by other users .* chmod 700"):
        LocalDirectoryStore(folder).prepare()
    with pytest.raises(UnsafeFolder):
        LocalDirectoryStore(folder).create("2026/11/30/s1")
    assert not (folder / "2026").exists()
    folder.chmod(0o750)
    LocalDirectoryStore(folder).prepare()


def test_a_write_cut_short_leaves_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel took part of a batch, then refused (ENOSPC): the file is cut back to the last
    whole line it holds. (The end-to-end test fills a real file system.)"""
    path = tmp_path / "x.cast"
    file = FdFile.create(path)
    file.append(b"header\n")
    real_write = os.write

    def full_after(limit: int):  # type: ignore[no-untyped-def]
        def writev(fd: int, parts: list[bytes]) -> int:
            data = b"".join(parts)[:limit]
            real_write(fd, data)
            return len(data)

        def write(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")
        return writev, write

    writev, write = full_after(13)
    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(PartialWrite) as caught:
        file.append_all([b"line one\n", b"line two\n", b"line three\n"])
    assert caught.value.kept == 1 and caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"header\nline one\n"
    monkeypatch.undo()
    file.append_all([b"after\n"])  # the next write starts at a line's start
    file.close()
    assert path.read_bytes() == b"header\nline one\nafter\n"


def _cast(path: Path, version: int, times: list[float], tail: bytes = b"") -> None:
    encoder = CastEncoder(version)
    lines = [encoder.header(build_header(version=version, width=80, height=24, timestamp=0))]
    lines += [encoder.data(t, "o", b"x") for t in times]
    path.write_bytes(b"".join(lines) + tail)


@pytest.mark.parametrize("version", [2, V3])
def test_last_event_time(tmp_path: Path, version: int) -> None:
    path = tmp_path / "a.cast"
    _cast(path, version, [0.5, 1.25, 7.5], tail=b'[9.0, "o", "cut sh')
    assert last_event_time(path) == pytest.approx(7.5)
    _cast(path, version, [])
    assert last_event_time(path) == 0.0
    assert last_event_time(tmp_path / "missing.cast") is None


def test_recordings_left_live_end_at_their_last_event(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path / "index.db")
    cast = tmp_path / "live.cast"
    _cast(cast, 2, [1.0, 42.5])
    base = {"user": "alice", "login": "root", "target": "db-1"}
    index.session_opened(id="live", name="live", started=1000.0, location=str(cast), **base)
    index.session_opened(id="gone", name="gone", started=2000.0, location=str(tmp_path / "no.cast"), **base)
    index.session_opened(id="done", name="done", started=3000.0, location=str(cast), **base)
    index.session_updated("done", state="closed", ended=3010.0, duration=10.0)
    events: list[LogEvent] = []
    assert reconcile(index, events.append) == 2
    live, gone, done = index.get("live"), index.get("gone"), index.get("done")
    assert live is not None and gone is not None and done is not None
    assert (live.state, live.ended, live.duration, live.error) == ("incomplete", 1042.5, 42.5, STOPPED)
    assert (gone.state, gone.duration) == ("incomplete", None)
    assert (done.state, done.duration) == ("closed", 10.0)
    assert [(e.name, e.fields()) for e in events] == [
        ("recording_incomplete", {"session": "gone", "reason": STOPPED}),
        ("recording_incomplete", {"session": "live", "reason": STOPPED, "duration": 42.5}),
    ]
    assert index.live() == []
