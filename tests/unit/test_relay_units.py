"""The target side's adapter: packets of one read go on as one chunk, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncssh import EXTENDED_DATA_STDERR as STDERR

from bastion.ssh.relay import UpstreamSession


class Calls:
    """Stands in for SessionRelay: notes what the adapter hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


async def test_packets_of_one_read_go_on_as_one_chunk_after_it() -> None:
    relay = Calls()
    session = UpstreamSession(relay)  # type: ignore[arg-type]
    for packet in (b"one ", b"two ", b"three"):
        session.data_received(packet, None)
    assert relay.calls == []  # not yet: more packets of the same read may follow
    await asyncio.sleep(0)
    assert relay.calls == [("target_data", b"one two three", None)]


async def test_stderr_exit_and_eof_keep_their_place() -> None:
    relay = Calls()
    session = UpstreamSession(relay)  # type: ignore[arg-type]
    session.data_received(b"out 1 ", None)
    session.data_received(b"out 2 ", None)
    session.data_received(b"err 1 ", STDERR)
    session.data_received(b"out 3 ", None)
    session.exit_status_received(3)
    session.data_received(b"late", None)
    session.eof_received()
    session.connection_lost(None)
    await asyncio.sleep(0)
    assert relay.calls == [
        ("target_data", b"out 1 out 2 ", None),
        ("target_data", b"err 1 ", STDERR),
        ("target_data", b"out 3 ", None),
        ("target_exit_status", 3),
        ("target_data", b"late", None),
        ("target_eof",),
        ("target_closed",),
    ]
