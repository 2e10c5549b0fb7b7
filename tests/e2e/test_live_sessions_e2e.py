"""Live sessions through a real bastion: the registry lists them across kinds, a kill from another
process reaches the user with its reason, marks the recording and closes the target's side."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from bastion.cli.livereview import ReviewRegistry
from bastion.config import load_config
from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox
from player.app import BrowserScreen, KillScreen, PlayerApp, ReplayScreen, TerminalView
from player.cli import review_app
from recorder.asciicast import load_cast
from tests.support.idp import WebhookReceiver
from tests.support.lab import LOGIN, eventually, need, until
from tests.support.recordings import recording_for
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e
TARGET = f"{LOGIN}@db-1"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "sftp", "tmux")
    sandbox = Sandbox(tmp_path_factory.mktemp("live"),
                      extra={"access": {"reviewers": ["sec"], "admins": ["oncall"]},
                             "session": {"allow_port_forwarding": True}})
    sandbox.add_user("alice", ["ops"])
    sandbox.add_user("bob", ["ops"])
    sandbox.add_user("sue", ["sec"])
    sandbox.add_user("olga", ["oncall"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    sandbox.add_target("vault-1", logins=[LOGIN], groups=["ops"], moderated_by=["sec"],
                       moderator_timeout="10m")
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


# -- watching over ssh to the bastion: the terminal UI on the channel's pty ----------------------------


def own_pane(box: Sandbox, user: str, *command: str, width: int = 120, height: int = 36) -> TmuxPane:
    """`ssh -t bastion COMMAND` as `user` in a terminal; the pane says when ssh has ended."""
    ssh = shlex.join(["ssh", "-F", str(box.directory / f"ssh_config-{user}"), "-t", "bastion", *command])
    return TmuxPane(["bash", "-c", f"{ssh}; echo; echo ssh exited $?; exec sleep 600"], width=width, height=height)


def viewers(session: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"bastion play .*{session}"], capture_output=True, text=True,
                           check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_a_reviewer_follows_a_live_shell_as_it_happens_and_sees_it_end(box: Sandbox) -> None:
    shell = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    watcher: TmuxPane | None = None
    try:
        ready(shell)
        session = live_one(box, lambda s: s["kind"] == "shell" and s["user"] == "alice", "alice's shell")
        watcher = own_pane(box, "sue", "sessions", "follow", session["id"])
        watcher.wait_for("LIVE")
        shell.type("echo followed-$((6*7))")
        shell.send("Enter")
        watcher.wait_for("followed-42")
        watcher.resize(150, 36)  # the UI follows the viewer's terminal: its footer moves right
        eventually(lambda: any(len(line.rstrip()) > 140 for line in watcher.screen().splitlines()),  # type: ignore[union-attr]
                   "the UI laid out at the new width")
        shell.exit_shell()
        watcher.wait_for("ENDED")
        watcher.type("q")
        watcher.wait_for("ssh exited 0")
        eventually(lambda: not viewers(session["id"]), "the viewer process ends with the UI")
    finally:
        shell.close()
        if watcher is not None:
            watcher.close()
    viewed = [e for e in box.events() if e["event"] == "session_viewed" and e.get("session") == session["id"]]
    assert [(e["by"], e["owner"], e["how"], e["live"]) for e in viewed] == [("sue", "alice", "follow", True)]


def test_only_reviewers_watch_other_people_s_sessions(box: Sandbox) -> None:
    done = jump(box, TARGET, "echo replay-me-$((2*21))", user="bob")
    assert done.wait(60) == 0
    session = eventually(lambda: [e["session"] for e in box.events() if e["event"] == "session_ended"
                                  and e["user"] == "bob" and "replay-me" in (e.get("command") or "")],
                         "bob's session ended")[-1]
    eventually(lambda: recording_for(box, lambda e: e["session"] == session), "its recording")
    stranger = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-tt", "bastion", "play",
                               session], capture_output=True, text=True, timeout=60, check=False)
    assert stranger.returncode == 1 and f"you may not watch bob's session {session}" in stranger.stderr
    refused = [e for e in box.events() if e["event"] == "own_command_refused" and e["user"] == "alice"]
    assert refused and f"play {session}" in refused[-1]["command"]
    no_terminal = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-bob"), "bastion", "play", session],
                                 capture_output=True, text=True, timeout=60, check=False)
    assert no_terminal.returncode == 1 and "is a terminal UI: use ssh -t bastion play" in no_terminal.stderr
    owner = own_pane(box, "bob", "play", session)
    try:
        owner.wait_for("verified")
        owner.type("end")  # to the end of the replay: what the session printed
        owner.send("End")
        owner.wait_for("replay-me-42")
        owner.send("q")
        owner.wait_for("ssh exited 0")
    finally:
        owner.close()
    viewed = [e for e in box.events() if e["event"] == "session_viewed" and e.get("session") == session]
    assert [(e["by"], e["how"]) for e in viewed] == [("bob", "play")]


def test_review_over_ssh_lists_what_the_user_may_see_and_logs_each_replay(box: Sandbox) -> None:
    for user in ("alice", "bob"):
        assert jump(box, TARGET, f"echo reviewed-{user}", user=user).wait(60) == 0
    ended = {user: eventually(lambda user=user: [e["session"] for e in box.events() if e["event"] == "session_ended"
                                                 and e.get("command") == f"echo reviewed-{user}"], user)[-1]
             for user in ("alice", "bob")}
    for session in ended.values():
        recording_for(box, lambda e, session=session: e["session"] == session)
    mine = own_pane(box, "alice", "review")
    try:
        screen = mine.wait_for("reviewed-alice")
        assert "alice" in screen and " bob " not in screen
        mine.send("Escape")  # the list has the focus and no filter: Esc quits
        mine.wait_for("ssh exited 0")
    finally:
        mine.close()
    everyone = own_pane(box, "sue", "review")
    try:
        everyone.wait_for("reviewed-bob")
        everyone.send("Enter")  # the list has the focus, newest first: replay bob's
        everyone.wait_for(f"session {ended['bob']}")
    finally:
        everyone.close()  # the terminal closing ends the UI
    eventually(lambda: not subprocess.run(["pgrep", "-f", f"bastion review -c {box.config_path}"],
                                          capture_output=True, check=False).stdout, "no browser left running")
    viewed = [(e["by"], e.get("session"), e.get("owner"), e["how"]) for e in box.events()
              if e["event"] == "session_viewed"]
    assert ("alice", None, "alice", "review") in viewed and ("sue", None, None, "review") in viewed
    assert ("sue", ended["bob"], "bob", "review") in viewed


# -- moderated sessions ----------------------------------------------------------------------------------


def test_a_moderated_session_waits_for_a_moderator_and_pauses_without_one(box: Sandbox) -> None:
    shell = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t",
                      f"{LOGIN}@vault-1"])
    moderator: TmuxPane | None = None
    try:
        shell.wait_for("waiting for a moderator from sec (session ")
        session = live_one(box, lambda s: s["target"] == "vault-1", "the waiting session")
        assert f"ssh -t bastion join {session['id']}" in shell.screen().replace("\n", "")  # a wrapped line
        for user, refusal in (("alice", "nobody moderates their own session"),
                              ("bob", "only sec moderate session")):
            refused = subprocess.run(["ssh", "-F", str(box.directory / f"ssh_config-{user}"), "-tt", "bastion",
                                      "join", session["id"]], capture_output=True, text=True, timeout=60,
                                     check=False)
            assert refused.returncode == 1 and refusal in refused.stderr, refused
        moderator = own_pane(box, "sue", "join", session["id"])
        shell.wait_for("moderator sue is watching")
        ready(shell)
        shell.type("echo moderated-$((6*7))")
        shell.send("Enter")
        shell.wait_for("moderated-42")
        moderator.wait_for("moderated-42")
        moderator.type("q")  # the moderator leaves: input pauses
        moderator.wait_for("ssh exited 0")
        shell.wait_for("your input is paused until one returns")
        shell.type("echo paused-$((2*3))")
        shell.send("Enter")
        moderator.close()
        moderator = own_pane(box, "sue", "join", session["id"])
        screen = shell.wait_for("paused-6\n")
        assert screen.rindex("moderator sue is watching") < screen.index("paused-6\n")
        killed = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-sue"), "bastion", "sessions", "kill",
                                 session["id"], "--reason", "done here"], capture_output=True, text=True,
                                timeout=60, check=False)
        assert killed.returncode == 0, killed.stderr  # a moderator may end the session (sue is no admin)
        shell.wait_for("bastion: session ended by sue: done here")
    finally:
        shell.close()
        if moderator is not None:
            moderator.close()
    events = [(e["event"], e.get("by")) for e in box.events() if e.get("session") == session["id"]
              and e["event"] in ("moderator_joined", "moderator_left", "session_killed")]
    assert events == [("moderator_joined", "sue"), ("moderator_left", "sue"), ("moderator_joined", "sue"),
                      ("session_killed", "sue")] or events[:3] == [("moderator_joined", "sue"),
                                                                   ("moderator_left", "sue"),
                                                                   ("moderator_joined", "sue")]
    cast = load_cast(recording_for(box, lambda e: e["session"] == session["id"]).read_bytes())
    markers = [e.data for e in cast.events if e.code == "m"]
    assert "moderator-joined: sue" in markers and "moderator-left: sue" in markers


# -- the live view of `bastion review` -------------------------------------------------------------------


def live_table(app: PlayerApp) -> list[str]:
    table = app.screen.query_one("#live", DataTable)
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def test_the_review_live_view_follows_a_live_shell_and_ends_it_with_a_reason(box: Sandbox) -> None:
    config = load_config(box.config_path)
    shell = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    try:
        ready(shell)
        session = live_one(box, lambda s: s["kind"] == "shell" and s["user"] == "alice", "alice's shell")
        browser = review_app(config, registry=ReviewRegistry(config), by="olga", may_kill=True)
        assert browser is not None
        app = PlayerApp(browser)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(lambda: session["id"] in live_table(app), "the live shell at the top", timeout=30)
            await pilot.press("shift+tab")  # from the recordings to the live view
            assert app.screen.query_one("#live", DataTable).has_focus
            await pilot.press("enter")  # follow it
            await until(lambda: isinstance(app.screen, ReplayScreen), "the followed session", timeout=30)
            assert "LIVE" in str(app.screen.query_one("#banner", Static).content)
            shell.type("echo live-view-$((6*7))")
            shell.send("Enter")
            await until(lambda: "live-view-42" in str(app.screen.query_one(TerminalView).content),
                        "what alice typed, followed", timeout=30)
            await pilot.press("q")  # back to the list
            assert isinstance(app.screen, BrowserScreen) and app.screen.query_one("#live", DataTable).has_focus
            await pilot.press("k")
            assert isinstance(app.screen, KillScreen)
            await pilot.press("enter")  # no reason: it asks for one
            assert isinstance(app.screen, KillScreen)
            await pilot.press(*"audit hold", "enter")
            await until(lambda: isinstance(app.screen, BrowserScreen) and not live_table(app),
                        "the session gone from the live view", timeout=30)
        shell.wait_for("bastion: session ended by olga: audit hold")
        eventually(shell.dead, "alice's ssh exits")
    finally:
        shell.close()
    [killed] = [e for e in box.events() if e["event"] == "session_killed" and e["session"] == session["id"]]
    assert (killed["by"], killed["reason"]) == ("olga", "audit hold")


def test_review_over_ssh_lists_live_sessions_by_role_and_only_admins_end_them(box: Sandbox) -> None:
    shell = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    panes: list[TmuxPane] = []
    try:
        ready(shell)
        shell.type("echo alive-$((3*3))")
        shell.send("Enter")
        shell.wait_for("alive-9\n")
        session = live_one(box, lambda s: s["kind"] == "shell" and s["user"] == "alice", "alice's shell")
        stranger = own_pane(box, "bob", "review", width=160)  # not a reviewer: only his own live sessions
        panes.append(stranger)
        stranger.wait_for("live sessions: 0")
        assert " alice " not in stranger.screen()
        peek = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-bob"), "-tt", "bastion", "sessions",
                               "follow", session["id"]], capture_output=True, text=True, timeout=60, check=False)
        assert peek.returncode == 1 and f"you may not watch alice's session {session['id']}" in peek.stdout + peek.stderr
        reviewer = own_pane(box, "sue", "review", width=160)  # a reviewer sees it, may not end it
        panes.append(reviewer)
        reviewer.wait_for("live sessions: 1")
        reviewer.send("BTab")
        reviewer.wait_for("k end session")
        reviewer.send("k")
        reviewer.wait_for("you may not end sessions")
        admin = own_pane(box, "olga", "review", width=160)
        panes.append(admin)
        admin.wait_for("live sessions: 1")
        admin.send("BTab")
        admin.wait_for("k end session")  # the footer: the live view has the focus
        admin.send("k")
        admin.wait_for("End session")
        admin.type("closing for the night")
        admin.send("Enter")
        shell.wait_for("bastion: session ended by olga: closing for the night")
        admin.wait_for("live sessions: 0")
        reviewer.wait_for("live sessions: 0")
        for pane in panes:
            pane.send("q")
            pane.wait_for("ssh exited 0")
    finally:
        shell.close()
        for pane in panes:
            pane.close()
    events = [e for e in box.events() if e.get("session") == session["id"]]
    killed = [(e["by"], e["reason"]) for e in events if e["event"] == "session_killed"]
    assert killed == [("olga", "closing for the night")]
    asked = [(e["by"], e["via"]) for e in events if e["event"] == "session_kill_requested"]
    assert asked == [("olga", "ssh review")]
    # Ending a session is no lock-out, and the request that ended it ends nothing else.
    again = jump(box, TARGET, "echo back-$((2*4))")
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and out == b"back-8\n"


# -- moderation scoped in the rules file, the chat told, Ctrl-C gives up the wait ---------------------------

SCOPED_RULES = f"""
[[moderation]]
name = "root-on-db"
targets = ["db-*"]
logins = ["{LOGIN}"]
groups = ["ops"]
moderated_by = ["sec"]
timeout = "10m"
"""


def test_a_rules_file_scope_makes_a_session_wait_tells_the_chat_and_ctrl_c_gives_up(tmp_path: Path) -> None:
    need("ssh", "sshd", "tmux")
    chat = WebhookReceiver()
    (tmp_path / "rules.toml").write_text(SCOPED_RULES)
    scoped = Sandbox(tmp_path, extra={
        "rules_file": "rules.toml",
        "web": {"listen": f"127.0.0.1:{free_port()}", "public_url": "http://127.0.0.1"},
        "notify": [{"kind": "webhook", "name": "pager", "url": chat.url("/hook")},
                   {"kind": "slack", "url": chat.url("/slack")}],
    })
    scoped.add_user("alice", ["ops"])
    scoped.add_user("sue", ["sec"])
    scoped.add_target("db-1", logins=[LOGIN], groups=["ops"])
    for user in ("alice", "sue"):
        scoped.write_ssh_config(user)
    scoped.start_bastion()
    canary = tmp_path / "typed-while-waiting"
    shell = TmuxPane(["ssh", "-F", str(scoped.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
    moderator: TmuxPane | None = None
    try:
        shell.wait_for("Ctrl-C to cancel")
        hook = chat.wait_for(lambda path, p: path == "/hook" and p.get("user") == "alice")
        session = hook["session"]
        assert hook == {"event": "moderator_requested", "session": session, "user": "alice", "target": "db-1",
                        "login": LOGIN, "moderated_by": ["sec"], "join": f"ssh -t bastion join {session}",
                        "timeout": 600}
        slack = chat.wait_for(lambda path, p: path == "/slack" and session in json.dumps(p))
        assert f"ssh -t bastion join {session}" in json.dumps(slack)
        assert "waiting for a moderator from sec (session " + session in shell.screen().replace("\n", "")
        shell.type(f"touch {canary}")  # typed ahead while waiting, then given up on: it never runs
        shell.send("Enter")
        shell.send("C-c")
        shell.wait_for("you stopped waiting for a moderator")
        eventually(shell.dead, "the user's ssh exits")
        assert not canary.exists()
        # The next session waits the same way; a moderator's join starts it.
        shell.close()
        shell = TmuxPane(["ssh", "-F", str(scoped.directory / "ssh_config-alice"), "-J", "bastion", "-t", TARGET])
        shell.wait_for("Ctrl-C to cancel")
        second = chat.wait_for(lambda path, p: path == "/hook" and p["session"] != session)["session"]
        moderator = TmuxPane(["ssh", "-F", str(scoped.directory / "ssh_config-sue"), "-t", "bastion", "join",
                              second], width=120, height=36)
        shell.wait_for("moderator sue is watching")
        ready(shell)
        shell.type("echo scoped-$((6*7))")
        shell.send("Enter")
        moderator.wait_for("scoped-42")
    finally:
        shell.close()
        if moderator is not None:
            moderator.close()
        scoped.stop()
        chat.close()
    events = scoped.events()
    [cancelled] = [e for e in events if e["event"] == "moderation_cancelled"]
    assert (cancelled["session"], cancelled["user"], cancelled["target"]) == (session, "alice", "db-1")
    awaited = {e["session"]: e for e in events if e["event"] == "moderator_awaited"}
    assert awaited[session]["scopes"] == ["root-on-db"] and awaited[session]["notify_failed"] == []


# -- forwards are live sessions too -----------------------------------------------------------------------


def test_a_forward_is_listed_with_its_destination_and_an_admin_ends_it(box: Sandbox) -> None:
    sshd_port = box.servers["db-1"].port  # the target's own sshd, reached through the forward
    tunnel = jump(box, "-W", f"127.0.0.1:{sshd_port}", TARGET, stdin=subprocess.PIPE)
    try:
        assert tunnel.stdout is not None
        assert tunnel.stdout.readline().startswith(b"SSH-2.0-")  # the far side's banner came through
        forward = live_one(box, lambda s: s["kind"] == "forward" and s["user"] == "alice", "the forward")
        assert forward["command"] == f"127.0.0.1:{sshd_port}" and forward["login"] == LOGIN
        assert forward["recording"] is None
        eventually(lambda: next(s for s in listed(box) if s["id"] == forward["id"])["bytes_out"] > 0,
                   "its bytes counted")
        table = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-sue"), "bastion", "sessions", "list"],
                               capture_output=True, text=True, timeout=60, check=False).stdout
        assert forward["id"] in table and "forward" in table and f"127.0.0.1:{sshd_port}" in table
        refused = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-bob"), "bastion", "sessions", "kill",
                                  forward["id"], "--reason", "mine now"], capture_output=True, text=True, timeout=60,
                                 check=False)
        assert refused.returncode == 1 and "only admins" in refused.stderr
        assert tunnel.poll() is None  # a refused kill changed nothing
        killed = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-olga"), "bastion", "sessions", "kill",
                                 forward["id"], "--reason", "no tunnels today"], capture_output=True, text=True,
                                timeout=60, check=False)
        assert killed.returncode == 0, killed.stderr
        _, err = tunnel.communicate(timeout=30)
        assert b"bastion: session ended by olga: no tunnels today" in err
    finally:
        tunnel.kill()
    eventually(lambda: not [s for s in listed(box) if s["id"] == forward["id"]], "the forward gone from the list")
    [ended] = [e for e in box.events() if e["event"] == "session_killed" and e["session"] == forward["id"]]
    assert (ended["by"], ended["reason"], ended["user"]) == ("olga", "no tunnels today", "alice")
