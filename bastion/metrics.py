"""The bastion's Prometheus metrics, defined once: a call site counts with one line,

    metrics.AUTHENTICATIONS.labels(method="publickey", result="success").inc()

Names follow Prometheus's conventions (`bastion_` prefix, `_total` counters, base units:
seconds and bytes). Figures that already live in the running bastion (live sessions, bytes of
live sessions, the recorder's backlog) are not counted twice: `LiveFigures` reads them when
Prometheus scrapes. Served by `bastion.web.metrics` on `[metrics] listen`; the reference is
docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

# No `_created` series beside every counter: they would double the exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_open_fds, process_resident_memory_bytes, CPU seconds

# Seconds: from a few milliseconds (a decision) to a minute (an upstream login retried).
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SETUP = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONNECTIONS = Counter(
    "bastion_connections", "TCP connections to the SSH listener, by result: accepted, or refused "
    "by [limits] before any SSH was spoken.", ["result"], registry=REGISTRY)
AUTHENTICATIONS = Counter(
    "bastion_authentications", "Sign-in attempts on the outer connection, by method (publickey, "
    "certificate, sso) and result (success, failure).", ["method", "result"], registry=REGISTRY)
SESSIONS = Counter(
    "bastion_sessions", "Sessions started through the bastion, by kind (shell, exec, subsystem).",
    ["kind"], registry=REGISTRY)
SESSION_SETUP = Histogram(
    "bastion_session_setup_seconds", "From a jump's channel open to its upstream login done (policy, "
    "certificate, connect and login to the target).", registry=REGISTRY, buckets=_SETUP)
SCREENING_DECISIONS = Counter(
    "bastion_screening_decisions", "Screening verdicts, by action (allow, log, approve, deny) and the "
    "rule that decided (empty: the default).", ["action", "rule"], registry=REGISTRY)
ENTER_DECISION = Histogram(
    "bastion_screening_enter_decision_seconds", "At a terminal, from a held Enter to its release when "
    "the line was allowed: what screening adds to a command's start.", registry=REGISTRY, buckets=_FAST)
APPROVALS_DECIDED = Counter(
    "bastion_approvals_decided", "Approval requests that ended, by result (approved, denied, expired, "
    "cancelled).", ["result"], registry=REGISTRY)
MASKING_HITS = Counter(
    "bastion_masking_hits", "Secrets masked, by detector and direction (output, input).",
    ["detector", "direction"], registry=REGISTRY)
RECORDER_FAILURES = Counter(
    "bastion_recorder_failures", "Recorder failures, by what failed: recording (a session's file), "
    "index, worker (the recorder process exited).", ["what"], registry=REGISTRY)
CERTIFICATES_ISSUED = Counter(
    "bastion_certificates_issued", "Certificates signed, by kind: session (for a target, one per "
    "upstream login), login (by bastion login).", ["kind"], registry=REGISTRY)
CERTIFICATES_REFUSED = Counter(
    "bastion_certificates_refused", "Requests for a login certificate that were refused.",
    registry=REGISTRY)
EVENT_LOOP_LAG = Gauge(
    "bastion_event_loop_lag_seconds", "How late the event loop ran a timer, at the last measure (every "
    "0.5 s): time the loop spent on something that blocked it.", registry=REGISTRY)
EVENT_LOOP_LAG_MAX = Gauge(
    "bastion_event_loop_lag_max_seconds", "The largest event loop lag measured since the last scrape.",
    registry=REGISTRY)
OPEN_FILES_LIMIT = Gauge(
    "bastion_open_files_limit", "RLIMIT_NOFILE's soft limit after start (each session holds about 2).",
    registry=REGISTRY)

for _method in ("publickey", "certificate", "sso"):  # every series exists from the start at 0
    for _result in ("success", "failure"):
        AUTHENTICATIONS.labels(method=_method, result=_result)
for _result in ("accepted", "refused"):
    CONNECTIONS.labels(result=_result)
for _result in ("approved", "denied", "expired", "cancelled"):
    APPROVALS_DECIDED.labels(result=_result)
for _what in ("recording", "index", "worker"):
    RECORDER_FAILURES.labels(what=_what)
for _kind in ("session", "login"):
    CERTIFICATES_ISSUED.labels(kind=_kind)


@dataclass(eq=False)  # registered in a registry: hashed by identity
class LiveFigures:
    """What the running bastion knows at any moment, read at scrape time. Each source is a
    callable the composition root sets; unset ones are left out of the exposition."""

    sessions_by_kind: Callable[[], dict[str, int]] | None = None
    connections: Callable[[], int] | None = None
    bytes_total: Callable[[], tuple[int, int]] | None = None  # (to targets, from targets)
    approvals_pending: Callable[[], int] | None = None
    recorder: Callable[[], tuple[int, float]] | None = None  # (backlog bytes, seconds behind)

    def collect(self) -> Iterable[Metric]:
        if self.sessions_by_kind is not None:
            active = GaugeMetricFamily("bastion_sessions_active", "Live sessions, by kind.", labels=["kind"])
            counts = {"shell": 0, "exec": 0, "subsystem": 0} | self.sessions_by_kind()
            for kind, count in sorted(counts.items()):
                active.add_metric([kind], count)
            yield active
        if self.connections is not None:
            yield GaugeMetricFamily("bastion_connections_open", "Outer SSH connections open now.",
                                    value=self.connections())
        if self.bytes_total is not None:
            sent, received = self.bytes_total()
            flow = CounterMetricFamily("bastion_session_bytes", "Session bytes relayed, by direction: in "
                                       "(from users to targets) and out (from targets to users).",
                                       labels=["direction"])
            flow.add_metric(["in"], sent)
            flow.add_metric(["out"], received)
            yield flow
        if self.approvals_pending is not None:
            yield GaugeMetricFamily("bastion_approvals_pending", "Approval requests waiting for approvers.",
                                    value=self.approvals_pending())
        if self.recorder is not None:
            backlog, behind = self.recorder()
            yield GaugeMetricFamily("bastion_recorder_backlog_bytes", "Session bytes handed to the "
                                    "recorder and not yet written.", value=backlog)
            yield GaugeMetricFamily("bastion_recorder_lag_seconds", "How long the recorder has been "
                                    "behind (0: everything handed over is written).", value=behind)


LIVE = LiveFigures()
REGISTRY.register(LIVE)
