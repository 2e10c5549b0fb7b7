"""The target side's adapter: packets of one read go on as one chunk, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncssh import EXTENDED_DATA_STDERR as STDERR

from bastion.core.masker import TextMasker
from bastion.ssh import relay as relay_module
from bastion.ssh.relay import SessionRelay, UpstreamSession
from bastion.stages.pipeline import SessionPipeline
from tests.support.stages import SHELL


class Calls:
    """Stands in for SessionRelay: notes what the adapter hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


async def test_packets_of_one_read_go_on_as_one_chunk_after_it() -> None:
    relay = Calls()
    session = UpstreamSession(relay)  # type: ignore[arg-type]
    for packet in (b"one ", b"two ", b"three"):
        session.data_received(packet, None)
    assert relay.calls == []  # not yet: more packets of the same read may follow
    await asyncio.sleep(0)
    assert relay.calls == [("target_data", b"one two three", None)]


async def test_stderr_exit_and_eof_keep_their_place() -> None:
    relay = Calls()
    session = UpstreamSession(relay)  # type: ignore[arg-type]
    session.data_received(b"out 1 ", None)
    session.data_received(b"out 2 ", None)
    session.data_received(b"err 1 ", STDERR)
    session.data_received(b"out 3 ", None)
    session.exit_status_received(3)
    session.data_received(b"late", None)
    session.eof_received()
    session.connection_lost(None)
    await asyncio.sleep(0)
    assert relay.calls == [
        ("target_data", b"out 1 out 2 ", None),
        ("target_data", b"err 1 ", STDERR),
        ("target_data", b"out 3 ", None),
        ("target_exit_status", 3),
        ("target_data", b"late", None),
        ("target_eof",),
        ("target_closed",),
    ]


class Channel:
    """The client's channel, as far as reading goes."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_a_gate_reads_typed_input_only_while_it_watches_and_only_so_much() -> None:
    """While a moderator is awaited the user's keys are read (Ctrl-C gives up); one user typing
    without end gets no further than 64 KiB: then reading pauses, and the SSH window holds the rest."""
    relay = SessionRelay(info=SHELL, upstream=None, pipeline=SessionPipeline([]), env_allow=(),  # type: ignore[arg-type]
                         on_end=lambda relay: None, masker=TextMasker())
    chan = Channel()
    relay.client_opened(chan)  # type: ignore[arg-type]
    assert relay._client_reading is not None
    relay._client_reading.hold("upstream")  # as at the start: nothing is read until the target is open
    assert not chan.reading
    seen: list[bytes] = []
    relay.watch_input(seen.append)
    assert chan.reading
    for _ in range(16):
        relay.client_data(b"x" * 4096)
    assert chan.reading and len(seen) == 16
    relay.client_data(b"y")  # one byte over 64 KiB
    assert not chan.reading and seen[-1] == b"y"
    relay.watch_input(None)
    assert not chan.reading
    assert relay._early_size == 64 * 1024 + 1 and relay.bytes_in == 64 * 1024 + 1


def test_without_a_watching_gate_input_stays_unread_until_the_target_is_open() -> None:
    relay = SessionRelay(info=SHELL, upstream=None, pipeline=SessionPipeline([]), env_allow=(),  # type: ignore[arg-type]
                         on_end=lambda relay: None, masker=TextMasker())
    chan = Channel()
    relay.client_opened(chan)  # type: ignore[arg-type]
    assert relay._client_reading is not None
    relay._client_reading.hold("upstream")
    relay.watch_input(lambda data: None)
    relay.watch_input(None)
    assert not chan.reading


class ClientChannel(Channel):
    """The client's channel: what the relay sends it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[Any, ...]] = []

    def write(self, data: bytes) -> None:
        self.sent.append(("data", data))

    def write_stderr(self, data: bytes) -> None:
        self.sent.append(("stderr", data))

    def write_eof(self) -> None:
        self.sent.append(("eof",))

    def exit(self, status: int) -> None:
        self.sent.append(("exit", status))

    def exit_with_signal(self, signal: str, *rest: object) -> None:
        self.sent.append(("signal", signal))

    def close(self) -> None:
        self.sent.append(("close",))


def opened_relay() -> tuple[SessionRelay, ClientChannel]:
    relay = SessionRelay(info=SHELL, upstream=None, pipeline=SessionPipeline([]), env_allow=(),  # type: ignore[arg-type]
                         on_end=lambda relay: None, masker=TextMasker())
    client = ClientChannel()
    relay.client_opened(client)  # type: ignore[arg-type]
    return relay, client


async def test_the_targets_eof_waits_for_its_exit_status_and_both_go_on_together() -> None:
    """sshd's EOF may come before the exit status: a client that closes on EOF (plink) would
    never see the status."""
    relay, client = opened_relay()
    relay.target_eof()
    await asyncio.sleep(relay_module.EOF_HOLD / 5)
    assert client.sent == []
    relay.target_exit_status(3)
    assert client.sent == [("exit", 3)]  # the channel's exit sends the status, then EOF and close
    relay.target_closed()
    assert client.sent == [("exit", 3)]


async def test_an_exit_status_before_eof_goes_on_at_the_eof() -> None:
    relay, client = opened_relay()
    relay.target_exit_status(0)
    assert client.sent == []  # output may still come
    relay.target_eof()
    assert client.sent == [("exit", 0)]


async def test_a_program_that_closes_its_output_and_runs_on_gets_its_eof_passed_on() -> None:
    relay, client = opened_relay()
    relay.target_eof()
    await asyncio.sleep(relay_module.EOF_HOLD * 2)
    assert client.sent == [("eof",)]
    relay.target_exit_signal("TERM", False, "", "")
    relay.target_closed()
    assert client.sent == [("eof",), ("signal", "TERM")]


async def test_a_close_without_an_exit_status_closes() -> None:
    relay, client = opened_relay()
    relay.target_eof()
    relay.target_closed()
    await asyncio.sleep(relay_module.EOF_HOLD * 2)
    assert client.sent == [("close",)]  # and no EOF after it
