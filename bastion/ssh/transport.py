"""asyncssh connection classes tuned for the bastion's data path.

Two per-packet costs dominate a bulk transfer through the bastion, and both are fixed here
rather than in the relay:

* asyncssh sends an empty SSH_MSG_IGNORE before *every* packet once encryption is on. That
  is the old counter-measure to CBC-mode IV prediction; the bastion never negotiates CBC, so
  the extra packet only doubles the encryptions and writes. We drop exactly those packets.
* The inner connection's packets travel inside the outer direct-tcpip channel, whose packets
  are at most 32 KiB (OpenSSH's default). A full 32 KiB inner data packet plus its header and
  MAC no longer fits, so each was split into a full outer packet and a tiny one. Writes of one
  event-loop turn are coalesced, so the outer channel cuts one large buffer into full packets.

And one cost a peer could impose: a channel's maximum packet size is the peer's to choose, and
asyncssh cuts everything it sends on that channel to it. A client opening a channel with a
maximum of 1 byte and a large window would have the bastion encrypt and send one packet per
byte, pinning its CPU for everyone. Channels the users' side opens with a maximum under
MIN_PACKET_SIZE are refused (every real client offers 16 or 32 KiB).

And the turn each connection takes. One asyncio loop serves every session, and asyncio reads up
to 256 KiB from a ready socket at once; asyncssh then decrypts, relays and re-encrypts all of it
before any other connection is looked at. A single bulk stream made every keystroke of every
other user wait behind several such turns (36 ms at the median on a 2-core machine, 110 ms with
1 KiB packets; `bench/load.py --hostile`). Reading 16 KiB per turn always brought that to a few
milliseconds, but cost a stream alone a quarter of its throughput (every slice pays the relay's,
the masker's and the recorder's cost per chunk). So every socket the bastion reads SSH from
reads BULK_READ_SIZE per turn while its user's connections are the only ones reading, and
FAIR_READ_SIZE from the moment another user's connection reads until CONTENDED_FOR after the
last time it did (`Turns`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_OPEN, MSG_IGNORE, MSG_KEXINIT, MSG_USERAUTH_REQUEST
from asyncssh.packet import SSHPacket

from bastion.core.limits import Admission
from bastion.core.policy import name_problem

_EMPTY_STRING = b"\x00\x00\x00\x00"
MIN_PACKET_SIZE = 1024
FAIR_READ_SIZE = 16 * 1024
BULK_READ_SIZE = 256 * 1024  # asyncio's own
CONTENDED_FOR = 1.0  # seconds


class Turns:
    """How much each socket reads per event-loop turn: BULK_READ_SIZE while one owner (a user's
    connection to the bastion, with the connections to targets it opened) is the only one
    reading, FAIR_READ_SIZE for everyone once another owner reads, until CONTENDED_FOR has
    passed since two owners last read close together.

    A keystroke from another user therefore waits behind at most one large read; the rest of
    its way (to the target, its echo back) meets only slices. asyncio's socket transports read
    `max_size` bytes per turn and look it up at every read; a transport without that attribute
    (another event loop) is left as it is."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_owner: object = None
        self._last_read = -CONTENDED_FOR
        self._contended_until = -CONTENDED_FOR

    def read(self, owner: object, transport: asyncio.BaseTransport) -> None:
        """`owner`'s socket has just been read: set the size of its next read."""
        now = self._clock()
        if owner is not self._last_owner:
            if now - self._last_read < CONTENDED_FOR:
                self._contended_until = now + CONTENDED_FOR
            self._last_owner = owner
        self._last_read = now
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = FAIR_READ_SIZE if now < self._contended_until else BULK_READ_SIZE  # type: ignore[attr-defined]

    def contended(self) -> bool:
        return self._clock() < self._contended_until


TURNS = Turns()


def take_turns(transport: asyncio.BaseTransport) -> None:
    """Start a socket on FAIR_READ_SIZE per turn; `Turns` sets each next read from there."""
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = FAIR_READ_SIZE  # type: ignore[attr-defined]


class _CountedReads(asyncio.Protocol):
    """A protocol in front of another: each read is counted in `turns` for `owner` first."""

    def __init__(self, inner: asyncio.Protocol, owner: object, turns: Turns) -> None:
        self.inner, self._owner, self._turns = inner, owner, turns
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        take_turns(transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._turns.read(self._owner, self._transport)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class FairTCPConnector:
    """What asyncssh.connect(tunnel=...) takes: a plain TCP connection to the target whose
    reads count against `owner`'s turns (asyncssh gives no other hold on the transport)."""

    def __init__(self, local_addr: tuple[str, int] | None = None, *, owner: object = None,
                 turns: Turns = TURNS) -> None:
        self.local_addr = local_addr
        self._owner = owner if owner is not None else self
        self._turns = turns

    async def create_connection(self, session_factory: Callable[[], asyncio.Protocol],
                                host: str, port: int) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        transport, counted = await loop.create_connection(
            lambda: _CountedReads(session_factory(), self._owner, self._turns), host, port,
            local_addr=self.local_addr)
        assert isinstance(counted, _CountedReads)
        return transport, counted.inner


class _NoIgnorePadding:
    """Mixin: skip asyncssh's automatic empty IGNORE packet (needed only with CBC ciphers)."""

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,):
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]


def _open_with_floor(conn: SSHConnection, pkttype: int, pktid: int, packet: SSHPacket) -> None:
    """asyncssh's channel open, first refusing a channel whose maximum packet size is under
    MIN_PACKET_SIZE (asyncssh's open handlers never see that size)."""
    fields = SSHPacket(packet.get_remaining_payload())  # read ahead; `packet` stays unread
    kind, send_chan = fields.get_string(), fields.get_uint32()
    fields.get_uint32()  # the window
    max_packet = fields.get_uint32()
    if max_packet < MIN_PACKET_SIZE:
        conn.send_channel_open_failure(
            send_chan, asyncssh.OPEN_RESOURCE_SHORTAGE,
            f"bastion: a maximum packet size of {max_packet} bytes is too small "
            f"(at least {MIN_PACKET_SIZE})", "")
        conn.logger.debug1("Refused %s channel: maximum packet size %d",
                           kind.decode("ascii", "replace"), max_packet)
        return
    SSHConnection._process_channel_open(conn, pkttype, pktid, packet)


@runtime_checkable
class NameGate(Protocol):
    """Told of a user name that never reaches a login decision (see `name_problem`)."""

    def name_refused(self, raw: bytes, problem: str) -> None: ...


def _userauth_with_name_check(conn: SSHConnection, pkttype: int, pktid: int,
                              packet: SSHPacket) -> Any:
    """asyncssh's user auth request, first telling the owner of a name asyncssh drops the
    connection for (control characters, not UTF-8, too long) or never starts a login with
    (empty): the refusal is audited instead of silent."""
    fields = SSHPacket(packet.get_remaining_payload())  # read ahead; `packet` stays unread
    raw = fields.get_string()
    problem = name_problem(raw)
    owner = conn._owner
    if problem is not None and isinstance(owner, NameGate):
        owner.name_refused(raw, problem)
    return SSHConnection._process_userauth_request(conn, pkttype, pktid, packet)


async def _kexinit_with_rfc_guess(conn: SSHConnection, pkttype: int, pktid: int, packet: SSHPacket) -> None:
    """asyncssh's KEXINIT, then RFC 4253's rule for a client's guessed key exchange packet
    (first_kex_packet_follows): the guess is wrong, and the packet ignored, when the two sides'
    *first* key exchange or host key algorithms differ. asyncssh only compares the negotiated
    exchange with the client's first, so a client that follows the RFC (Dropbear) and sends its
    exchange again after a wrong guess met "Key exchange not in progress"."""
    fields = SSHPacket(packet.get_remaining_payload())  # read ahead; `packet` stays unread
    fields.get_bytes(16)  # cookie
    peer_kex, peer_host_keys = fields.get_namelist(), fields.get_namelist()
    for _ in range(8):  # ciphers, MACs, compression (each way), languages
        fields.get_namelist()
    follows = fields.get_boolean()
    await SSHConnection._process_kexinit(conn, pkttype, pktid, packet)
    ours_kex, ours_host_keys = conn._kex_algs, conn._server_host_key_algs
    if follows and conn._kex is not None and ours_kex and ours_host_keys and peer_kex and peer_host_keys:
        wrong = peer_kex[0] != ours_kex[0] or peer_host_keys[0] != ours_host_keys[0]
        conn._ignore_first_kex = conn._ignore_first_kex or wrong


class _PacketSizeFloor(SSHConnection):
    """Mixin for the server connections: channels with a tiny maximum packet size are refused,
    user names that are refused before any login decision are reported to the owner, and a
    client's wrongly guessed key exchange packet is ignored as RFC 4253 says."""

    # asyncssh dispatches packets through this class-level table.
    _packet_handlers = {**SSHConnection._packet_handlers, MSG_CHANNEL_OPEN: _open_with_floor,
                        MSG_USERAUTH_REQUEST: _userauth_with_name_check, MSG_KEXINIT: _kexinit_with_rfc_guess}


class CoalescingTransport(asyncio.Transport):
    """Collects the writes of one event-loop turn and passes them on as one write."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        super().__init__()
        self._transport: Any = transport
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(bytes(data))

    def _flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._chunks.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def can_write_eof(self) -> bool:
        return False


@runtime_checkable
class CertificateGate(Protocol):
    """The outer server's decision on a login certificate (with its reason audited)."""

    async def certificate_accepted(self, username: str, cert: Any) -> bool: ...


class OuterServerConnection(_PacketSizeFloor, _NoIgnorePadding, asyncssh.SSHServerConnection):
    """The connection users' ssh clients make to the bastion.

    `admit` decides before any SSH is spoken: refused (None), the transport is already closed
    and asyncssh never sees the connection. Admitted, its place is held until sign-in
    (`signed_in`) or the connection's end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: asyncssh.SSHServerConnectionOptions,
                 admit: Callable[[asyncio.BaseTransport], Admission | None]) -> None:
        super().__init__(loop, options)
        self._admit = admit
        self._admission: Admission | None = None
        self._socket: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admission = self._admit(transport)
        if self._admission is not None:
            self._socket = transport
            take_turns(transport)
            super().connection_made(transport)

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        if self._socket is not None:
            TURNS.read(self, self._socket)
        super().data_received(data, datatype)

    def connection_lost(self, exc: Exception | None = None) -> None:
        if self._admission is not None:
            self._admission.release()
            super().connection_lost(exc)

    def signed_in(self) -> None:
        """No longer waiting to sign in: the place goes to the next connection."""
        if self._admission is not None:
            self._admission.release()

    async def _validate_openssh_certificate(self, username: str, cert: Any) -> Any:
        # asyncssh asks the server object about the CA key only, then refuses a wrong type,
        # principal or validity without a word: the whole certificate goes to the owner first,
        # which decides (and audits) every refusal.
        owner = self._owner
        if not isinstance(owner, CertificateGate) or not await owner.certificate_accepted(username, cert):
            return None
        return await super()._validate_openssh_certificate(username, cert)


class InnerServerConnection(_PacketSizeFloor, _NoIgnorePadding, asyncssh.SSHServerConnection):
    """The SSH server run over a direct-tcpip channel of the outer connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport))
