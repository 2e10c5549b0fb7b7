"""Admission limits: how many connections may wait for sign-in, in total and from one address
(sshd's MaxStartups and PerSourceMaxStartups), the tally that reports refusals without
writing one log line per refused connection, and how many sessions one user may hold.

Pure bookkeeping: the caller says which address and what time it is.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LimitHit:
    """A refusal: which setting bit and its value."""

    setting: str
    limit: int


class Admission:
    """One admitted connection's place; `release` (any number of times) gives it back."""

    def __init__(self, counts: WaitingCounts, source: str) -> None:
        self._counts: WaitingCounts | None = counts
        self.source = source

    def release(self) -> None:
        if self._counts is not None:
            with self._counts.locked():
                self._counts.add(self.source, -1)
            self._counts = None


class WaitingCounts(Protocol):
    """Where the gate counts waiting connections: this process's own memory, or (with several
    worker processes on one port) a board they all share, so a limit holds for the service."""

    def locked(self) -> AbstractContextManager[None]:
        """Hold the counts still: no other process changes them until the block ends."""

    def read(self, source: str) -> tuple[int, int]:
        """Connections waiting: in total, and from `source`."""

    def add(self, source: str, delta: int) -> None:
        """Count one more (or one fewer) from `source`."""


class LocalCounts:
    """The counts of one process."""

    def __init__(self) -> None:
        self._by_source: Counter[str] = Counter()
        self._count = 0

    def locked(self) -> AbstractContextManager[None]:
        return nullcontext()

    def read(self, source: str) -> tuple[int, int]:
        return self._count, self._by_source[source]

    def add(self, source: str, delta: int) -> None:
        self._count += delta
        self._by_source[source] += delta
        if self._by_source[source] <= 0:
            del self._by_source[source]


class StartupGate:
    """Counts connections that have not signed in yet, by source address. A limit of 0 is no limit."""

    TOTAL = "limits.unauthenticated"
    PER_SOURCE = "limits.unauthenticated_per_source"

    def __init__(self, total: int, per_source: int, counts: WaitingCounts | None = None) -> None:
        self.total, self.per_source = total, per_source
        self.counts: WaitingCounts = counts if counts is not None else LocalCounts()

    @property
    def waiting(self) -> int:
        """Connections admitted and not yet signed in or gone."""
        with self.counts.locked():
            return self.counts.read("")[0]

    def admit(self, source: str) -> Admission | LimitHit:
        with self.counts.locked():
            waiting, from_source = self.counts.read(source)
            if self.total and waiting >= self.total:
                return LimitHit(self.TOTAL, self.total)
            if self.per_source and from_source >= self.per_source:
                return LimitHit(self.PER_SOURCE, self.per_source)
            self.counts.add(source, 1)
        return Admission(self.counts, source)


SESSIONS_PER_USER = "limits.sessions_per_user"


def session_limit_refusal(user: str, live: int, limit: int) -> str | None:
    """Why `user`, who holds `live` sessions, may not open another; None if they may."""
    if limit and live >= limit:
        return f"too many sessions: {user} has {live} open, {SESSIONS_PER_USER} is {limit}"
    return None


@dataclass(frozen=True)
class RefusalReport:
    """Refusals since the last report: how many, by setting, and the addresses refused most."""

    count: int
    by_setting: dict[str, int]
    top_sources: dict[str, int]


class RefusalTally:
    """Counts refusals between reports. The first refusal after a quiet spell is reported at once;
    while refusals go on, at most one report every `interval` seconds carries their counts."""

    TOP_SOURCES = 5

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_report: float | None = None
        self._by_setting: Counter[str] = Counter()
        self._by_source: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        """Refusals counted and not yet reported."""
        return sum(self._by_setting.values())

    def add(self, hit: LimitHit, source: str) -> None:
        self._by_setting[hit.setting] += 1
        self._by_source[source] += 1

    def due_in(self, now: float) -> float:
        """Seconds until the next report may be written; 0: now."""
        if self._last_report is None:
            return 0.0
        return max(0.0, self._last_report + self.interval - now)

    def take(self, now: float) -> RefusalReport | None:
        """The report of what was counted (None if nothing was), starting the next interval."""
        if not self._by_setting:
            return None
        report = RefusalReport(
            count=self.pending,
            by_setting=dict(sorted(self._by_setting.items())),
            top_sources=dict(self._by_source.most_common(self.TOP_SOURCES)),
        )
        self._by_setting.clear()
        self._by_source.clear()
        self._last_report = now
        return report
