"""An in-memory recording store that can be told to fail its writes (a full disk)."""

from __future__ import annotations

import errno


class MemoryFile:
    def __init__(self, store: MemoryStore) -> None:
        self.data = bytearray()
        self.synced = 0
        self._store = store

    def append(self, data: bytes) -> None:
        if self._store.fail_writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.data += data

    def append_all(self, parts: list[bytes]) -> None:
        self.append(b"".join(parts))

    def sync(self) -> None:
        self.synced = len(self.data)

    def close(self) -> None:
        pass


class MemoryStore:
    def __init__(self) -> None:
        self.files: dict[str, tuple[MemoryFile, MemoryFile]] = {}
        self.fail_writes = False

    def create(self, name: str) -> tuple[MemoryFile, MemoryFile]:
        if name in self.files:
            raise FileExistsError(name)
        files = MemoryFile(self), MemoryFile(self)
        self.files[name] = files
        return files

    def read(self, name: str) -> tuple[bytes, bytes | None]:
        cast, sig = self.files[name]
        return bytes(cast.data), bytes(sig.data) or None

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def location(self, name: str) -> str:
        return f"memory:{name}"
