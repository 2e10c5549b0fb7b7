from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import pytest

from recorder.asciicast import V2, V3, CastEncoder, build_header, load_cast
from recorder.chain import verify
from recorder.frames import FrameReader, frame
from recorder.index import RecordingIndex
from recorder.messages import Close, Events, Exit, Flush, Open, Output, Start, Written
from recorder.storage import LocalDirectoryStore
from recorder.worker import worker
from recorder.writer import Recorder, RecordingFailed
from tests.support.lab import eventually
from tests.support.memory import MemoryStore
from tests.support.recordings import KEY, open_recording


def test_round_trip_through_a_directory_store_and_index(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path / "index.db")
    recorder = Recorder(LocalDirectoryStore(tmp_path / "rec"), index, KEY, flush_interval=0.05)
    rec = open_recording(recorder)
    rec.output(b"hello \xe2\x9c")
    rec.output(b"\x93\r\n")
    rec.input(b"ls\r")
    rec.resize(100, 30)
    rec.marker("transfer", "upload /tmp/x 3 bytes")
    rec.close(exit_status=0, bytes_in=3, bytes_out=11, kind="shell")
    recorder.stop()
    row = index.get("s1")
    assert row is not None and row.state == "closed"
    assert row.markers == {"transfer": 1} and row.exit_status == 0 and row.bytes_out == 11
    path = Path(row.location or "")
    assert path.name == "s1.cast" and path.parent.parent.parent.parent == tmp_path / "rec"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "index.db").stat().st_mode) == 0o600
    cast = load_cast(path.read_bytes())
    assert cast.output_bytes() == "hello ✓\r\n".encode()
    assert cast.input_bytes() == b"ls\r"
    assert cast.markers() == ["transfer: upload /tmp/x 3 bytes", "exit: 0"]
    result = verify(path.read_bytes(), Path(f"{path}.sig").read_bytes(), KEY,
                    expected_lines=row.lines, expected_head=row.chain)
    assert result.state == "verified", result


def test_events_reach_the_file_within_the_flush_interval() -> None:
    store = MemoryStore()
    recorder = Recorder(store, None, KEY, flush_interval=0.05)
    rec = open_recording(recorder)
    rec.output(b"visible soon")
    cast_file = store.files[rec.name][0]
    eventually(lambda: b"visible soon" in cast_file.data, "the event in the file")
    # Not closed, but checkpointed: a crash now leaves an intact, incomplete file.
    eventually(lambda: verify(*store.read(rec.name), KEY).state == "incomplete", "a checkpoint")
    recorder.stop()


def test_write_failure_is_reported_and_later_events_are_refused() -> None:
    store = MemoryStore()
    failed = threading.Event()
    reasons: list[str] = []
    recorder = Recorder(store, None, KEY, flush_interval=0.02)
    rec = open_recording(recorder)
    rec.on_error = lambda reason: (reasons.append(reason), failed.set())
    store.fail_writes = True
    rec.output(b"lost?")
    assert failed.wait(5)
    assert reasons == ["cannot write recording: No space left on device"]
    with pytest.raises(RecordingFailed):
        rec.output(b"more")
    recorder.stop()


def test_a_store_that_cannot_take_the_header_fails_at_open() -> None:
    store = MemoryStore()
    store.fail_writes = True
    recorder = Recorder(store, None, KEY)
    with pytest.raises(OSError, match="No space"):
        open_recording(recorder)
    assert store.files == {}
    recorder.stop()


def test_v3_recordings(tmp_path: Path) -> None:
    store = MemoryStore()
    recorder = Recorder(store, None, KEY, version=V3, flush_interval=0.02)
    rec = open_recording(recorder)
    rec.output(b"x")
    rec.close(exit_status=3)
    recorder.stop()
    cast = load_cast(store.read(rec.name)[0])
    assert cast.version == 3 and [e.code for e in cast.events] == ["o", "x"]


def test_index_search_filters(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path / "i.db")
    for i, (user, target, markers) in enumerate([("alice", "db-1", {"transfer": 2}), ("bob", "db-1", {}),
                                                 ("alice", "web-1", {"denied": 1})]):
        index.session_opened(id=f"s{i}", name=f"n{i}", user=user, login="root", target=target,
                             started=1000.0 + i)
        index.session_updated(f"s{i}", markers=markers, state="closed")
    assert [r.id for r in index.search(user="alice")] == ["s2", "s0"]
    assert [r.id for r in index.search(target="db-1")] == ["s1", "s0"]
    assert [r.id for r in index.search(marker="transfer")] == ["s0"]
    assert [r.id for r in index.search(since=1001, until=1002)] == ["s1"]
    assert [r.id for r in index.older_than(1001.5)] == ["s1", "s0"]


def test_a_worker_writes_the_frames_it_is_sent(tmp_path: Path) -> None:
    """The worker process's loop, run in a thread: files come beside the open, replies go back."""
    data, data_child = socket.socketpair()
    files, files_child = socket.socketpair()
    thread = threading.Thread(target=worker, args=(data_child, files_child), daemon=True)
    thread.start()
    index = RecordingIndex(tmp_path / "index.db")
    cast, signatures = LocalDirectoryStore(tmp_path / "rec").create("s1")
    header = CastEncoder(V2).header(build_header(version=V2, width=80, height=24, timestamp=0))
    cast.append(header)
    data.sendmsg(frame(Start(KEY.raw().hex(), str(index.path), 0.05, 2.0)))
    socket.send_fds(files, [b"f"], [cast.fileno(), signatures.fileno()])
    cast.close()
    signatures.close()
    row = {"id": "s1", "name": "s1", "user": "alice", "login": "root", "target": "db-1", "started": 1.0}
    for message in (Open(1, "s1", V2, header.decode(), row),
                    Events(1, [Output(0.1, b"hello\r\n"), Flush(0.2), Exit(0.2, 0, None)], 7),
                    Close(1, {"exit_status": 0})):
        data.sendmsg(frame(message))
    data.shutdown(socket.SHUT_WR)
    thread.join(10)
    assert not thread.is_alive()
    data.setblocking(False)
    assert FrameReader().receive(data) == [Written(1, 7)]
    for sock in (data, data_child, files, files_child):
        sock.close()
    path = tmp_path / "rec" / "s1.cast"
    assert load_cast(path.read_bytes()).output_bytes() == b"hello\r\n"
    indexed = index.get("s1")
    assert indexed is not None and indexed.state == "closed" and indexed.exit_status == 0
    result = verify(path.read_bytes(), Path(f"{path}.sig").read_bytes(), KEY,
                    expected_lines=indexed.lines, expected_head=indexed.chain)
    assert result.state == "verified", result
