"""Where recording bytes go. The recorder talks to `RecordingStore` only."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path
from typing import Protocol

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class AppendFile(Protocol):
    def append_all(self, parts: list[bytes]) -> None:
        """Append the parts (whole lines) in order; the writer hands over many at once.

        Raises `PartialWrite` when only the first parts could be stored: the file then ends
        with the last of those, whole (never with part of a line)."""

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


class PartialWrite(OSError):
    """Only the first `kept` parts were stored (whole); the rest could not be."""

    def __init__(self, cause: OSError, kept: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.kept = kept


def append_all(fd: int, parts: list[bytes]) -> int:
    """Write every part, in order, with as few system calls (and no joined copy) as the kernel
    allows; returns the bytes written."""
    total = 0
    for start in range(0, len(parts), IOV_MAX):
        batch = parts[start:start + IOV_MAX]
        written = os.writev(fd, batch)
        if written < sum(map(len, batch)):  # a short write: the rest the slow way
            rest = memoryview(b"".join(batch))[written:]
            while rest:
                step = os.write(fd, rest)
                rest = rest[step:]
                written += step
        total += written
    return total


def append_whole(fd: int, size: int, parts: list[bytes]) -> int:
    """Append `parts` to a file of `size` bytes; returns its new size.

    A write that fails part way (a full disk, a file size limit) would leave a line cut short,
    which asciinema cannot read: the file is cut back to the end of the last part written
    whole, and `PartialWrite` says how many parts that is."""
    try:
        return size + append_all(fd, parts)
    except OSError as exc:
        now = os.fstat(fd).st_size
        kept, end = 0, size
        for part in parts:
            if end + len(part) > now:
                break
            end += len(part)
            kept += 1
        if now != end:
            os.ftruncate(fd, end)  # frees blocks: works on a full disk
        raise PartialWrite(exc, kept) from exc


class FdFile:
    """An append-only file by descriptor (the recorder process gets the descriptors passed)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size

    @classmethod
    def create(cls, path: Path) -> FdFile:
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600))

    def append(self, data: bytes) -> None:
        self.append_all([data])

    def append_all(self, parts: list[bytes]) -> None:
        try:
            self._size = append_whole(self._fd, self._size, parts)
        except PartialWrite:
            self._size = os.fstat(self._fd).st_size
            raise

    def sync(self) -> None:
        os.fsync(self._fd)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class UnsafeFolder(PermissionError):
    """A recordings folder that other users could write to (and so swap or delete recordings in)."""


def check_private(folder: Path) -> None:
    """Refuse a folder that is not a directory, or that users other than its owner may write."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(errno.ENOTDIR, f"{folder} is not a folder")
    if info.st_mode & 0o022:
        raise UnsafeFolder(errno.EACCES, f"{folder} is writable by other users "
                                         f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 700 {folder}")


def make_private(root: Path, relative: Path) -> None:
    """Create `root/relative` one level at a time, every new level 0700 (whatever the umask)."""
    folder = root
    for part in relative.parts:
        folder = folder / part
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # a umask can take bits away, never add them: be exact


class LocalDirectoryStore:
    """`root/YYYY/MM/DD/<id>.cast` and `<id>.cast.sig`, files 0600, folders 0700.

    `prepare()` creates the root 0700, or refuses one that other users can write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prepared = False

    def prepare(self) -> None:
        self._prepared = True
        if not self.root.exists():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            make_private(self.root.parent, Path(self.root.name))
        check_private(self.root)

    def _cast(self, name: str) -> Path:
        return self.root / f"{name}.cast"

    def create(self, name: str) -> tuple[FdFile, FdFile]:
        path = self._cast(name)
        if not self._prepared:
            self.prepare()
        make_private(self.root, Path(name).parent)
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
