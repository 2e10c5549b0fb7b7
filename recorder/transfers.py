"""Which sessions are file transfers, and passive parsers that turn sftp and legacy scp
streams into transfer markers.

The parsers read the protocol headers only; file contents are skipped, never kept. Each parser
is fed the two directions of one session and calls `emit(kind, text)` for every finished
transfer or change (`upload`, `download`, `rename`, `remove`, `mkdir`, `rmdir`).
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
import struct
from collections.abc import Callable
from enum import StrEnum

from recorder.sftp import (
    CLOSE,
    DATA,
    EXTENDED,
    HANDLE,
    INIT,
    MKDIR,
    OPEN,
    READ,
    REMOVE,
    RENAME,
    RMDIR,
    STATUS,
    WRITE,
    PacketFramer,
    PacketReader,
    SftpProtocolError,
    remember,
    split_packets,
)

Emit = Callable[[str, str], None]


class SessionKind(StrEnum):
    """How an SSH session started: the request that began it (RFC 4254, section 6.5)."""

    SHELL = "shell"
    EXEC = "exec"
    SUBSYSTEM = "subsystem"


class Transfer(StrEnum):
    """A protocol that carries files where other sessions carry terminal output."""

    SFTP = "sftp"  # the subsystem
    SCP = "scp"  # either protocol's remote end: `scp -t` receives, `scp -f` sends
    RSYNC = "rsync"  # rsync's server side, `rsync --server`


def transfer_of(kind: SessionKind, command: str | None = None,
                subsystem: str | None = None) -> Transfer | None:
    """The transfer a session is, from how it started: its kind, and its command or subsystem
    name. None: not a file transfer."""
    if kind is SessionKind.SUBSYSTEM:
        return Transfer.SFTP if subsystem == "sftp" else None
    text = (command or "").strip() if kind is SessionKind.EXEC else ""
    if not text:
        return None
    if text.split(None, 1)[0] in ("scp", "/usr/bin/scp") and (" -t" in text or " -f" in text):
        return Transfer.SCP
    if text.startswith("rsync ") and " --server" in text:
        return Transfer.RSYNC
    return None


class _Framer:
    """One direction's packets to a handler; stops (`broken`) on a stream that is not SFTP."""

    def __init__(self, handle: Callable[[int, PacketReader], None]) -> None:
        self._framer = PacketFramer()
        self._handle = handle
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            whole, ends = self._framer.feed(data)
        except SftpProtocolError:
            self.broken = True
            return
        for packet in split_packets(whole, ends):
            # A packet shorter than its type needs: not ours to judge, skip it.
            with contextlib.suppress(struct.error):
                self._handle(packet[4], PacketReader(packet, 5))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class SftpTransferParser:
    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._requests: dict[int, tuple[str, ...]] = {}
        self._reads: dict[int, bytes] = {}
        self._handles: dict[bytes, list[object]] = {}  # handle -> [path, written, read]
        self.client = _Framer(self._from_client)
        self.server = _Framer(self._from_server)

    @property
    def broken(self) -> bool:
        return self.client.broken or self.server.broken

    def _from_client(self, kind: int, r: PacketReader) -> None:
        if kind == INIT:
            return
        request = r.u32()
        # A reply answers the newest request with its id: one the target never saw (denied by
        # the bastion, answered by it) must not lend its meaning to the next one. Requests left
        # unanswered that way are forgotten in time (`remember` keeps a bounded number).
        self._requests.pop(request, None)
        self._reads.pop(request, None)
        if kind in (OPEN, REMOVE, MKDIR, RMDIR):
            remember(self._requests, request, ({OPEN: "open", REMOVE: "remove", MKDIR: "mkdir",
                                                 RMDIR: "rmdir"}[kind], _text(r.string())))
        elif kind == RENAME:
            remember(self._requests, request, ("rename", _text(r.string()), _text(r.string())))
        elif kind == EXTENDED:
            if r.string() == b"posix-rename@openssh.com":
                remember(self._requests, request, ("rename", _text(r.string()), _text(r.string())))
        elif kind == WRITE:
            handle = r.string()
            r.u64()
            state = self._handles.get(handle)
            if state is not None:
                state[1] = int(state[1]) + r.string_length()  # type: ignore[call-overload]
        elif kind == READ:
            remember(self._reads, request, r.string())
        elif kind == CLOSE:
            state = self._handles.pop(r.string(), None)
            if state is not None:
                path, written, read = state
                if written:
                    self._emit("upload", f"{path} {written} bytes")
                elif read:
                    self._emit("download", f"{path} {read} bytes")

    def _from_server(self, kind: int, r: PacketReader) -> None:
        request = r.u32()
        if kind == HANDLE:
            pending = self._requests.pop(request, None)
            if pending and pending[0] == "open":
                self._handles[r.string()] = [pending[1], 0, 0]
        elif kind == DATA:
            handle = self._reads.pop(request, None)
            state = self._handles.get(handle) if handle is not None else None
            if state is not None:
                state[2] = int(state[2]) + r.string_length()  # type: ignore[call-overload]
        elif kind == STATUS:
            self._reads.pop(request, None)
            pending = self._requests.pop(request, None)
            if pending and pending[0] != "open" and r.u32() == 0:
                if pending[0] == "rename":
                    self._emit("rename", f"{pending[1]} -> {pending[2]}")
                else:
                    self._emit(pending[0], pending[1])


def _under(folder: str, *parts: str) -> str:
    """`parts` joined under `folder` ("" for the current one; "/" for the root)."""
    rest = "/".join(parts)
    return f"{folder.rstrip('/')}/{rest}" if folder else rest


class ScpTransferParser:
    """Legacy scp (`scp -O`): the exec command says the direction; the sender's stream holds
    `C<mode> <size> <name>` lines, each followed by `size` bytes of content and a NUL."""

    def __init__(self, command: str, emit: Emit) -> None:
        self._emit = emit
        try:
            words = shlex.split(command) if command else []
        except ValueError:  # the command is the user's: an unclosed quote reads as plain words
            words = command.split()
        self.upload = "-t" in words  # the target receives
        # `-t TARGET`: a folder with -d (several files) or -r; else the file's own path, or a
        # folder it goes into: only the target's filesystem knows. `-f SOURCE`: each file is
        # named (and -r's first folder too) from the source's parent.
        self.path = words[-1] if len(words) > 1 else ""
        self.into_folder = (bool({"-d", "-r"} & set(words)) or self.path in ("", ".", "~")
                            or self.path.endswith("/"))
        self._line = bytearray()
        self._skip = 0
        self._dirs: list[str] = []

    def from_client(self, data: bytes) -> None:
        if self.upload:
            self._feed(data)

    def from_server(self, data: bytes) -> None:
        if not self.upload:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            newline = bytes(view).find(b"\n")
            if newline < 0:
                if len(self._line) < 4096:
                    self._line += view
                return
            self._line += view[:newline]
            view = view[newline + 1:]
            self._control(bytes(self._line).lstrip(b"\0"))
            self._line.clear()

    def _control(self, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace")
        if text.startswith("C"):
            parts = text[1:].split(" ", 2)
            if len(parts) == 3 and parts[1].isdigit():
                size = int(parts[1])
                self._emit("upload" if self.upload else "download", f"{self._file(parts[2])} {size} bytes")
                self._skip = size + 1  # the content, then its NUL
        elif text.startswith("D"):
            parts = text[1:].split(" ", 2)
            if len(parts) == 3:
                self._dirs.append(parts[2])
        elif text.startswith("E") and self._dirs:
            self._dirs.pop()

    def _file(self, name: str) -> str:
        """Where the file named `name` in a C line is, as far as the command says."""
        if not self.upload:
            return _under(posixpath.dirname(self.path.rstrip("/")), *self._dirs, name)
        if self._dirs or self.into_folder:
            return _under("" if self.path == "." else self.path, *self._dirs, name)
        return f"{self.path} ({name})"  # the file, renamed, or a folder it goes into
