from __future__ import annotations

import pytest

from bastion.stages.pipeline import SessionInfo, SessionIO, SessionPipeline, SessionStage, StageFailed, Stream
from recorder.transfers import SessionKind


class Upper(SessionStage):
    name = "upper"

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        return data.upper()


class HoldLastByte(SessionStage):
    """Holds back the last byte of every chunk, like a masker holding a possible secret."""

    name = "hold"

    def __init__(self) -> None:
        self.held = b""

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        data, self.held = self.held + data[:-1], data[-1:]
        return data

    def flush_output(self, stream: Stream) -> bytes:
        data, self.held = self.held, b""
        return data


class Broken(SessionStage):
    name = "recorder"

    def on_input(self, data: bytes) -> bytes:
        raise OSError("disk full")


class Seen(SessionStage):
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.ended: tuple[int | None, str | None] | None = None

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        self.seen.append(data)
        return data

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        self.ended = (exit_status, exit_signal)


def test_stages_run_in_order_and_flush_passes_later_stages() -> None:
    hold, seen = HoldLastByte(), Seen()
    pipeline = SessionPipeline([hold, Upper(), seen])
    assert pipeline.output(b"abc", Stream.STDOUT) == b"AB"
    assert pipeline.output(b"de", Stream.STDOUT) == b"CD"
    assert pipeline.flush_output(Stream.STDOUT) == b"E"
    assert seen.seen == [b"AB", b"CD", b"E"]


def test_a_reader_of_the_target_output_sees_it_unchanged_and_once() -> None:
    class Reader(SessionStage):
        def __init__(self) -> None:
            self.read: list[bytes] = []

        def on_target_output(self, data: bytes, stream: Stream) -> None:
            self.read.append(data)

    hold, reader, seen = HoldLastByte(), Reader(), Seen()
    pipeline = SessionPipeline([hold, Upper(), reader, seen])
    assert pipeline.output(b"abc", Stream.STDOUT) == b"AB"
    assert pipeline.output_after(hold, b"c", Stream.STDOUT) == b"C"  # released late: not read again
    assert reader.read == [b"abc"]  # before the stages that change or hold it
    assert seen.seen == [b"AB", b"C"]


def test_empty_result_stops_the_chain() -> None:
    seen = Seen()
    pipeline = SessionPipeline([HoldLastByte(), seen])
    assert pipeline.output(b"x", Stream.STDOUT) == b""
    assert seen.seen == []


def test_a_failing_stage_fails_closed_with_its_name() -> None:
    pipeline = SessionPipeline([Broken()])
    with pytest.raises(StageFailed) as err:
        pipeline.input(b"ls\r")
    assert (err.value.stage, err.value.reason) == ("recorder", "disk full")


def test_end_reaches_every_stage_even_if_one_fails() -> None:
    class BadEnd(SessionStage):
        def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
            raise RuntimeError("boom")

    seen = Seen()
    SessionPipeline([BadEnd(), seen]).end(3, None)
    assert seen.ended == (3, None)


def test_start_failure_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    class CannotStart(SessionStage):
        name = "recorder"

        def start(self, info: SessionInfo, io: SessionIO) -> None:
            raise PermissionError("recordings/ is not writable")

    info = SessionInfo(session_id="s", channel=1, user="u", target="t", login="l",
                       client_address="c", client_version="v", kind=SessionKind.SHELL)
    with pytest.raises(StageFailed, match="recordings/ is not writable"):
        SessionPipeline([CannotStart()]).start(info, None)  # type: ignore[arg-type]
