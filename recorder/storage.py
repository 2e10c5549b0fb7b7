"""Where recording bytes go. The recorder talks to `RecordingStore` only."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class AppendFile(Protocol):
    def append_all(self, parts: list[bytes]) -> None:
        """Append the parts in order (the writer hands over many lines at once)."""

    def append(self, data: bytes) -> None:
        """Append whole lines; raises OSError when the bytes cannot be stored."""

    def sync(self) -> None:
        """Make what was appended durable."""

    def close(self) -> None: ...


class RecordingStore(Protocol):
    def create(self, name: str) -> tuple[AppendFile, AppendFile]:
        """New (cast, signatures) files for recording `name`; fails if it exists."""

    def read(self, name: str) -> tuple[bytes, bytes | None]:
        """(cast, signatures or None)."""

    def delete(self, name: str) -> None: ...

    def location(self, name: str) -> str:
        """Where an operator finds it (a path, a URL)."""


def dated_name(session_id: str, started: float) -> str:
    """`2026/11/28/<session id>`: one folder a day keeps listings and retention cheap."""
    return time.strftime("%Y/%m/%d/", time.gmtime(started)) + session_id


def append_all(fd: int, parts: list[bytes]) -> None:
    """Write every part, in order, with as few system calls (and no joined copy) as the kernel allows."""
    for start in range(0, len(parts), IOV_MAX):
        batch = parts[start:start + IOV_MAX]
        written = os.writev(fd, batch)
        if written < sum(map(len, batch)):  # a short write: the rest the slow way
            rest = memoryview(b"".join(batch))[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


class FdFile:
    """An append-only file by descriptor (the recorder process gets the descriptors passed)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def create(cls, path: Path) -> FdFile:
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600))

    def append(self, data: bytes) -> None:
        append_all(self._fd, [data])

    def append_all(self, parts: list[bytes]) -> None:
        append_all(self._fd, parts)

    def sync(self) -> None:
        os.fsync(self._fd)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalDirectoryStore:
    """`root/YYYY/MM/DD/<id>.cast` and `<id>.cast.sig`, files 0600, folders 0700."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _cast(self, name: str) -> Path:
        return self.root / f"{name}.cast"

    def create(self, name: str) -> tuple[FdFile, FdFile]:
        path = self._cast(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        cast = FdFile.create(path)
        try:
            return cast, FdFile.create(path.with_name(path.name + ".sig"))
        except OSError:
            cast.close()
            raise

    def read(self, name: str) -> tuple[bytes, bytes | None]:
        path = self._cast(name)
        signatures = path.with_name(path.name + ".sig")
        return path.read_bytes(), signatures.read_bytes() if signatures.exists() else None

    def delete(self, name: str) -> None:
        path = self._cast(name)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sig").unlink(missing_ok=True)

    def location(self, name: str) -> str:
        return str(self._cast(name))
