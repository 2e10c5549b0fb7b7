"""A stand-in for the session a stage runs in, and the SessionInfo of a plain shell."""

from __future__ import annotations

from collections.abc import Callable

from bastion.stages.pipeline import SessionInfo, SessionStage, Stream
from recorder.transfers import SessionKind


class Session:
    """Collects what the stage sends either way."""

    def __init__(self) -> None:
        self.target: list[bytes] = []
        self.client: list[bytes] = []
        self.watcher: Callable[[bytes], None] | None = None

    def to_target(self, data: bytes) -> None:
        self.target.append(data)

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.client.append(data)

    def say(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.to_client(data, stream)

    def end(self, reason: str) -> None:
        raise AssertionError(f"ended: {reason}")

    def release_output_after(self, stage: SessionStage, data: bytes, stream: Stream) -> None:
        raise AssertionError("the screener holds no output")

    def marker(self, kind: str, text: str = "") -> None:
        pass

    def hold_output(self, reason: str) -> None:
        pass

    def release_output(self, reason: str) -> None:
        pass

    def hold_input(self, reason: str) -> None:
        pass

    def release_input(self, reason: str) -> None:
        pass

    def input_eof(self) -> None:
        self.target.append(b"<EOF>")

    def watch_input(self, watcher: Callable[[bytes], None] | None) -> None:
        self.watcher = watcher


class MarkedSession(Session):
    def __init__(self) -> None:
        super().__init__()
        self.markers: list[str] = []

    def marker(self, kind: str, text: str = "") -> None:
        self.markers.append(f"{kind}: {text}")


SHELL = SessionInfo(session_id="s1", channel=0, user="alice", target="db-1", login="root",
                    client_address="127.0.0.1", client_version="SSH-2.0-test", kind=SessionKind.SHELL,
                    term_type="xterm", width=80, height=24)
