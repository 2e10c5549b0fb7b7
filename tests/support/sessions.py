"""A bastion of a test module's own, screening with its rules, and what the tests do through it
as alice: ssh to db-1, the bastion's CLI, paths on the target (the same machine) that no other
test uses."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN


def rules_sandbox(directory: Path, rules: str, users: dict[str, list[str]] | None = None) -> Sandbox:
    """A running bastion with `rules` as its rules file; `users` (alice in ops unless given) and
    db-1, reached as LOGIN by ops; alice's ssh config written. The caller stops it."""
    (directory / "rules.toml").write_text(rules)
    sandbox = Sandbox(directory, extra={"rules_file": "rules.toml"})
    for user, groups in (users or {"alice": ["ops"]}).items():
        sandbox.add_user(user, groups)
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    sandbox.write_ssh_config("alice")
    sandbox.start_bastion()
    return sandbox


def start_ssh(box: Sandbox, command: str) -> subprocess.Popen[bytes]:
    """`ssh -J bastion LOGIN@db-1 COMMAND` as alice, running; stdout and stderr piped."""
    return subprocess.Popen(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion",
                             f"{LOGIN}@db-1", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def bastion_cli(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args, "-c", str(box.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)


def unique(name: str) -> Path:
    """A path in /tmp that no test used: the target is this machine, so tests check it directly."""
    return Path(f"/tmp/test-{uuid.uuid4().hex[:8]}-{name}")


def sentinel() -> Path:
    """A folder the rules forbid deleting, holding `keep`: a test checks that `keep` survived."""
    folder = Path(f"/tmp/sentinel-{uuid.uuid4().hex[:10]}")
    folder.mkdir()
    (folder / "keep").write_text("still here\n")
    return folder
