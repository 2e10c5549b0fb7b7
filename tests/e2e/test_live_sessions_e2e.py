"""Live sessions through a real bastion: the registry lists them across kinds, a kill from another
process reaches the user with its reason, marks the recording and closes the target's side."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.demo.sandbox import Sandbox
from recorder.asciicast import load_cast
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e
TARGET = f"{LOGIN}@db-1"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "sftp", "tmux")
    sandbox = Sandbox(tmp_path_factory.mktemp("live"),
                      extra={"access": {"reviewers": ["sec"], "admins": ["oncall"]}})
    sandbox.add_user("alice", ["ops"])
    sandbox.add_user("bob", ["ops"])
    sandbox.add_user("sue", ["sec"])
    sandbox.add_user("olga", ["oncall"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    for user in ("alice", "bob", "sue", "olga"):
        sandbox.write_ssh_config(user)
    sandbox.start_bastion()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def jump(box: Sandbox, *args: str, user: str = "alice", **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh", "-F", str(box.directory / f"ssh_config-{user}"), "-J", "bastion", *args],
        stdin=kwargs.pop("stdin", subprocess.DEVNULL), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


def cli(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args, "-c", str(box.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)


def listed(box: Sandbox, *args: str) -> list[dict[str, Any]]:
    result = cli(box, "sessions", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def live_one(box: Sandbox, predicate: Any, what: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((s for s in listed(box) if predicate(s)), None)

    return eventually(found, what)


def test_every_kind_of_session_is_listed_with_its_fields(box: Sandbox) -> None:
    exec_session = jump(box, TARGET, "sleep 600 # list-exec")
    sftp = subprocess.Popen(["sftp", "-F", str(box.directory / "ssh_config-bob"), "-J", "bastion", TARGET],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pane = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    try:
        ready(pane)
        pane.type("echo typed-into-the-shell")
        pane.send("Enter")
        pane.wait_for("typed-into-the-shell\n")
        running = live_one(box, lambda s: s["command"] == "sleep 600 # list-exec", "the exec session")
        assert running["kind"] == "exec" and running["user"] == "alice" and running["login"] == LOGIN
        assert running["target"] == "db-1" and running["client"].startswith("127.0.0.1:")
        assert running["recording"] == running["id"] and running["instance"]
        live_one(box, lambda s: s["kind"] == "sftp" and s["user"] == "bob", "the sftp session")
        shell = live_one(box, lambda s: s["kind"] == "shell" and s["bytes_out"] > 0, "the shell, with output")
        assert shell["bytes_in"] > 0 and shell["last_activity"] >= shell["started"]
        assert [s["user"] for s in listed(box, "--user", "bob")] == ["bob"]
        assert listed(box, "--target", "nowhere") == []
        table = cli(box, "sessions", "list").stdout
        assert "sleep 600 # list-exec" in table and "sftp" in table and running["id"] in table
    finally:
        exec_session.kill()
        sftp.kill()
        pane.close()
    eventually(lambda: not listed(box), "no live session left once they ended")


def test_a_kill_from_another_process_reaches_the_user_with_its_reason(box: Sandbox) -> None:
    pane = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    try:
        ready(pane)
        pane.type("sleep 3001")
        pane.send("Enter")
        session = live_one(box, lambda s: s["kind"] == "shell" and s["user"] == "alice", "the shell")
        sleeping = eventually(lambda: pgrep("sleep 3001"), "the sleep on the target")
        result = cli(box, "sessions", "kill", session["id"], "--reason", "maintenance window", "--by", "olga")
        assert result.returncode == 0, result.stderr
        assert f"ended {session['id']}" in result.stdout
        pane.wait_for("bastion: session ended by olga: maintenance window")
        eventually(pane.dead, "the user's ssh exits")
    finally:
        pane.close()
    [killed] = [e for e in box.events() if e["event"] == "session_killed"]
    assert (killed["session"], killed["by"], killed["reason"]) == (session["id"], "olga", "maintenance window")
    cast = load_cast(recording_for(box, lambda e: e["session"] == session["id"]).read_bytes())
    markers = [e.data for e in cast.events if e.code == "m"]
    assert any("killed" in m and "by olga: maintenance window" in m for m in markers), markers
    # The target's side of the session is gone: its shell got the hang-up, the sleep with it.
    eventually(lambda: not set(pgrep("sleep 3001")) & set(sleeping), "the sleep on the target ends")


def test_killing_what_is_not_live_says_so(box: Sandbox) -> None:
    result = cli(box, "sessions", "kill", "0123456789abcdef", "--reason", "x")
    assert result.returncode == 1
    assert "no live session '0123456789abcdef'" in result.stderr


def ready(pane: TmuxPane) -> None:
    """Wait for the shell: a prompt of our own, typed before it was drawn."""
    pane.type("PS1='rea''dy> '")
    pane.send("Enter")
    pane.wait_for("ready>")


def pgrep(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "-x", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]
