"""The algorithms the bastion offers, audited by `ssh-audit` on both hops it controls: its own
port (as a server) and the hop to targets (as a client, audited by ssh-audit's client mode
standing in as a target). No failures, and no warnings except the post-quantum note on the
classical key exchanges kept as fallbacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.config import DEFAULT_KEX
from bastion.demo.sandbox import Sandbox
from bastion.state.keys import public_line
from tests.support.lab import LOGIN, eventually, need

pytestmark = pytest.mark.e2e
POST_QUANTUM_NOTE = "does not provide protection against post-quantum attacks"
SECTIONS = ("kex", "key", "enc", "mac")


def ssh_audit() -> str:
    found = shutil.which("ssh-audit") or str(Path(sys.executable).with_name("ssh-audit"))
    if not Path(found).exists():
        pytest.fail("ssh-audit is missing: pip install -e '.[test]'")
    return found


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd")
    sandbox = Sandbox(tmp_path_factory.mktemp("algorithms"))
    sandbox.add_user("alice", ["ops"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"])
    # ssh-audit's client mode listens where this target is: the bastion connects to it as a client.
    stand_in = public_line(asyncssh.generate_private_key("ssh-ed25519").convert_to_public())
    sandbox.add_target("audit-1", logins=[LOGIN], groups=["ops"], start=False, pin=False, host_key=stand_in)
    sandbox.write_ssh_config("alice")
    sandbox.start_bastion()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def listening(port: int) -> bool:
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
    return any(f":{port:04X}" in line.split()[1] and line.split()[3] == "0A" for line in lines)


def findings(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(failures, warnings) of every algorithm in the report, as `section name: note`."""
    fails, warns = [], []
    for section in SECTIONS:
        for entry in report.get(section, []):
            notes = entry.get("notes", {})
            fails += [f"{section} {entry['algorithm']}: {note}" for note in notes.get("fail", [])]
            warns += [f"{section} {entry['algorithm']}: {note}" for note in notes.get("warn", [])]
    return fails, warns


def assert_clean(report: dict[str, Any]) -> None:
    fails, warns = findings(report)
    assert not fails, fails
    assert all(w.endswith(POST_QUANTUM_NOTE) for w in warns), warns
    # The only algorithms with that note are classical key exchanges kept as fallbacks.
    noted = {w.split(":")[0].split(" ", 1)[1] for w in warns}
    assert noted <= set(DEFAULT_KEX) - {"mlkem768x25519-sha256"}, noted


def test_the_bastions_port_passes_ssh_audit(box: Sandbox) -> None:
    result = subprocess.run([ssh_audit(), "-j", "--skip-rate-test", "-t", "20", "-p", str(box.port), "127.0.0.1"],
                            capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(result.stdout)
    offered = {entry["algorithm"] for entry in report["kex"]}
    assert "mlkem768x25519-sha256" in offered and "diffie-hellman-group14-sha1" not in offered
    assert_clean(report)
    # The classical fallbacks are there for clients without post-quantum exchange.
    assert {"curve25519-sha256", "diffie-hellman-group16-sha512"} <= offered


def test_the_hop_to_targets_passes_ssh_audit(box: Sandbox) -> None:
    port = box.servers["audit-1"].port
    auditor = subprocess.Popen([ssh_audit(), "-c", "-j", "-t", "30", "-p", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Not by connecting: ssh-audit would audit that connection instead of the bastion's.
        eventually(lambda: listening(port), "ssh-audit listening")
        # The jump makes the bastion connect to the stand-in as a client; the login then fails.
        jump = subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion",
                               f"{LOGIN}@audit-1", "true"], capture_output=True, timeout=60, check=False)
        assert jump.returncode == 255
        out, _ = auditor.communicate(timeout=60)
    finally:
        auditor.kill()
    report = json.loads(out)
    eventually(lambda: [e for e in box.events() if e["event"] == "upstream_failed"], "the failed upstream login")
    offered = {entry["algorithm"] for entry in report["kex"]}
    assert "mlkem768x25519-sha256" in offered, report
    assert_clean(report)
