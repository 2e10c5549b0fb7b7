"""Shared fixtures: one sandbox (bastion + real sshd targets) for the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, Lab, need
from tests.support.postgres import PostgresServer

# No example has a time limit (Hypothesis's default deadline is a timed assertion, and fails
# on a loaded machine). CI replays the same examples every run (a new counterexample is found
# locally, not by chance in CI); local runs keep exploring.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test takes a fresh database of it."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
