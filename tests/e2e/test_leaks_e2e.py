"""Leak trials end to end: a real target prints each trial through the bastion into a real ssh
client in tmux, split where the unit trials split it with a pause there; what tmux draws is read
back. A sample of each class of tests/support/leaks.py (the unit tests run every offset)."""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path

import pytest

from recorder.asciicast import load_cast
from tests.support import leaks, mask_attacks
from tests.support.lab import LOGIN, Lab, need
from tests.support.recordings import recording_for
from tests.support.samples import pem
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e

SECRETS = {s.kind: s for s in leaks.corpus() if s.kind in ("aws-access-key-id", "github-token", "jwt")}
SECRETS["card"] = next(s for s in leaks.corpus() if s.kind == "card-number" and " " in s.text)
ORDINARY = ("end", "after the key", "127.0.0.1", "next line", "scrolled")


def sample() -> list[leaks.Trial]:
    secrets = list(SECRETS.values())
    trials = [*leaks.plain(secrets[:1]), *leaks.undrawn(secrets), *leaks.cursor_drawn(secrets),
              *leaks.cards_then_digits()[:2], *leaks.pem_footer(pem("openssh"))]
    trials += [t for t in leaks.tricks(secrets) if not t.name.startswith(("DECSTBM", "CUP"))]
    # tmux knows CSI s/u, pyte does not: this trick is tried here only.
    trials += [leaks.Trial(f"SCOSC {s.kind}", s, leaks._scosc(s), strict=False) for s in secrets]
    return trials


def shown(screen: str, trial: leaks.Trial) -> list[str]:
    """Runs of four characters of the secret, none of them public, that the screen shows."""
    text, public = trial.secret.text, trial.secret.public
    runs = [text[i:i + 4] for i in range(len(text) - 3)
            if not any(j in public for j in range(i, i + 4)) and " " not in text[i:i + 4]]
    flat = screen.replace("\n", "")
    return [run for run in runs if run in flat]


def play(lab: Lab, pane: TmuxPane, trial: leaks.Trial, *, slowly: bool = False) -> str:
    """Print the trial from the target, pausing where the unit trials split it (in the middle of
    its last secret piece), or after every character; return tmux's screen after it."""
    data = trial.printed()
    last = max((p for p in trial.pieces if p.start >= 0), key=trial.pieces.index)
    offset = data.index(last.text.encode()) + len(last.text.encode()) // 2
    chunks = [data[i:i + 1] for i in range(len(data))] if slowly else [data[:offset], data[offset:]]
    folder = f"/tmp/leak-{uuid.uuid4().hex[:8]}"
    script = "".join(f"printf %s {shlex.quote(c.hex())} | xxd -r -p; sleep 0.2; " for c in chunks)
    put = lab.ssh(f"{LOGIN}@db-1", f"mkdir -p {folder} && cat > {folder}/run.sh", input=script.encode())
    assert put.returncode == 0, put.stderr
    done = f"done-{uuid.uuid4().hex[:6]}"
    pane.type(f"clear; sh {folder}/run.sh; echo; echo {done[:5]}''{done[5:]}; rm -r {folder}")
    pane.send("Enter")
    return pane.wait_for(f"\n{done}", timeout=60)


def test_leak_trials_drawn_by_tmux(lab: Lab) -> None:
    need("tmux", "xxd")
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1"],
                    width=leaks.WIDTH, height=leaks.HEIGHT)
    failures = []
    trials = 0
    try:
        pane.type("PS1='l''k> '")
        pane.send("Enter")
        pane.wait_for("lk>")
        for trial in sample():
            screen = play(lab, pane, trial)
            trials += 1
            if leaked := shown(screen, trial):
                failures.append(f"{trial.name}: shows {leaked}")
            missing = [w for w in ORDINARY if w in trial.printed().decode() and w not in screen]
            if missing:
                failures.append(f"{trial.name}: over-masked, {missing} missing")
        for trial in leaks.plain(list(SECRETS.values())):
            screen = play(lab, pane, trial, slowly=True)
            trials += 1
            if leaked := shown(screen, trial):
                failures.append(f"{trial.name} slowly: shows {leaked}")
        pane.exit_shell()
    finally:
        pane.close()
    assert trials > 40
    assert failures == [], "\n".join(failures)


def test_a_password_typed_without_a_prompt_is_hidden_whatever_the_output_after_it(lab: Lab) -> None:
    """`read -s b; echo no-prompt-done`: the answer holds the password's letters in order. The
    keys never echoed as they were typed, so they are hidden."""
    need("tmux")
    pane = TmuxPane(["ssh", "-F", str(lab.ssh_config), "-J", "bastion", f"{LOGIN}@db-1"])
    marker = f"hidden-{uuid.uuid4().hex[:6]}"
    try:
        pane.type(f"PS1='h''i> '; echo {marker}")
        pane.send("Enter")
        pane.wait_for("hi>")
        for command, password, answer in (("read -s b; echo no-prompt-done", "nodone", "no-prompt-done"),
                                          ("read -s k; head -3 /etc/services", "Nets", "Network")):
            # The keys come once echo is off: `stty -echo` has run when its line's answer shows
            # (`read -s` turns it off itself, some time after the command's echo).
            pane.type(f"stty -echo; echo echo-$((6*7))-off; {command}; stty echo")
            pane.send("Enter")
            pane.wait_for("echo-42-off\n")
            for key in password:  # typed by hand: a key at a time
                pane.type(key)
                time.sleep(0.15)
            pane.send("Enter")
            pane.wait_for(answer)
        pane.exit_shell()
    finally:
        pane.close()
    cast_path = recording_for(lab.sandbox, lambda e: e.get("kind") == "shell" and marker in _cast(e, lab))
    cast = load_cast(cast_path.read_bytes())
    assert b"nodone" not in cast.input_bytes() and b"Nets" not in cast.input_bytes()
    assert "hidden-input: 6 keystrokes" in cast.markers() and "hidden-input: 4 keystrokes" in cast.markers()
    assert b"read -s b" in cast.input_bytes()  # the commands themselves are recorded


def _cast(event: dict[str, object], lab: Lab) -> str:
    paths = list((lab.sandbox.directory / "recordings").rglob(f"{event['session']}.cast"))
    return paths[0].read_text(errors="replace") if paths else ""


def _attack_script(chunks: list[bytes]) -> str:
    return "".join(f"printf %s {shlex.quote(c.hex())} | xxd -r -p; sleep 0.2; " for c in chunks)


def _attack_screen(command: list[str]) -> str:
    """What tmux shows once `command` printed an attack, then DONE (it then waits: a pane that
    ends gets a line of tmux's own, which scrolls the screen)."""
    pane = TmuxPane(command, width=mask_attacks.WIDTH, height=mask_attacks.HEIGHT)
    try:
        return pane.wait_for("DONE", timeout=60)
    finally:
        pane.close()


def _shows_key(screen: str) -> bool:
    return any(mask_attacks.KEY in row.encode("ascii", "ignore").decode() for row in screen.split("\n"))


def test_hostile_drawing_through_the_bastion_never_shows_the_key_whole(lab: Lab, tmp_path: Path) -> None:
    """Each attack of tests/support/mask_attacks.py, printed by a real target on a fresh pty
    (the view knows nothing of the screen yet), drawn by tmux as the ssh client's terminal: the
    key is never whole, ` end` still shows. Printed straight into tmux, the same bytes show it."""
    need("tmux", "xxd")
    failures = []
    for name, chunks in [*mask_attacks.LEAKS.items(), *mask_attacks.MORE.items()]:
        script = _attack_script(chunks) + "echo; echo DO''NE"
        local = tmp_path / "attack.sh"
        local.write_text(script)
        if name in mask_attacks.LEAKS and not _shows_key(_attack_screen(["sh", "-c", f"sh {local}; sleep 60"])):
            failures.append(f"{name}: tmux does not show the key without the bastion")
        folder = f"/tmp/attack-{uuid.uuid4().hex[:8]}"
        put = lab.ssh(f"{LOGIN}@db-1", f"mkdir -p {folder} && cat > {folder}/run.sh", input=script.encode())
        assert put.returncode == 0, put.stderr
        ssh = ["ssh", "-F", str(lab.ssh_config), "-tt", "-J", "bastion", f"{LOGIN}@db-1",
               f"sh {folder}/run.sh; rm -r {folder}; sleep 60"]
        if name in mask_attacks.BOTTOM:  # the cursor on the last row before the session starts
            ssh = ["sh", "-c", f"printf '{chr(92)}n%.0s' $(seq {mask_attacks.HEIGHT}); {shlex.join(ssh)}"]
        screen = _attack_screen(ssh)
        if _shows_key(screen):
            failures.append(f"{name}: the key shows through the bastion:\n{screen}")
        if " end" not in screen.encode("ascii", "ignore").decode():
            failures.append(f"{name}: over-masked, ' end' missing:\n{screen}")
    assert failures == [], "\n".join(failures)
