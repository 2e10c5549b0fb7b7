"""Hostile output of a session without a pty, end to end: a real target prints each attack of
tests/support/mask_attacks.py (NOPTY) on its stdout and stderr, through the bastion, into a real
OpenSSH client run without a pty (`ssh -J bastion host 'sh run.sh'`) whose stdout and stderr are
tmux's pane; what tmux draws is read back. The key is never whole, ` end` still shows. Printed
straight into tmux, the same writes show the key."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

from recorder.asciicast import load_cast
from tests.support import mask_attacks
from tests.support.lab import LOGIN, Lab, need
from tests.support.recordings import recording_for
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e


def script(writes: list[mask_attacks.Write]) -> str:
    """Each write on its stream (0 stdout, 1 stderr), a pause after each, then DONE on stdout."""
    return "".join(f"printf %s {shlex.quote(data.hex())} | xxd -r -p{' >&2' if stream else ''}; sleep 0.3; "
                   for stream, data in writes) + "echo; echo DO''NE\n"


def screen_of(command: str, name: str) -> str:
    """What tmux shows once `command` (run by sh, after the terminal is prepared as the attack
    needs) printed DONE; it then waits, so that no line of tmux's own scrolls the screen."""
    before = mask_attacks.BEFORE.get(name, b"")
    prepare = f"printf %s {shlex.quote(before.hex())} | xxd -r -p; " if before else ""
    pane = TmuxPane(["sh", "-c", f"{prepare}{command}; sleep 60"],
                    width=mask_attacks.NARROW.get(name, mask_attacks.WIDTH), height=mask_attacks.HEIGHT)
    try:
        return pane.wait_for("DONE", timeout=60)
    finally:
        pane.close()


def shows_key(screen: str) -> bool:
    return any(mask_attacks.KEY in row.encode("ascii", "ignore").decode() for row in screen.split("\n"))


def test_hostile_output_without_a_pty_never_shows_the_key_whole(lab: Lab, tmp_path: Path) -> None:
    need("tmux", "xxd")
    failures = []
    for name, writes in mask_attacks.NOPTY.items():
        text = script(writes)
        local = tmp_path / "attack.sh"
        local.write_text(text)
        if name not in mask_attacks.NOT_TMUX and not shows_key(screen_of(f"sh {local}", name)):
            failures.append(f"{name}: tmux does not show the key without the bastion")
        folder = f"/tmp/nopty-{uuid.uuid4().hex[:8]}"
        put = lab.ssh(f"{LOGIN}@db-1", f"mkdir -p {folder} && cat > {folder}/run.sh", input=text.encode())
        assert put.returncode == 0, put.stderr
        ssh = ["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1",
               f"sh {folder}/run.sh; rm -r {folder}"]
        screen = screen_of(shlex.join(ssh), name)
        if shows_key(screen):
            failures.append(f"{name}: the key shows through the bastion:\n{screen}")
        if " end" not in screen.encode("ascii", "ignore").decode():
            failures.append(f"{name}: over-masked, ' end' missing:\n{screen}")
    assert failures == [], "\n".join(failures)


def test_the_halves_on_stdout_and_stderr_are_masked_in_the_recording_too(lab: Lab) -> None:
    need("xxd")
    marker = f"halves-{uuid.uuid4().hex[:6]}"
    writes = mask_attacks.NOPTY["prefix on stdout, the rest on stderr"]
    command = f"echo {marker}; " + script(writes)
    result = lab.ssh(f"{LOGIN}@db-1", command)
    assert result.returncode == 0, result.stderr
    assert mask_attacks.KEY[3:].encode() not in result.stderr  # what the client got on stderr
    cast_path = recording_for(lab.sandbox, lambda e: marker in str(e.get("command", "")))
    cast = load_cast(cast_path.read_bytes())
    assert mask_attacks.KEY.encode() not in cast.output_bytes()
    assert "masked: aws-access-key-id" in cast.markers()
