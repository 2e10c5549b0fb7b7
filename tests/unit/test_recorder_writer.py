from __future__ import annotations

import contextlib
import socket
import stat
import threading
from pathlib import Path

import orjson
import pytest

from recorder.asciicast import V3, load_cast
from recorder.chain import verify
from recorder.index import RecordingIndex
from recorder.storage import LocalDirectoryStore
from recorder.worker import FrameReader, frame
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


@pytest.mark.parametrize("buffer", [4 * 1024 * 1024, 16, 64])
def test_worker_frames_round_trip_split_anywhere(buffer: int) -> None:
    """Whatever the reader's buffer: partial frames move to its front, larger ones grow it."""
    events = [("o", 0.5, b"caf\xc3"), ("o", 0.6, b"\xa9 \xff\x00\r\n"), ("i", 0.7, b"ls\r"),
              ("r", 0.8, (132, 43)), ("m", 0.9, "masked: aws-secret-key \u2713"), ("flush", 1.0, None),
              ("x", 1.1, (None, "KILL"))]
    messages = [("start", "00" * 32, None, 0.5, 2.0), ("events", 7, events, 4242),
                ("close", 7, {"exit_status": 0, "markers": {"masked": 1}})]
    stream = b"".join(part for message in messages for part in frame(message))
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
        assert got == [tuple(m) if m[0] == "events" else tuple(orjson.loads(orjson.dumps(m)))
                       for m in messages]
