"""The upstream connect's retries: which failures are tried again, for how long, and how often.
`_log_in` (one attempt) is replaced: no socket is opened."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import pytest

from bastion.config import CertificateSettings, TargetConfig
from bastion.errors import TargetHostKeyError, TargetUnreachable, UpstreamAuthError
from bastion.ssh import upstream
from bastion.ssh.upstream import BACKOFF_FIRST, BACKOFF_MAX, UpstreamConnection, backoff

TARGET = TargetConfig(name="db-1", host="127.0.0.1", port=22)
HOST_KEY = asyncssh.generate_private_key("ssh-ed25519")


class Keys:
    user_ca = HOST_KEY

    def trusted_target_keys(self, target: TargetConfig) -> tuple[list[Any], list[Any]]:
        return [HOST_KEY.convert_to_public()], []


def attempts_failing_with(monkeypatch: pytest.MonkeyPatch, *failures: BaseException) -> list[int]:
    """Each attempt raises the next of `failures` (the last one for ever, if it is not None)."""
    seen: list[int] = []

    async def log_in(*, attempt: int, **kwargs: Any) -> UpstreamConnection:
        seen.append(attempt)
        failure = failures[min(attempt, len(failures)) - 1]
        if failure is None:
            return UpstreamConnection(conn=None, target=TARGET, login="root", spec=None,  # type: ignore[arg-type]
                                      attempts=attempt)
        raise failure

    monkeypatch.setattr(upstream, "_log_in", log_in)
    monkeypatch.setattr(upstream, "backoff", lambda attempt: 0.01)
    return seen


def connect(retry_for: float) -> UpstreamConnection:
    return asyncio.run(upstream.connect_upstream(
        target=TARGET, login="root", user="alice", session_id="S1", keys=Keys(),  # type: ignore[arg-type]
        settings=CertificateSettings(), retry_for=retry_for))


def test_a_target_that_drops_connections_is_tried_again_until_it_lets_one_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = attempts_failing_with(monkeypatch, asyncssh.ConnectionLost("Connection lost"),
                                 ConnectionResetError(104, "Connection reset by peer"),
                                 BrokenPipeError(32, "Broken pipe"), None)
    assert connect(retry_for=30).attempts == 4 and seen == [1, 2, 3, 4]


@pytest.mark.parametrize(("failure", "error"), [
    (asyncssh.PermissionDenied("denied"), UpstreamAuthError),
    (asyncssh.HostKeyNotVerifiable("mismatch"), TargetHostKeyError),
    (TimeoutError(), TargetUnreachable),
    (OSError(113, "No route to host"), TargetUnreachable),
    (asyncssh.ProtocolError("bad packet"), TargetUnreachable),
])
def test_auth_host_key_and_other_failures_are_never_retried(
        monkeypatch: pytest.MonkeyPatch, failure: BaseException, error: type[Exception]) -> None:
    seen = attempts_failing_with(monkeypatch, failure)
    with pytest.raises(error):
        connect(retry_for=30)
    assert seen == [1]


def test_retries_stop_at_the_time_allowed_and_say_how_many_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = attempts_failing_with(monkeypatch, asyncssh.ConnectionLost("Connection lost"))
    with pytest.raises(TargetUnreachable) as raised:
        connect(retry_for=0.2)
    assert len(seen) > 1
    assert raised.value.reason == f"cannot reach db-1: Connection lost ({len(seen)} attempts)"


def test_no_time_allowed_is_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = attempts_failing_with(monkeypatch, ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(TargetUnreachable, match=r"cannot reach db-1: connection reset by peer$"):
        connect(retry_for=0)
    assert seen == [1]


def test_a_refusing_target_is_retried_only_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "REFUSED_RETRY_FOR", 0.1)
    seen = attempts_failing_with(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(TargetUnreachable, match=r"cannot reach db-1: connection refused \(\d+ attempts\)"):
        connect(retry_for=30)  # far more time allowed than a refusal gets
    assert len(seen) > 1


def test_a_target_that_always_hangs_up_is_given_up_on_before_the_login_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A port that is not an sshd (it accepts and closes at once) must not cost the whole login
    timeout: dropped connections are retried only DROPPED_RETRY_FOR."""
    monkeypatch.setattr(upstream, "DROPPED_RETRY_FOR", 0.1)
    seen = attempts_failing_with(monkeypatch, ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(TargetUnreachable, match=r"\(\d+ attempts\)"):
        connect(retry_for=30)
    assert 1 < len(seen) < 100  # without the bound: one attempt every 10 ms for 30 s


def test_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    for attempt, ceiling in [(1, BACKOFF_FIRST), (2, 2 * BACKOFF_FIRST), (3, 4 * BACKOFF_FIRST), (30, BACKOFF_MAX)]:
        delays = [backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1
