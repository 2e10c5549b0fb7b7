"""Screening through the real bastion: what bash actually ran decides, checked on the target."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.sandbox import Sandbox
from recorder.asciicast import load_cast
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.samples import AWS_ID, GH
from tests.support.sessions import bastion_cli as cli
from tests.support.sessions import rules_sandbox, unique
from tests.support.sessions import start_ssh as ssh
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e

RULES = """
[defaults]
action = "allow"

[[rule]]
name = "no-forbidden"
action = "deny"
message = "nothing forbidden here"
command = "forbidden"

[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "1m"

[[rule]]
name = "no-sftp"
action = "deny"
kinds = ["sftp"]
message = "no file transfers to db-1"
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "tmux")
    sandbox = rules_sandbox(tmp_path_factory.mktemp("screening"), RULES, {"alice": ["ops"], "bob": ["dba"]})
    yield sandbox
    sandbox.stop()


def test_denied_exec_never_runs(box: Sandbox) -> None:
    path = unique("forbidden")
    proc = ssh(box, f"touch {path}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"bastion: denied by rule 'no-forbidden': nothing forbidden here" in err
    assert not path.exists()
    allowed = unique("fine")
    assert ssh(box, f"touch {allowed}").wait(60) == 0 and allowed.exists()


def test_exec_bypass_attempts_are_denied(box: Sandbox) -> None:
    for command in ["true; touch {p}", "bash -c 'touch {p}'", "sudo -u root touch {p}",
                    "echo $(touch {p})", "X=1 env Y=2 touch {p}"]:
        path = unique("forbidden")
        proc = ssh(box, command.format(p=path))
        assert proc.wait(60) == 1, command
        assert not path.exists(), command


def test_sftp_denied_by_rule(box: Sandbox) -> None:
    result = subprocess.run(["sftp", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion",
                             "-b", "-", f"{LOGIN}@db-1"], input=b"ls\n", capture_output=True, timeout=60, check=False)
    assert result.returncode != 0


def pane(box: Sandbox) -> TmuxPane:
    p = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", f"{LOGIN}@db-1"])
    p.type("PS1='sc''r> '")
    p.send("Enter")
    p.wait_for("scr>")
    return p


def run_line(p: TmuxPane, text: str, *keys: str) -> None:
    p.at_prompt()
    p.type(text)
    for key in keys:
        p.send(key)
    p.send("Enter")


def a_denied_line_does_not_run_and_the_next_does(p: TmuxPane) -> None:
    path = unique("forbidden")
    run_line(p, f"touch {path}")
    p.wait_for("bastion: denied by rule 'no-forbidden'")
    run_line(p, "echo still-$((40+2))")
    p.wait_for("still-42")
    assert not path.exists()


def test_interactive_denied_line_never_runs_and_the_shell_stays_usable(box: Sandbox) -> None:
    p = pane(box)
    try:
        a_denied_line_does_not_run_and_the_next_does(p)
    finally:
        p.close()


def test_output_the_emulator_once_choked_on_leaves_the_session_screened(box: Sandbox) -> None:
    """Erases no terminal knows (`CSI 3 K`, `CSI 6 J`) and a row asked for in origin mode
    without a scrolling region (`CSI ? 6 h`, `CSI 2 d`): any output can hold them (a file
    another user wrote, shown with `cat`). The session goes on, and its next line is still
    screened (a denied one does not run, an allowed one does)."""
    p = pane(box)
    try:
        run_line(p, r"printf 'x\033[3K\033[6J\033[?6h\033[2d\033[?6l\033[r\n'; clear")
        p.at_prompt()
        a_denied_line_does_not_run_and_the_next_does(p)
    finally:
        p.close()


def test_edited_line_is_decided_on_what_bash_ran(box: Sandbox) -> None:
    p = pane(box)
    try:
        # Typed as allowed, then edited in the middle with the cursor keys into a forbidden one.
        tag = uuid.uuid4().hex[:6]
        p.type(f"touch /tmp/scr-{tag}-allowed")
        for _ in range(7):
            p.send("Left")
        p.type("forbidden-")
        p.send("Enter")
        p.wait_for("bastion: denied by rule 'no-forbidden'")
        assert not Path(f"/tmp/scr-{tag}-forbidden-allowed").exists()
        # History recall plus an edit.
        ok = unique("histok")
        run_line(p, f"touch {ok}")
        eventually(ok.exists, f"{ok} created")
        p.send("Up")
        for _ in range(6):
            p.send("BSpace")
        p.type("forbidden")
        p.send("Enter")
        eventually(lambda: p.screen().count("denied by rule 'no-forbidden'") >= 2, "the second denial")
        assert not Path(str(ok)[:-6] + "forbidden").exists()
        # Tab completion turns an innocent prefix into a forbidden path.
        src = Path(f"/tmp/scr-tab{tag}forbidden-src")
        src.write_text("x")
        copy = unique("tabcopy")
        p.type(f"cp /tmp/scr-tab{tag}f")
        p.send("Tab")
        p.wait_for(f"scr-tab{tag}forbidden-src")
        p.type(f" {copy}")
        p.send("Enter")
        p.wait_for("bastion: denied by rule 'no-forbidden'")
        assert not copy.exists()
        run_line(p, "echo usable-$((1+1))")
        p.wait_for("usable-2")
    finally:
        p.close()


def test_multi_line_paste_is_screened_before_any_line_runs(box: Sandbox) -> None:
    p = pane(box)
    try:
        # Bracketed: bash holds the pasted lines until Enter, which runs them all.
        first, second = unique("pasted-ok"), unique("pasted-forbidden")
        p.paste(f"touch {first}\ntouch {second}\n")
        p.wait_for(f"touch {second}")
        p.send("Enter")
        p.wait_for("bastion: denied by rule 'no-forbidden'")
        run_line(p, "echo after-$((2+3))")
        p.wait_for("after-5")
        assert not first.exists() and not second.exists()
        # Unbracketed: every line end is an Enter, all in one write. Each line is decided in turn,
        # from the screen, before it runs: the allowed one runs, the forbidden one never does.
        first, second = unique("pasted-ok"), unique("pasted-forbidden")
        p.paste(f"touch {first}\ntouch {second}\n", bracketed=False)
        p.wait_for("bastion: denied by rule 'no-forbidden'")
        run_line(p, "echo after-$((3+4))")
        p.wait_for("after-7")
        assert first.exists() and not second.exists()
    finally:
        p.close()


def test_a_secret_typed_at_the_prompt_is_decided_on_the_real_line_and_stored_masked(box: Sandbox) -> None:
    # The user's screen shows the key masked; the screener must still read the line as typed,
    # or it would be unsure and, with an approval rule in place, held.
    p = pane(box)
    try:
        path = unique("aws-key")
        run_line(p, f"echo {AWS_ID} > {path}")
        # The shell creates the file before echo writes to it: wait for the line.
        written = eventually(lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(),
                             f"{path} written without a hold")
        assert written.strip() == AWS_ID  # the target got the real key
        assert "waiting for approval" not in p.screen()
        [decision] = [e for e in box.events() if e["event"] == "command_decision" and str(path) in str(e["command"])]
        assert decision["action"] == "allow" and "unsure" not in decision
        assert decision["command"] == f"echo AKIA{'*' * 16} > {path}"
        assert not [e for e in box.events() if e["event"] == "approval_requested" and str(path) in str(e["command"])]
    finally:
        p.close()


def test_held_line_runs_after_approval_and_not_after_cancel(box: Sandbox) -> None:
    p = pane(box)
    try:
        marker = unique("needs-approval")
        run_line(p, f"touch {marker}")
        p.wait_for("waiting for approval (request ")
        screen = p.screen()
        request = screen.split("waiting for approval (request ")[1].split(",")[0]
        assert not marker.exists()
        # Keystrokes during a hold are not forwarded; the requester cannot approve.
        p.type("echo typed-during-hold")
        self_approval = cli(box, "approvals", "approve", request, "--as", "alice")
        assert self_approval.returncode == 1 and "cannot approve their own request" in self_approval.stderr
        approved = cli(box, "approvals", "approve", request, "--as", "bob")
        assert approved.returncode == 0, approved.stderr
        p.wait_for("bastion: approved by bob")
        eventually(marker.exists, f"{marker} created")
        assert "typed-during-hold" not in p.screen().split("approved by bob")[-1]
        again = cli(box, "approvals", "approve", request, "--as", "bob")
        assert "already approved by bob" in again.stderr
        # Held again, then cancelled with Ctrl-C: the line never runs.
        cancelled = unique("needs-approval")
        run_line(p, f"touch {cancelled}")
        p.wait_for(f"touch {cancelled}")
        eventually(lambda: p.screen().count("waiting for approval") >= 2, "the second hold")
        p.send("C-c")
        p.wait_for("not run: cancelled")
        time.sleep(0.5)
        assert not cancelled.exists()
    finally:
        p.close()


def test_keys_typed_during_a_hold_are_recorded_as_dropped(box: Sandbox) -> None:
    p = pane(box)
    try:
        held = unique("needs-approval")
        run_line(p, f"touch {held}")
        screen = p.wait_for("waiting for approval (request ")
        request = screen.split("waiting for approval (request ")[1].split(",")[0]
        p.type(f"echo {GH}")  # typed while the line is held: never reaches the shell
        p.send("Enter")
        p.send("C-c")
        p.wait_for("not run: cancelled")
        [cancelled] = [e for e in box.events() if e["event"] == "approval_cancelled" and e["request"] == request]
        assert cancelled["reason"] == "ctrl-c"
        p.exit_shell()
    finally:
        p.close()
    path = recording_for(box, lambda e: e["session"] == cancelled["session"])
    markers = load_cast(path.read_bytes()).markers()
    dropped = [m for m in markers if m.startswith("dropped-input: ")]
    assert dropped == [f"dropped-input: {len(GH) + 7} bytes: echo ghp_{'*' * (len(GH) - 4)}\\r\\x03"]
    assert markers.index(dropped[0]) < markers.index(f"approval-cancelled: {request} (ctrl-c)")
    assert not any(GH[4:] in m for m in markers)


def test_exec_waits_for_approval(box: Sandbox) -> None:
    marker = unique("needs-approval")
    proc = ssh(box, f"touch {marker} && echo done")

    def pending() -> str | None:
        listing = cli(box, "approvals", "list").stdout
        return next((line.split()[0] for line in listing.splitlines() if str(marker) in line), None)

    request = eventually(pending, "the approval request listed")
    assert cli(box, "approvals", "deny", request, "--as", "bob").returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and b"was not approved (denied by bob)" in err
    assert not marker.exists()


def test_an_exec_client_that_hangs_up_while_waiting_cancels_its_request(box: Sandbox) -> None:
    stderr = box.directory / "bastion.stderr"
    seen = stderr.stat().st_size
    marker = unique("needs-approval")
    proc = ssh(box, f"touch {marker}")

    def requested() -> list[dict[str, object]]:
        return [e for e in box.events() if e["event"] == "approval_requested" and str(marker) in str(e["command"])]

    request = eventually(requested, "the approval request")[0]["request"]
    proc.kill()
    proc.wait()
    [cancelled] = eventually(lambda: [e for e in box.events() if e["event"] == "approval_cancelled"
                                      and e["request"] == request], "approval_cancelled")
    assert cancelled["reason"] == "session ended"
    assert f"request   {request} (cancelled)" in cli(box, "approvals", "show", str(request)).stdout
    # The bastion is past that session's end once it has served another one from start to finish.
    assert ssh(box, "true").wait(60) == 0
    assert stderr.read_bytes()[seen:] == b""
    assert not marker.exists()


def rules_check(config: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", "rules", "check", "-c", str(config),
                           "--user", "alice", "--target", "db-1", "--login", "root", "--", command],
                          capture_output=True, text=True, timeout=60, check=False)


def test_rules_check_cli(box: Sandbox) -> None:
    result = rules_check(box.config_path, "ls; rm /tmp/forbidden")
    assert result.returncode == 1
    assert result.stdout.startswith("DENY: deny by rule 'no-forbidden' (on: rm /tmp/forbidden)")
    # Scripts read the exit status: 0 runs, 1 denied, 3 needs a person, 2 could not tell at all.
    assert rules_check(box.config_path, "ls -l").returncode == 0
    assert rules_check(box.config_path, "touch needs-approval").returncode == 3
    unsure = rules_check(box.config_path, "ls 'unclosed")
    assert unsure.returncode == 3 and "[unsure what was submitted]" in unsure.stdout
    missing = rules_check(box.directory / "no-such.toml", "ls")
    assert missing.returncode == 2 and "cannot read config" in missing.stderr


def test_bad_rules_reload_keeps_the_old_rules(box: Sandbox) -> None:
    assert box.process is not None
    rules = box.directory / "rules.toml"
    rules.write_text(RULES + "\n[[rule]]\nname = 'broken'\naction = 'nope'\n")
    box.process.send_signal(1)  # SIGHUP
    eventually(lambda: any(e["event"] == "rules_reload_failed" for e in box.events()), "rules_reload_failed")
    failed = [e for e in box.events() if e["event"] == "rules_reload_failed"][-1]
    assert "rules.toml:" in str(failed["reason"]) and "action must be one of" in str(failed["reason"])
    path = unique("forbidden")
    assert ssh(box, f"touch {path}").wait(60) == 1  # old rules still in force
    rules.write_text(RULES)


def test_a_reload_applies_a_new_rules_file_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    sandbox.add_user("alice", ["ops"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    sandbox.write_ssh_config("alice")
    sandbox.start_bastion()
    try:
        assert sandbox.process is not None
        before = unique("forbidden")
        assert ssh(sandbox, f"touch {before}").wait(60) == 0 and before.exists()  # no rules yet
        (tmp_path / "rules.toml").write_text(RULES)
        sandbox.extra.update(rules_file="rules.toml", grace_period="7s")
        sandbox.write_config()
        sandbox.process.send_signal(1)  # SIGHUP
        [loaded] = eventually(lambda: [e for e in sandbox.events() if e["event"] == "rules_reloaded"], "rules_reloaded")
        assert loaded["rules"] == 3 and str(loaded["file"]).endswith("rules.toml")
        [later] = [e for e in sandbox.events() if e["event"] == "reload_needs_restart"]
        assert later["settings"] == ["grace_period"]
        after = unique("forbidden")
        assert ssh(sandbox, f"touch {after}").wait(60) == 1 and not after.exists()  # screened now
        # A config that no longer loads: said so, and the rules file in force is reloaded.
        sandbox.config_path.write_text(sandbox.config_path.read_text() + "\nbogus = 1\n")
        sandbox.process.send_signal(1)
        [failed] = eventually(lambda: [e for e in sandbox.events() if e["event"] == "config_reload_failed"],
                              "config_reload_failed")
        assert "bogus" in str(failed["reason"])
        eventually(lambda: len([e for e in sandbox.events() if e["event"] == "rules_reloaded"]) == 2, "the reload")
    finally:
        sandbox.stop()


def test_full_screen_programs_are_not_screened_but_a_shell_on_the_alternate_screen_is(box: Sandbox) -> None:
    p = pane(box)
    try:
        # A pager: what is typed there (a search) is for the pager, not a shell.
        notes = unique("notes")
        notes.write_text("nothing forbidden here\n" * 100)
        run_line(p, f"less {notes}")
        eventually(p.alternate_screen, "less on the alternate screen")
        p.type("/forbidden text typed into a program")
        p.send("Enter")
        p.wait_for("Pattern not found")
        # ... but its way into a shell is screened.
        escaped = unique("forbidden-escape")
        p.type(f"!touch {escaped}")
        p.send("Enter")
        p.wait_for("denied by rule 'no-forbidden'")
        assert not escaped.exists()
        p.send("C-c")
        # less drops keys typed while it handles the interrupt: quit once it prompts again.
        eventually(lambda: p.cursor_row() == ":", "less waiting for a command")
        p.type("q")
        eventually(lambda: not p.alternate_screen(), "back from less")
        decisions = [e for e in box.events() if e["event"] == "command_decision"
                     and "typed into a program" in str(e.get("command"))]
        assert decisions == []
        # A shell prompt drawn on the alternate screen is still a shell prompt.
        run_line(p, "printf '\\033[?1049h'")
        eventually(p.alternate_screen, "the alternate screen")
        path = unique("forbidden-alt")
        run_line(p, f"touch {path}")
        p.wait_for("denied by rule 'no-forbidden'")
        run_line(p, "echo alt-$((6*7))")
        p.wait_for("alt-42")
        assert not path.exists()
    finally:
        p.close()
