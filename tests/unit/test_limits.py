"""Admission limits: the pre-authentication gate, the refusal tally, their settings, the
listener's guard with a transport that is never a socket, and the floor on a channel's
maximum packet size."""

from __future__ import annotations

import asyncio
import io
import json
import os
from typing import Any

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_OPEN
from asyncssh.packet import SSHPacket, String, UInt32

from bastion.config import LimitSettings, parse_config
from bastion.core.limits import Admission, LimitHit, RefusalTally, StartupGate, session_limit_refusal
from bastion.core.masker import TextMasker
from bastion.errors import ConfigError
from bastion.ssh.limits import REFUSAL_LINE, SharedCounts, StartupGuard
from bastion.ssh.transport import MIN_PACKET_SIZE, _open_with_floor
from bastion.state.audit import AuditLog
from tests.support.lab import until
from tests.unit.test_config import base


def test_the_gate_bounds_waiting_connections_per_source_and_in_total() -> None:
    gate = StartupGate(total=4, per_source=2)
    first = gate.admit("10.0.0.1")
    second = gate.admit("10.0.0.1")
    assert isinstance(first, Admission) and isinstance(second, Admission)
    assert gate.admit("10.0.0.1") == LimitHit("limits.unauthenticated_per_source", 2)
    others = [gate.admit("10.0.0.2"), gate.admit("10.0.0.3")]
    assert all(isinstance(o, Admission) for o in others) and gate.waiting == 4
    assert gate.admit("10.0.0.4") == LimitHit("limits.unauthenticated", 4)
    first.release()
    first.release()  # a second release (sign-in, then the connection's end) gives nothing back twice
    assert gate.waiting == 3
    assert isinstance(gate.admit("10.0.0.1"), Admission)
    assert gate.admit("10.0.0.5") == LimitHit("limits.unauthenticated", 4)


def test_a_gate_of_zeros_has_no_limit() -> None:
    gate = StartupGate(total=0, per_source=0)
    assert all(isinstance(gate.admit("10.0.0.1"), Admission) for _ in range(1000))


def test_released_sources_are_forgotten() -> None:
    gate = StartupGate(total=10, per_source=1)
    for n in range(100):
        admission = gate.admit(f"10.0.{n // 256}.{n % 256}")
        assert isinstance(admission, Admission)
        admission.release()
    assert gate.waiting == 0 and not gate.counts._by_source  # type: ignore[attr-defined]


def test_workers_sharing_a_board_share_the_limits() -> None:
    """Each worker's gate counts on the shared board: one source's third connection is refused
    by whichever worker it reaches, and the total holds across them."""
    fd = SharedCounts.create(workers=2)
    try:
        boards = [SharedCounts(fd, 2, 0), SharedCounts(fd, 2, 1)]
        gates = [StartupGate(total=5, per_source=2, counts=board) for board in boards]
        first, second = gates[0].admit("10.0.0.1"), gates[1].admit("10.0.0.1")
        assert isinstance(first, Admission) and isinstance(second, Admission)
        assert gates[0].admit("10.0.0.1") == gates[1].admit("10.0.0.1") == LimitHit(StartupGate.PER_SOURCE, 2)
        others = [gates[1].admit(f"10.0.0.{n}") for n in (2, 3, 4)]
        assert all(isinstance(o, Admission) for o in others) and gates[0].waiting == 5
        assert gates[0].admit("10.0.0.9") == LimitHit(StartupGate.TOTAL, 5)
        second.release()  # given back on worker 1's row, and seen by worker 0
        assert isinstance(gates[0].admit("10.0.0.1"), Admission)
        # worker 1 dies and is started again: its row (three connections) starts from nothing,
        # worker 0's row (two from 10.0.0.1) stays
        SharedCounts(fd, 2, 1)
        assert boards[0].read("10.0.0.1") == (2, 2)
    finally:
        os.close(fd)


def test_a_board_that_does_not_fit_its_worker_is_refused() -> None:
    fd = SharedCounts.create(workers=2)
    try:
        with pytest.raises(ValueError, match="worker 2 of 2"):
            SharedCounts(fd, 2, 2)
        with pytest.raises(ValueError, match="worker 0 of 3"):
            SharedCounts(fd, 3, 0)
    finally:
        os.close(fd)


def test_the_session_limit_names_the_setting() -> None:
    assert session_limit_refusal("alice", 2, 3) is None
    assert session_limit_refusal("alice", 3, 3) == (
        "too many sessions: alice has 3 open, limits.sessions_per_user is 3")
    assert session_limit_refusal("alice", 10_000, 0) is None  # 0: no limit


def test_the_tally_reports_the_first_refusal_at_once_then_counts_per_interval() -> None:
    tally = RefusalTally(interval=10)
    total, per_source = LimitHit("limits.unauthenticated", 5), LimitHit("limits.unauthenticated_per_source", 2)
    assert tally.take(0) is None and tally.due_in(0) == 0
    tally.add(per_source, "10.0.0.1")
    first = tally.take(100)
    assert first is not None and (first.count, first.by_setting) == (1, {per_source.setting: 1})
    for n in range(50):
        tally.add(per_source, "10.0.0.1")
        tally.add(total, f"10.0.1.{n}")
    assert tally.pending == 100 and tally.due_in(104) == 6  # within the interval: wait
    report = tally.take(110)
    assert report is not None and report.count == 100
    assert report.by_setting == {total.setting: 50, per_source.setting: 50}
    assert next(iter(report.top_sources.items())) == ("10.0.0.1", 50)
    assert len(report.top_sources) == RefusalTally.TOP_SOURCES
    assert tally.pending == 0 and tally.due_in(200) == 0  # quiet since: the next is told at once


def test_limit_settings_defaults_and_errors() -> None:
    assert parse_config(base()).limits == LimitSettings(unauthenticated=200, unauthenticated_per_source=20,
                                                        sessions_per_user=100)
    assert parse_config(base(limits={"sessions_per_user": 0})).limits.sessions_per_user == 0
    with pytest.raises(ConfigError, match=r"\[limits\] sessions_per_user: must be 0 \(no limit\) or more"):
        parse_config(base(limits={"sessions_per_user": -5}))
    limits = parse_config(base(limits={"unauthenticated": 0, "unauthenticated_per_source": 0})).limits
    assert (limits.unauthenticated, limits.unauthenticated_per_source) == (0, 0)
    with pytest.raises(ConfigError, match=r"\[limits\] unauthenticated: must be 0 \(no limit\) or more"):
        parse_config(base(limits={"unauthenticated": -1}))
    with pytest.raises(ConfigError, match="unauthenticated_per_source: must not be more than unauthenticated"):
        parse_config(base(limits={"unauthenticated": 10, "unauthenticated_per_source": 11}))
    with pytest.raises(ConfigError, match=r"\[limits\].unauthenticated: expected int"):
        parse_config(base(limits={"unauthenticated": "lots"}))
    with pytest.raises(ConfigError, match=r"\[limits\]: unknown key 'max_startups'"):
        parse_config(base(limits={"max_startups": 10}))


class FakeTransport(asyncio.WriteTransport):
    def __init__(self, address: str) -> None:
        super().__init__()
        self.address, self.written, self.closed = address, b"", False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.address, 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True


def test_the_guard_closes_refused_connections_and_logs_a_summary_per_interval() -> None:
    stream = io.StringIO()
    guard = StartupGuard(LimitSettings(unauthenticated=3, unauthenticated_per_source=2),
                         AuditLog(stream, masker=TextMasker()), interval=0.05)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    async def flood() -> list[FakeTransport]:
        transports = [FakeTransport("10.0.0.9") for _ in range(30)]
        admitted = [guard.admit(t) for t in transports]
        assert [a is not None for a in admitted[:3]] == [True, True, False]
        assert len(lines()) == 1  # the first refusal at once, the rest counted
        await until(lambda: len(lines()) == 2, "the summary after the interval")
        guard.admit(FakeTransport("10.0.0.9"))
        guard.close()  # what is still counted is written at stop
        return transports

    transports = asyncio.run(flood())
    assert [t.closed for t in transports] == [False, False] + [True] * 28
    assert transports[2].written == REFUSAL_LINE and transports[0].written == b""
    assert [line["event"] for line in lines()] == ["connections_refused"] * 3
    assert [line["count"] for line in lines()] == [1, 27, 1]
    summary = lines()[1]
    assert summary["limits"] == {"limits.unauthenticated_per_source": 27}
    assert summary["clients"] == {"10.0.0.9": 27} and summary["unauthenticated"] == 2


class Conn:
    def __init__(self) -> None:
        self.failures: list[tuple[int, int, str]] = []
        self.logger = self

    def send_channel_open_failure(self, send_chan: int, code: int, reason: str, lang: str) -> None:
        self.failures.append((send_chan, code, reason))

    def debug1(self, *args: object) -> None:
        pass


def channel_open(max_packet: int) -> SSHPacket:
    return SSHPacket(String(b"session") + UInt32(7) + UInt32(1 << 30) + UInt32(max_packet))


def test_a_channel_with_a_tiny_maximum_packet_size_is_refused_before_asyncssh_sees_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []

    def process_channel_open(conn: object, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        packet.get_string()  # asyncssh reads the packet from its start
        opened.append(packet.get_uint32())

    monkeypatch.setattr(SSHConnection, "_process_channel_open", process_channel_open)
    conn = Conn()
    _open_with_floor(conn, MSG_CHANNEL_OPEN, 0, channel_open(1))  # type: ignore[arg-type]
    assert conn.failures == [(7, asyncssh.OPEN_RESOURCE_SHORTAGE,
                              "bastion: a maximum packet size of 1 bytes is too small (at least 1024)")]
    assert opened == []
    for size in (MIN_PACKET_SIZE, 32768):
        _open_with_floor(conn, MSG_CHANNEL_OPEN, 0, channel_open(size))  # type: ignore[arg-type]
    assert opened == [7, 7] and len(conn.failures) == 1
