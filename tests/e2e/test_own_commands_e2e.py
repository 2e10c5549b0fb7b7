"""The bastion's own commands over plain ssh to the bastion, with the real OpenSSH client: what
each role may do, approvals decided over ssh, and every way a user might try to turn them into a
shell on the bastion host (each attempt checks that nothing ran)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, eventually, need
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e
TARGET = f"{LOGIN}@db-1"
OFFERS = "this bastion offers: whoami | sessions list"
RULES = """
[defaults]
action = "allow"

[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "1m"
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "sftp", "scp", "tmux")
    directory = tmp_path_factory.mktemp("own")
    (directory / "rules.toml").write_text(RULES)
    sandbox = Sandbox(directory, extra={"rules_file": "rules.toml",
                                        "access": {"reviewers": ["sec"], "admins": ["oncall"]}})
    sandbox.add_user("alice", ["ops"])
    sandbox.add_user("bob", ["dba", "ops"])
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


def config(box: Sandbox, user: str) -> str:
    return str(box.directory / f"ssh_config-{user}")


def own(box: Sandbox, *args: str, user: str = "alice", options: tuple[str, ...] = (),
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`ssh bastion ARGS` as `user`: the bastion itself, not a jump through it."""
    result = subprocess.run(["ssh", "-F", config(box, user), *options, "bastion", *args],
                            input=stdin, capture_output=True, timeout=60, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                       result.stderr.decode())


def jump(box: Sandbox, command: str, user: str = "alice") -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ssh", "-F", config(box, user), "-J", "bastion", TARGET, command],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def listed(box: Sandbox, user: str, *args: str) -> list[dict[str, Any]]:
    result = own(box, "sessions", "list", "--json", *args, user=user)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def refusals(box: Sandbox, user: str) -> list[dict[str, Any]]:
    return [e for e in box.events() if e["event"] == "own_command_refused" and e["user"] == user]


# -- what each role may do ----------------------------------------------------------------------


def test_whoami_says_who_how_and_what_role(box: Sandbox) -> None:
    result = own(box, "whoami")
    assert result.returncode == 0, result.stderr
    assert "user        alice" in result.stdout and "groups      ops" in result.stdout
    assert "with publickey from 127.0.0.1:" in result.stdout and "role        user" in result.stdout
    assert "role        reviewer" in own(box, "whoami", user="sue").stdout
    assert "role        admin" in own(box, "whoami", user="olga").stdout
    assert any(e["event"] == "own_command" and e["command"] == "whoami" and e["user"] == "alice"
               for e in box.events())


def test_users_list_their_own_sessions_reviewers_everyone_s(box: Sandbox) -> None:
    alices = jump(box, "sleep 600 # alice-own")
    bobs = jump(box, "sleep 600 # bob-own", user="bob")
    try:
        eventually(lambda: {s["user"] for s in listed(box, "sue")} >= {"alice", "bob"}, "both sessions")
        mine = listed(box, "alice")
        assert {s["user"] for s in mine} == {"alice"} and mine[0]["command"] == "sleep 600 # alice-own"
        refused = own(box, "sessions", "list", "--user", "bob")
        assert refused.returncode == 1 and "you may list only your own sessions" in refused.stderr
        assert refusals(box, "alice")[-1]["command"] == "sessions list --user bob"
        assert [s["user"] for s in listed(box, "sue", "--user", "bob")] == ["bob"]
        table = own(box, "sessions", "list", user="sue").stdout
        assert "sleep 600 # alice-own" in table and "sleep 600 # bob-own" in table
    finally:
        alices.kill()
        bobs.kill()


def test_only_admins_kill_and_the_user_reads_who_and_why(box: Sandbox) -> None:
    victim = jump(box, "sleep 600 # to-kill")
    try:
        session = eventually(lambda: next((s for s in listed(box, "olga") if s["command"] == "sleep 600 # to-kill"),
                                          None), "the session listed")
        for user in ("alice", "sue"):  # its owner and a reviewer may not
            refused = own(box, "sessions", "kill", session["id"], user=user)
            assert refused.returncode == 1 and "only admins (oncall) and a moderated session's moderators" in refused.stderr
            assert refusals(box, user)[-1]["reason"].startswith("sessions kill: only admins")
        killed = own(box, "sessions", "kill", session["id"], "--reason", "stop now please", user="olga")
        assert killed.returncode == 0, killed.stderr
        assert f"ended {session['id']} (alice," in killed.stdout
        _, err = victim.communicate(timeout=30)
        assert b"bastion: session ended by olga: stop now please" in err and victim.returncode == 255
    finally:
        victim.kill()
    assert any(e["event"] == "session_killed" and e["by"] == "olga" for e in box.events())
    assert any(e["event"] == "session_kill_requested" and e["via"] == "ssh" for e in box.events())


def test_approving_over_ssh_releases_the_held_command_self_approval_is_refused(box: Sandbox) -> None:
    marker = Path(f"/tmp/needs-approval-{uuid.uuid4().hex}")
    held = jump(box, f"touch {marker} && echo done")
    try:
        def pending() -> str | None:
            listing = own(box, "approvals", "list", user="bob").stdout
            return next((line.split()[0] for line in listing.splitlines() if str(marker) in line), None)

        request = eventually(pending, "the request listed for bob over ssh")
        assert str(marker) in own(box, "approvals", "show", request, user="bob").stdout
        assert own(box, "approvals", "list", user="sue").stdout  # a reviewer sees it too
        mine = own(box, "approvals", "approve", request)
        assert mine.returncode == 1 and "cannot approve their own request" in mine.stderr
        outsider = own(box, "approvals", "approve", request, user="olga")
        assert outsider.returncode == 1 and "not in an approver group (dba)" in outsider.stderr
        assert not marker.exists()
        approved = own(box, "approvals", "approve", request.lower(), user="bob")
        assert approved.returncode == 0, approved.stderr
        assert f"{request}: approve recorded by bob; request is approved" in approved.stdout
        out, err = held.communicate(timeout=30)
        assert held.returncode == 0 and out == b"done\n", err
        assert marker.exists()
    finally:
        held.kill()
        marker.unlink(missing_ok=True)
    decisions = [e for e in box.events() if e["event"] == "approval_decision" and e["request"] == request]
    assert decisions and decisions[-1]["by"] == "bob" and decisions[-1]["identity"] == "ssh publickey"
    refused = [e for e in box.events() if e["event"] == "approval_decision_refused" and e["request"] == request]
    assert {e["by"] for e in refused} == {"alice", "olga"}


# -- no shell on the bastion host, however asked ----------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A file that appears only if something ran a command on the bastion host."""
    path = tmp_path / f"pwned-{uuid.uuid4().hex}"
    yield path
    assert not path.exists(), "a command ran on the bastion host"


ATTEMPTS = {
    "a program": ["touch {canary}"],
    "a shell by name": ["bash", "-c", "'touch {canary}'"],
    "a command after ours": ["'whoami; touch {canary}'"],
    "and-and": ["'whoami && touch {canary}'"],
    "a pipe": ["'sessions list | touch {canary}'"],
    "substitution": ["'sessions list --user $(touch {canary})'"],
    "backquotes": ["'sessions kill 0123456789abcdef --reason `touch {canary}`'"],
    "a newline": ["$'whoami\\ntouch {canary}'"],
    "dash dash": ["--", "-c", "'touch {canary}'"],
    "an option glued to a value": ["'sessions list --user=$(touch {canary})'"],
    "a redirection": ["'whoami > {canary}'"],
    "a glob": ["'sessions list --user *'"],
    "an unknown subcommand": ["sessions", "exec", "touch", "{canary}"],
    "an escape sequence": ["$'whoami\\x1b]0;title\\x07'"],
}


@pytest.mark.parametrize("words", list(ATTEMPTS.values()), ids=list(ATTEMPTS))
def test_a_command_line_that_is_not_one_of_ours_is_refused(box: Sandbox, canary: Path, words: list[str]) -> None:
    # ssh joins its arguments with spaces; bash -c gives the $'...' forms their bytes first.
    line = " ".join(w.format(canary=canary) for w in words)
    result = subprocess.run(["bash", "-c", f"exec ssh -F {config(box, 'alice')} bastion {line}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result
    assert OFFERS in result.stderr and result.stdout == ""
    assert refusals(box, "alice")


def test_no_shell_without_a_command_with_or_without_a_terminal(box: Sandbox, canary: Path) -> None:
    plain = own(box, options=("-T",), stdin=f"touch {canary}\n".encode())
    assert plain.returncode == 2 and "bastion: no shell on the bastion; " + OFFERS in plain.stderr
    pane = terminal(box, "-tt", "bastion")
    try:
        pane.type(f"touch {canary}")
        pane.send("Enter")
        screen = pane.wait_for("ssh exited 2")
        assert "bastion: no shell on the bastion; " in screen and "this bastion offers: whoami" in screen
    finally:
        pane.close()


def test_a_terminal_runs_our_command_and_nothing_typed(box: Sandbox, canary: Path) -> None:
    pane = terminal(box, "-tt", "bastion", "whoami")
    try:
        pane.type(f"touch {canary}")
        pane.send("Enter")
        screen = pane.wait_for("ssh exited 0")
        assert "role        user" in screen
    finally:
        pane.close()


def terminal(box: Sandbox, *args: str) -> TmuxPane:
    """ssh as alice in a terminal; the pane stays to be read after ssh has ended."""
    command = shlex.join(["ssh", "-F", config(box, "alice"), *args])
    return TmuxPane(["bash", "-c", f"{command}; echo ssh exited $?; exec sleep 600"])


def test_environment_variables_reach_nothing(box: Sandbox, canary: Path, tmp_path: Path) -> None:
    script = tmp_path / "env.sh"
    script.write_text(f"touch {canary}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "BASH_ENV": str(script), "ENV": str(script), "LD_PRELOAD": str(script),
           "TERM": f"xterm;touch {canary}"}
    result = subprocess.run(
        ["ssh", "-F", config(box, "alice"), "-o", "SendEnv=BASH_ENV ENV LD_PRELOAD TERM", "-o",
         f"SetEnv=PYTHONSTARTUP={script} PATH={tmp_path}", "-tt", "bastion", "whoami"],
        capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0 and "user        alice" in result.stdout, result


def test_sftp_and_scp_to_the_bastion_itself_are_refused(box: Sandbox, tmp_path: Path) -> None:
    sftp = subprocess.run(["sftp", "-F", config(box, "alice"), "-b", "-", "bastion"], input="get /etc/passwd\n",
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert sftp.returncode != 0 and "subsystem request failed" in sftp.stderr
    by_subsystem = own(box, "sftp", options=("-s",))
    assert by_subsystem.returncode != 0
    for mode in ((), ("-O",)):  # scp over sftp (the default), and the old protocol (exec `scp -f`)
        copied = subprocess.run(["scp", *mode, "-F", config(box, "alice"), "bastion:/etc/passwd", str(tmp_path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert copied.returncode != 0, copied
    assert not (tmp_path / "passwd").exists()
    reasons = [e["reason"] for e in refusals(box, "alice")]
    assert "no subsystem (sftp) on the bastion" in reasons


@pytest.mark.parametrize("destination", ["bastion-itself", "127.0.0.1:22", "localhost:{port}"])
def test_forwarding_to_the_bastion_host_is_refused(box: Sandbox, destination: str) -> None:
    where = f"127.0.0.1:{box.port}" if destination == "bastion-itself" else destination.format(port=box.port)
    result = own(box, options=("-W", where))
    assert result.returncode == 255
    assert "administratively prohibited" in result.stderr and "is not a configured target" in result.stderr


def test_remote_forwarding_from_the_bastion_host_is_refused(box: Sandbox) -> None:
    result = own(box, options=("-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"))
    assert result.returncode == 255 and "remote port forwarding failed" in result.stderr
