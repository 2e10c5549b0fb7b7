"""Every socket the bastion reads SSH from gives up the loop after a slice once another user's
connection is reading: a bulk stream takes turns with the keystrokes of everyone else
(bench/load.py --hostile measures the effect), and reads in large slices while it is alone
(bench/jump.py)."""

from __future__ import annotations

import asyncio

from bastion.ssh.transport import (
    BULK_READ_SIZE,
    CONTENDED_FOR,
    FAIR_READ_SIZE,
    FairTCPConnector,
    Turns,
    take_turns,
)
from tests.support.lab import until

MEGABYTE = 1024 * 1024


class Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[int] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(len(data))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Socket:
    """What `Turns` sets: the size of a transport's next read."""

    max_size = 0


async def read_a_megabyte_at_once(fair: bool, turns: Turns | None = None) -> list[int]:
    """One MB waits in the socket's buffer before the reader looks: how is it read?"""
    sent: list[asyncio.Transport] = []

    class Sender(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            sent.append(transport)

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(Sender, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        if fair:
            connector = FairTCPConnector(owner="alice", turns=turns or Turns())
            transport, reader = await connector.create_connection(Reader, "127.0.0.1", port)
        else:
            transport, reader = await loop.create_connection(Reader, "127.0.0.1", port)
        assert isinstance(reader, Reader)
        transport.pause_reading()  # type: ignore[attr-defined]
        await until(lambda: sent, "the sender is connected")
        sent[0].write(b"x" * MEGABYTE)
        await until(lambda: sent[0].get_write_buffer_size() == 0, "the megabyte is in the socket")
        transport.resume_reading()  # type: ignore[attr-defined]
        await until(lambda: sum(reader.chunks) == MEGABYTE, "the megabyte is read")
        transport.close()
        return reader.chunks
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_connection_to_a_target_reads_a_slice_per_turn_while_another_user_reads() -> None:
    clock = Clock()
    turns = Turns(clock)  # the clock stands still: bob's read stays recent throughout
    turns.read("bob", Socket())
    chunks = await read_a_megabyte_at_once(fair=True, turns=turns)
    assert max(chunks) <= FAIR_READ_SIZE
    assert len(chunks) >= 1024 * 1024 // FAIR_READ_SIZE


async def test_a_connection_alone_reads_large_slices() -> None:
    chunks = await read_a_megabyte_at_once(fair=True)
    assert chunks[0] <= FAIR_READ_SIZE  # the first read, before any was counted
    assert max(chunks) > FAIR_READ_SIZE


async def test_asyncio_alone_reads_larger_slices_than_a_fair_turn() -> None:
    """The default this changes (so the tests above can fail): asyncio reads far more at once."""
    assert max(await read_a_megabyte_at_once(fair=False)) > FAIR_READ_SIZE


def test_one_owners_sockets_read_in_bulk_however_often_they_read() -> None:
    clock = Clock()
    turns = Turns(clock)
    outer, target = Socket(), Socket()
    for _ in range(100):
        clock.now += 0.001
        turns.read("alice", outer)
        turns.read("alice", target)
    assert outer.max_size == target.max_size == BULK_READ_SIZE
    assert not turns.contended()


def test_another_owners_read_makes_everyone_take_slices_until_it_has_been_quiet_a_while() -> None:
    clock = Clock()
    turns = Turns(clock)
    alice, bob = Socket(), Socket()
    turns.read("alice", alice)
    clock.now += 0.01
    turns.read("bob", bob)  # a keystroke while alice streams
    assert bob.max_size == FAIR_READ_SIZE
    clock.now += 0.01
    turns.read("alice", alice)
    assert alice.max_size == FAIR_READ_SIZE and turns.contended()
    # alice streams on; bob types nothing more
    while clock.now < 100.02 + CONTENDED_FOR:
        turns.read("alice", alice)
        assert alice.max_size == FAIR_READ_SIZE
        clock.now += 0.05
    clock.now += 0.05
    turns.read("alice", alice)
    assert alice.max_size == BULK_READ_SIZE and not turns.contended()


def test_two_owners_reading_far_apart_do_not_contend() -> None:
    clock = Clock()
    turns = Turns(clock)
    alice, bob = Socket(), Socket()
    turns.read("alice", alice)
    clock.now += CONTENDED_FOR + 0.1
    turns.read("bob", bob)
    assert bob.max_size == BULK_READ_SIZE and not turns.contended()


async def test_a_transport_of_another_kind_is_left_alone() -> None:
    class Other(asyncio.BaseTransport):
        pass

    other = Other()
    take_turns(other)
    assert not hasattr(other, "max_size")
