"""The pre-authentication limits at the listener: a connection over them is closed before the
bastion speaks any SSH (no key exchange, no crypto), and refusals are logged in summaries."""

from __future__ import annotations

import asyncio

from bastion import metrics
from bastion.config import LimitSettings
from bastion.core.limits import Admission, LimitHit, RefusalTally, StartupGate
from bastion.state.audit import AuditLog
from bastion.state.events import ConnectionsRefused

# While refusals go on, one `connections_refused` line per this many seconds at most.
REPORT_INTERVAL = 10.0
# What a refused client reads (RFC 4253 allows lines before the version; OpenSSH shows it with -v).
REFUSAL_LINE = b"bastion: too many connections waiting to sign in, try again later\r\n"


class StartupGuard:
    """Admits or refuses new connections by `[limits]`; reports refusals to the audit log."""

    def __init__(self, settings: LimitSettings, audit: AuditLog, *,
                 interval: float = REPORT_INTERVAL) -> None:
        self.gate = StartupGate(settings.unauthenticated, settings.unauthenticated_per_source)
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
