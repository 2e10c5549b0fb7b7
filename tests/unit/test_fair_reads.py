"""Every socket the bastion reads SSH from gives up the loop after a slice: a bulk stream takes
turns with the keystrokes of everyone else (bench/load.py --hostile measures the effect)."""

from __future__ import annotations

import asyncio

from bastion.ssh.transport import FAIR_READ_SIZE, FairTCPConnector, take_turns
from tests.support.lab import until

MEGABYTE = 1024 * 1024


class Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[int] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(len(data))


async def read_a_megabyte_at_once(fair: bool) -> list[int]:
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
            transport, reader = await FairTCPConnector().create_connection(Reader, "127.0.0.1", port)
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


async def test_a_connection_to_a_target_reads_a_slice_per_turn() -> None:
    chunks = await read_a_megabyte_at_once(fair=True)
    assert max(chunks) <= FAIR_READ_SIZE
    assert len(chunks) >= MEGABYTE // FAIR_READ_SIZE


async def test_asyncio_alone_reads_larger_slices_than_a_fair_turn() -> None:
    """The default this changes (so the test above can fail): asyncio reads far more at once."""
    assert max(await read_a_megabyte_at_once(fair=False)) > FAIR_READ_SIZE


async def test_a_transport_of_another_kind_is_left_alone() -> None:
    class Other(asyncio.BaseTransport):
        pass

    other = Other()
    take_turns(other)
    assert not hasattr(other, "max_size")
