"""Passive parsers that turn sftp and legacy scp streams into transfer markers.

They read the protocol headers only; file contents are skipped, never kept. Each parser is
fed the two directions of one session and calls `emit(kind, text)` for every finished
transfer or change (`upload`, `download`, `rename`, `remove`, `mkdir`, `rmdir`).
"""

from __future__ import annotations

import shlex
import struct
from collections.abc import Callable

Emit = Callable[[str, str], None]

# SFTP packet types (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it)
OPEN, CLOSE, READ, WRITE, REMOVE, MKDIR, RMDIR, RENAME, EXTENDED = 3, 4, 5, 6, 13, 14, 15, 18, 200
STATUS, HANDLE, DATA = 101, 102, 103
MAX_PACKET = 4 * 1024 * 1024  # larger than any sane SFTP packet: stop parsing, say so


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

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
        value = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        return value

    def string_length(self) -> int:
        return self.u32()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class _Framer:
    """Splits one direction's byte stream into SFTP packets (length-prefixed)."""

    def __init__(self, handle: Callable[[int, _Reader], None]) -> None:
        self._buf = bytearray()
        self._handle = handle
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        self._buf += data
        buf = self._buf
        start = 0
        while len(buf) - start >= 5:
            (length,) = struct.unpack_from(">I", buf, start)
            if length > MAX_PACKET or length == 0:
                self.broken = True
                buf.clear()
                return
            end = start + 4 + length
            if end > len(buf):
                break
            view = memoryview(buf)[start + 4:end]
            try:
                self._handle(view[0], _Reader(view[1:]))
            except struct.error:
                pass  # a packet shorter than its type needs: not ours to judge, skip it
            finally:
                view.release()
            start = end
        if start:
            del buf[:start]


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

    def _from_client(self, kind: int, r: _Reader) -> None:
        if kind in (OPEN, REMOVE, MKDIR, RMDIR):
            request = r.u32()
            self._requests[request] = ({OPEN: "open", REMOVE: "remove", MKDIR: "mkdir",
                                        RMDIR: "rmdir"}[kind], _text(r.string()))
        elif kind == RENAME:
            request = r.u32()
            self._requests[request] = ("rename", _text(r.string()), _text(r.string()))
        elif kind == EXTENDED:
            request = r.u32()
            if r.string() == b"posix-rename@openssh.com":
                self._requests[request] = ("rename", _text(r.string()), _text(r.string()))
        elif kind == WRITE:
            r.u32()
            handle = r.string()
            r.u64()
            state = self._handles.get(handle)
            if state is not None:
                state[1] = int(state[1]) + r.string_length()  # type: ignore[call-overload]
        elif kind == READ:
            request = r.u32()
            self._reads[request] = r.string()
        elif kind == CLOSE:
            r.u32()
            state = self._handles.pop(r.string(), None)
            if state is not None:
                path, written, read = state
                if written:
                    self._emit("upload", f"{path} {written} bytes")
                elif read:
                    self._emit("download", f"{path} {read} bytes")

    def _from_server(self, kind: int, r: _Reader) -> None:
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


class ScpTransferParser:
    """Legacy scp (`scp -O`): the exec command says the direction; the sender's stream holds
    `C<mode> <size> <name>` lines, each followed by `size` bytes of content and a NUL."""

    def __init__(self, command: str, emit: Emit) -> None:
        self._emit = emit
        words = shlex.split(command) if command else []
        self.upload = "-t" in words  # the target receives
        self.folder = words[-1] if words else ""
        self._line = bytearray()
        self._skip = 0
        self._dirs: list[str] = []

    @staticmethod
    def is_scp(command: str | None) -> bool:
        return bool(command) and command.split(None, 1)[0] in ("scp", "/usr/bin/scp") and (
            " -t" in command or " -f" in command)  # type: ignore[operator]

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
                folder = "/".join([self.folder.rstrip("/"), *self._dirs]) if self.folder else ""
                path = f"{folder}/{parts[2]}" if folder else parts[2]
                self._emit("upload" if self.upload else "download", f"{path} {size} bytes")
                self._skip = size + 1  # the content, then its NUL
        elif text.startswith("D"):
            parts = text[1:].split(" ", 2)
            if len(parts) == 3:
                self._dirs.append(parts[2])
        elif text.startswith("E") and self._dirs:
            self._dirs.pop()
