"""Shared fixtures: one sandbox (bastion + real sshd targets) for the end-to-end tests."""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import settings

from bastion.openssh import free_port
from bastion.sandbox import Sandbox

LOGIN = getpass.getuser()

# CI replays the same examples every run (a new counterexample is found locally, not by
# chance in CI); local runs keep exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        pytest.fail(f"missing tools {missing}: run the test command from README.md")


T = TypeVar("T")


def eventually(probe: Callable[[], T], what: str, timeout: float = 20) -> T:
    """The first truthy result of `probe`, polled until `timeout`: tests wait for a state,
    never for a guessed number of seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last seen: {result!r})")
        time.sleep(0.05)


@dataclass
class Lab:
    sandbox: Sandbox
    ssh_config: Path

    def ssh(self, *args: str, user: str = "alice", input: bytes | None = None,
            timeout: float = 60, jump: str = "bastion") -> subprocess.CompletedProcess[bytes]:
        config = self.ssh_config if user == "alice" else self.sandbox.write_ssh_config(user)
        return subprocess.run(
            ["ssh", "-F", str(config), "-J", jump, *args],
            input=input, capture_output=True, timeout=timeout, check=False,
        )

    def tool(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [tool, "-F", str(self.ssh_config), "-J", "bastion", *args],
            capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )

    def events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.sandbox.events() if e["event"] == name]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need("ssh", "sshd", "scp", "sftp")
    sandbox = Sandbox(tmp_path_factory.mktemp("lab"))
    sandbox.add_user("alice", ["ops"])
    sandbox.add_user("bob", ["dev"])
    sandbox.add_user("mallory", ["ops"])
    sandbox.add_target("db-1", logins=[LOGIN], groups=["ops"], aliases=["db-1.internal"])
    sandbox.add_target("secret-1", logins=[LOGIN], groups=["admins"])
    sandbox.add_target("down-1", logins=[LOGIN], groups=["ops"], start=False, pin=False,
                       host_key=sandbox.servers["db-1"].host_public_key())
    # A target whose pinned key is not the one it presents.
    sandbox.add_target("moved-1", logins=[LOGIN], groups=["ops"], pin=False,
                       host_key=sandbox.servers["db-1"].host_public_key())
    # A target whose sshd does not trust the bastion's user CA.
    sandbox.add_target("untrusting-1", logins=[LOGIN], groups=["ops"], principals={})
    sandbox.servers["untrusting-1"].stop()
    sandbox.servers["untrusting-1"].user_ca = None
    sandbox.servers["untrusting-1"].start()
    sandbox.targets["nowhere-1"] = {"address": f"127.0.0.1:{free_port()}", "logins": [LOGIN],
                                    "groups": ["ops"]}
    # mallory's key is not the one the config lists for her.
    sandbox.users["mallory"]["keys"] = sandbox.users["bob"]["keys"]
    ssh_config = sandbox.write_ssh_config("alice")
    sandbox.start_bastion()
    try:
        yield Lab(sandbox, ssh_config)
    finally:
        sandbox.stop()
