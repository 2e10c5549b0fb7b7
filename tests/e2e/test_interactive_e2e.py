"""An interactive pty session through the bastion, typed into a real terminal (tmux)."""

from __future__ import annotations

import time

import pytest

from tests.support.lab import LOGIN, Lab, need
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e


def test_interactive_shell_prompt_ctrl_c_and_resize(lab: Lab) -> None:
    need("tmux")
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1"],
                    width=100, height=30)
    try:
        pane.type("PS1='rea''dy> '")
        pane.send("Enter")
        pane.wait_for("ready>")
        pane.type("echo answer-$((6*7)) $TERM")
        pane.send("Enter")
        pane.wait_for("answer-42 tmux")
        pane.type("sleep 300; echo not-interrupted")
        pane.send("Enter")
        time.sleep(0.5)
        pane.send("C-c")
        pane.type("echo after-ctrl-c")
        pane.send("Enter")
        screen = pane.wait_for("\nafter-ctrl-c")
        assert "not-interrupted" not in screen.replace("echo not-interrupted", "")
        pane.type("stty size")
        pane.send("Enter")
        pane.wait_for("30 100")
        pane.resize(120, 40)
        time.sleep(0.3)
        pane.type("clear; stty size")
        pane.send("Enter")
        pane.wait_for("40 120")
        pane.type("exit 5")
        pane.send("Enter")
        pane.exit_shell()
        assert pane.dead()
    finally:
        pane.close()
    shells = [e for e in lab.events("session_ended") if e.get("kind") == "shell"]
    assert shells and shells[-1]["exit_status"] == 5
