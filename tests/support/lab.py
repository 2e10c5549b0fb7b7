"""What the tests share: waiting for a state, required tools, the lab of real OpenSSH peers."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from bastion.demo.sandbox import Sandbox

LOGIN = getpass.getuser()


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


async def until(probe: Callable[[], object], what: str, timeout: float = 5) -> None:
    """`eventually` inside the event loop: the loop runs while the probe waits."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


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
