"""The pre-authentication limits at the listener: a connection over them is closed before the
bastion speaks any SSH (no key exchange, no crypto), and refusals are logged in summaries."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import mmap
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from bastion import metrics
from bastion.config import LimitSettings
from bastion.core.limits import Admission, LimitHit, RefusalTally, StartupGate, WaitingCounts
from bastion.state.audit import AuditLog
from bastion.state.events import ConnectionsRefused

# While refusals go on, one `connections_refused` line per this many seconds at most.
REPORT_INTERVAL = 10.0
# What a refused client reads (RFC 4253 allows lines before the version; OpenSSH shows it with -v).
REFUSAL_LINE = b"bastion: too many connections waiting to sign in, try again later\r\n"


class StartupGuard:
    """Admits or refuses new connections by `[limits]`; reports refusals to the audit log."""

    def __init__(self, settings: LimitSettings, audit: AuditLog, *,
                 interval: float = REPORT_INTERVAL, counts: WaitingCounts | None = None) -> None:
        self.gate = StartupGate(settings.unauthenticated, settings.unauthenticated_per_source, counts)
        self._tally = RefusalTally(interval)
        self._audit = audit
        self._report_timer: asyncio.TimerHandle | None = None

    def admit(self, transport: asyncio.BaseTransport) -> Admission | None:
        """The connection's place, or None: then it was refused and its transport closed."""
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        outcome = self.gate.admit(source)
        if isinstance(outcome, Admission):
            metrics.CONNECTIONS.labels(result="accepted").inc()
            return outcome
        metrics.CONNECTIONS.labels(result="refused").inc()
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(REFUSAL_LINE)
        transport.close()
        self._refused(outcome, source)
        return None

    def _refused(self, hit: LimitHit, source: str) -> None:
        self._tally.add(hit, source)
        if self._report_timer is not None:
            return  # a report is already on its way
        loop = asyncio.get_running_loop()
        delay = self._tally.due_in(loop.time())
        if delay <= 0:
            self._report()
        else:
            self._report_timer = loop.call_later(delay, self._report)

    def _report(self) -> None:
        self._report_timer = None
        report = self._tally.take(asyncio.get_running_loop().time())
        if report is not None:
            self._audit.write(ConnectionsRefused(
                count=report.count, limits=report.by_setting, clients=report.top_sources,
                unauthenticated=self.gate.waiting,
            ))

    def close(self) -> None:
        """Write what is still counted (at stop)."""
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report()


class SharedCounts:
    """The waiting connections of every worker process on one port, counted on a board they share,
    so that `[limits]` holds for the service and not for each worker.

    The board is a memory file the supervisor makes and each worker maps: a random key, then a row
    per worker, each a total and `SLOTS` counters by source address (the address hashed with the
    key; two addresses that fall in one slot share its count, so a refusal can come early, never
    late). A worker writes only its own row, so one that dies takes nothing with it: the worker
    started in its place zeroes the row. A POSIX record lock on the file makes reading the counts
    and counting one more a single step for the workers together (it is held for microseconds).
    """

    SLOTS = 16384
    KEY_SIZE = 16
    CELL = 4  # bytes of one counter (unsigned 32-bit)

    @classmethod
    def create(cls, workers: int) -> int:
        """A new board for `workers` rows; its file descriptor (to pass to the workers)."""
        fd = os.memfd_create("bastion-waiting-connections")
        os.ftruncate(fd, cls._size(workers))
        os.pwrite(fd, secrets.token_bytes(cls.KEY_SIZE), 0)
        return fd

    @classmethod
    def _size(cls, workers: int) -> int:
        return cls.KEY_SIZE + workers * (1 + cls.SLOTS) * cls.CELL

    def __init__(self, fd: int, workers: int, worker: int) -> None:
        if not 0 <= worker < workers or os.fstat(fd).st_size != self._size(workers):
            raise ValueError(f"the waiting-connections board does not fit worker {worker} of {workers}")
        self._fd = fd
        self._map = mmap.mmap(fd, self._size(workers))
        self._key = bytes(self._map[:self.KEY_SIZE])
        self._cells = memoryview(self._map)[self.KEY_SIZE:].cast("I")
        row = 1 + self.SLOTS
        self._rows = range(0, workers * row, row)
        self._mine = worker * row
        with self.locked():
            self._cells[self._mine:self._mine + row] = memoryview(bytes(row * self.CELL)).cast("I")

    @contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _slot(self, source: str) -> int:
        digest = hashlib.blake2b(source.encode(), key=self._key, digest_size=4).digest()
        return 1 + int.from_bytes(digest, "little") % self.SLOTS

    def read(self, source: str) -> tuple[int, int]:
        slot, cells = self._slot(source), self._cells
        return sum(cells[r] for r in self._rows), sum(cells[r + slot] for r in self._rows)

    def add(self, source: str, delta: int) -> None:
        slot, cells = self._slot(source), self._cells
        cells[self._mine] += delta
        cells[self._mine + slot] += delta
