"""The SFTP wire format, pure: packet framing, what a client's request asks for, status replies.

SFTP (draft-ietf-secsh-filexfer-02, version 3, as OpenSSH speaks it) is a stream of packets,
each `uint32 length` then `byte type` then fields; every request but INIT carries a request id
that its reply repeats. The recorder reads it to mark transfers; the bastion's sftp gate reads
it to decide each request before the target sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

# Client requests
INIT, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 1, 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
# Server replies
VERSION, STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 2, 101, 102, 103, 104, 105, 201
# Open flags: any of these asks to change the file
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC = 0x01, 0x02, 0x04, 0x08, 0x10
CHANGES_FILE = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
FX_PERMISSION_DENIED = 3

MAX_PACKET = 4 * 1024 * 1024  # larger than any sane SFTP packet (OpenSSH's own limit is 256 KiB)
# Requests awaiting their reply, handles open: what a reader remembers of them is bounded (the
# oldest is forgotten first), whatever a client or server does.
MAX_REMEMBERED = 4096

# The operations a rule can name. A request for one of them is decided; the rest need no
# decision of their own (see `REQUESTS`).
OPERATIONS = ("read", "write", "remove", "rmdir", "mkdir", "rename", "setstat", "symlink", "link",
              "list")
# Requests the gate cannot read with certainty: decided as unsure, never passed silently.
UNKNOWN, UNKNOWN_EXTENDED = "unknown", "extended"

# type -> (operation, how many path strings follow the request id). The operation "" is a
# request that needs no decision: reading metadata of a path (stat, realpath, readlink), or
# working on a handle whose opening was decided (read, write, readdir, close). FSETSTAT works
# on a handle too, but changes the file: it is decided as "setstat" on the handle's path.
REQUESTS: dict[int, tuple[str, int]] = {
    OPEN: ("read", 1),  # "write" when its flags ask to change the file
    CLOSE: ("", 0), READ: ("", 0), WRITE: ("", 0), FSTAT: ("", 0), READDIR: ("", 0),
    LSTAT: ("", 1), STAT: ("", 1), REALPATH: ("", 1), READLINK: ("", 1),
    SETSTAT: ("setstat", 1), FSETSTAT: ("setstat", 0), OPENDIR: ("list", 1),
    REMOVE: ("remove", 1), MKDIR: ("mkdir", 1), RMDIR: ("rmdir", 1),
    RENAME: ("rename", 2), SYMLINK: ("symlink", 2),
}
# Extended requests (OpenSSH's), by name: (operation, paths that follow the name).
EXTENSIONS: dict[bytes, tuple[str, int]] = {
    b"posix-rename@openssh.com": ("rename", 2),
    b"hardlink@openssh.com": ("link", 2),
    b"lsetstat@openssh.com": ("setstat", 1),
    b"statvfs@openssh.com": ("", 1),
    b"expand-path@openssh.com": ("", 1),
    b"fstatvfs@openssh.com": ("", 0),
    b"fsync@openssh.com": ("", 0),
    b"limits@openssh.com": ("", 0),
    b"home-directory": ("", 0),
    b"users-groups-by-id@openssh.com": ("", 0),
    b"copy-data": ("", 0),  # between two handles, each decided when it was opened
}
HANDLE_REQUESTS = frozenset({CLOSE, READ, WRITE, FSTAT, FSETSTAT, READDIR})


class SftpProtocolError(ValueError):
    """The stream is not SFTP, or a packet is larger than `MAX_PACKET`."""


class PacketReader:
    """Reads the fields of one packet in order; a field past its end raises `struct.error`."""

    def __init__(self, data: memoryview | bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        length = self.u32()
        if self.pos + length > len(self.data):
            raise struct.error("string runs past the end of the packet")
        value = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        return value

    def string_length(self) -> int:
        """A string's length, its bytes skipped unread (file contents)."""
        length = self.u32()
        self.pos += length
        return length

    def path(self) -> str:
        return self.string().decode("utf-8", "backslashreplace")


class PacketFramer:
    """Splits one direction's byte stream into whole packets; keeps at most one partial packet."""

    def __init__(self, what: str = "packet", max_packet: int = MAX_PACKET) -> None:
        self._partial = bytearray()
        self._what, self._max = what, max_packet

    @property
    def pending(self) -> int:
        """Bytes of a packet not yet whole."""
        return len(self._partial)

    def drain(self) -> bytes:
        """The partial packet, given up (the stream ended)."""
        partial, self._partial = bytes(self._partial), bytearray()
        return partial

    def feed(self, data: bytes) -> tuple[bytes, list[int]]:
        """The whole packets this chunk completes, back to back, and where each one ends."""
        source: bytes | bytearray = data
        if self._partial:
            self._partial += data
            source = self._partial
        ends: list[int] = []
        pos, size = 0, len(source)
        while size - pos >= 4:
            (length,) = struct.unpack_from(">I", source, pos)
            if length == 0 or length > self._max:
                raise SftpProtocolError(
                    f"an sftp {self._what} of {length} bytes (the limit is {self._max})")
            if pos + 4 + length > size:
                break
            pos += 4 + length
            ends.append(pos)
        if source is data:
            if pos < size:
                self._partial = bytearray(data[pos:])
            return (data if pos == size else data[:pos]), ends
        if pos == size:
            whole, self._partial = bytes(self._partial), bytearray()
            return whole, ends
        with memoryview(self._partial) as view:  # one copy, and released before the resize
            whole = bytes(view[:pos])
        del self._partial[:pos]
        return whole, ends


K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V) -> None:
    """table[key] = value, as its newest entry, forgetting the oldest beyond `MAX_REMEMBERED`."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_REMEMBERED:
        del table[next(iter(table))]


def split_packets(whole: bytes, ends: list[int]) -> list[memoryview]:
    view, start, packets = memoryview(whole), 0, []
    for end in ends:
        packets.append(view[start:end])
        start = end
    return packets


@dataclass(frozen=True)
class SftpRequest:
    """One client request, read for a decision. `operation` "" needs none."""

    type: int
    id: int | None  # None: INIT, the only request without one
    operation: str = ""
    paths: tuple[str, ...] = ()
    handle: bytes | None = None
    open_flags: int = 0
    extension: str = ""
    malformed: bool = False  # shorter than its fields, or not what its type says

    def describe(self) -> str:
        if self.operation == UNKNOWN:
            return f"unknown request type {self.type}"
        if self.operation == UNKNOWN_EXTENDED:
            return f"unknown extended request {self.extension!r}"
        return self.operation


def parse_request(packet: memoryview | bytes) -> SftpRequest:
    """Read one whole client packet (with its length prefix). Raises `SftpProtocolError` only
    for a packet too short to carry its request id: nothing could be answered to it."""
    kind = packet[4]
    if kind == INIT:
        return SftpRequest(INIT, None)
    if len(packet) < 9:
        raise SftpProtocolError(f"an sftp request of type {kind} without a request id")
    reader = PacketReader(packet, 5)
    request_id = reader.u32()
    try:
        return _fields(kind, request_id, reader)
    except struct.error:
        # What it asks for is unknown (its name or flags are cut off): the stronger guess.
        operation = {EXTENDED: UNKNOWN_EXTENDED, OPEN: "write"}.get(kind) or REQUESTS[kind][0]
        return SftpRequest(kind, request_id, operation, malformed=True)


def _fields(kind: int, request_id: int, reader: PacketReader) -> SftpRequest:
    if kind == EXTENDED:
        name = reader.string()
        if name not in EXTENSIONS:
            return SftpRequest(kind, request_id, UNKNOWN_EXTENDED,
                               extension=name.decode("utf-8", "backslashreplace"))
        operation, count = EXTENSIONS[name]
        paths = tuple(reader.path() for _ in range(count))
        return SftpRequest(kind, request_id, operation, paths, extension=name.decode())
    if kind not in REQUESTS:
        return SftpRequest(kind, request_id, UNKNOWN)
    operation, count = REQUESTS[kind]
    if kind in HANDLE_REQUESTS:
        return SftpRequest(kind, request_id, operation, handle=reader.string())
    paths = tuple(reader.path() for _ in range(count))
    if kind == OPEN:
        flags = reader.u32()
        return SftpRequest(kind, request_id, "write" if flags & CHANGES_FILE else "read", paths,
                           open_flags=flags)
    return SftpRequest(kind, request_id, operation, paths)


def parse_reply(packet: memoryview | bytes) -> tuple[int | None, bytes | None]:
    """The request id a whole reply answers (None: VERSION, or too short) and, for a HANDLE
    reply, the handle."""
    if packet[4] == VERSION or len(packet) < 9:
        return None, None
    reader = PacketReader(packet, 5)
    request_id = reader.u32()
    if packet[4] != HANDLE:
        return request_id, None
    try:
        return request_id, reader.string()
    except struct.error:
        return request_id, None


def parse_name_reply(packet: memoryview | bytes) -> str | None:
    """The first name of a whole NAME reply (a REALPATH's answer); None for any other packet."""
    if packet[4] != NAME:
        return None
    reader = PacketReader(packet, 9)
    try:
        return reader.path() if reader.u32() else None
    except struct.error:
        return None


def realpath_packet(request_id: int, path: str) -> bytes:
    text = path.encode()
    body = struct.pack(">BII", REALPATH, request_id, len(text)) + text
    return struct.pack(">I", len(body)) + body


def status_packet(request_id: int, code: int, message: str) -> bytes:
    """An SSH_FXP_STATUS reply (with an empty language tag)."""
    text = message.encode("utf-8", "replace")
    body = struct.pack(">BIII", STATUS, request_id, code, len(text)) + text + struct.pack(">I", 0)
    return struct.pack(">I", len(body)) + body
