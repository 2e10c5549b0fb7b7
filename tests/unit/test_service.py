"""What a service needs from the system: systemd's notify datagrams, the file limit, the log
file reopened after logrotate."""

from __future__ import annotations

import json
import os
import resource
import socket
from pathlib import Path

import pytest

from bastion.core.masker import TextMasker
from bastion.ssh.system import FDS_PER_SESSION, RESERVED_FDS, SystemdNotifier, raise_open_files_limit
from bastion.state.audit import AuditLog
from bastion.state.events import BastionStopped


def test_notify_sends_one_datagram_per_state_and_hides_the_socket_from_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notifier = SystemdNotifier()
        assert "NOTIFY_SOCKET" not in os.environ  # the recorder process must not speak for us
        assert notifier.notify("READY=1\nSTATUS=listening")
        assert listener.recv(100) == b"READY=1\nSTATUS=listening"
        assert notifier.notify("STOPPING=1")
        assert listener.recv(100) == b"STOPPING=1"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"bastion-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        assert SystemdNotifier(f"@{name}").notify("READY=1")
        assert listener.recv(100) == b"READY=1"


def test_without_systemd_notify_does_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not SystemdNotifier().notify("READY=1")
    assert not SystemdNotifier("relative/path").notify("READY=1")
    assert not SystemdNotifier(str(tmp_path / "nobody-listens")).notify("READY=1")


def test_the_soft_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        event = raise_open_files_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert event.soft == now and event.error is None
        if hard != resource.RLIM_INFINITY:
            assert now == hard and event.hard == hard
            assert event.was == (256 if hard > 256 else soft)
        assert event.sessions == (now - RESERVED_FDS) // FDS_PER_SESSION
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_reopen_follows_a_log_file_that_logrotate_moved(tmp_path: Path) -> None:
    path = tmp_path / "bastion.log"
    log = AuditLog(path=path, masker=TextMasker(()))
    log.write(BastionStopped())
    path.rename(tmp_path / "bastion.log.1")
    assert log.reopen() is None
    log.write(BastionStopped())
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["bastion_stopped"]
    assert len((tmp_path / "bastion.log.1").read_text().splitlines()) == 1
    path.unlink()
    path.mkdir()  # a folder where the file was: the old file goes on
    assert log.reopen() is not None
