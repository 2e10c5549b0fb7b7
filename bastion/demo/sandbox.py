"""A bastion, its users' keys and real sshd targets in one folder on loopback.

`bastion demo` runs one for a newcomer to try; the test suite and the benchmarks build theirs
the same way, so what the demo shows is what the tests prove.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from bastion.config import load_config
from bastion.demo.openssh import OpenSSHServer, free_port, stop_process, wait_for_port
from bastion.state.keys import KeyStore, known_hosts_lines, public_line


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def write_toml(data: dict[str, Any]) -> str:
    """Enough TOML for our config: scalars, lists, tables, tables of tables, arrays of tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not _is_table_array(v)]

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if scalars or not body:
            lines.append(f"\n[{prefix}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        for key, value in body.items():
            if isinstance(value, dict):
                table(f"{prefix}.{json.dumps(key) if '.' in key else key}", value)

    for key, value in data.items():
        if isinstance(value, dict):
            table(key, value)
        elif _is_table_array(value):
            for entry in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


def make_user_key(path: Path, comment: str) -> str:
    """An ed25519 key pair at `path` (0600) and `path.pub`; returns the public line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    key.write_private_key(path)
    os.chmod(path, 0o600)
    key.write_public_key(path.with_name(path.name + ".pub"))
    return public_line(key.convert_to_public())


@dataclass
class Sandbox:
    directory: Path
    port: int = 0
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, OpenSSHServer] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port = self.port or free_port()

    @property
    def config_path(self) -> Path:
        return self.directory / "bastion.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / "bastion.log"

    @property
    def keys(self) -> KeyStore:
        return KeyStore(Path(self.extra.get("keys_dir", self.directory / "hostkeys"))).load()

    def key_path(self, user: str) -> Path:
        return self.directory / f"id_{user}"

    def add_user(self, name: str, groups: list[str], *, with_key: bool = True) -> Path:
        path = self.key_path(name)
        keys = [make_user_key(path, f"{name}@sandbox")] if with_key else []
        self.users[name] = {"keys": keys, "groups": groups}
        return path

    def add_target(self, name: str, *, logins: list[str], groups: list[str], aliases: list[str] = (),  # type: ignore[assignment]
                   principals: dict[str, list[str]] | None = None, start: bool = True,
                   pin: bool = True, authorized_keys: str | None = None,
                   **extra: Any) -> OpenSSHServer:
        server = OpenSSHServer(
            self.directory / f"target-{name}",
            user_ca=public_line(self.keys.user_ca.convert_to_public()),
            principals=principals if principals is not None else {login: [login] for login in logins},
            authorized_keys=authorized_keys,
            home=self.directory / f"target-{name}" / "home",  # the sandbox's, not the account's
        )
        if start:
            server.start()
        else:
            server.port = free_port()
        self.servers[name] = server
        spec: dict[str, Any] = {
            "address": f"127.0.0.1:{server.port}", "aliases": list(aliases),
            "logins": logins, "groups": groups, **extra,
        }
        if pin and start:
            spec["host_key"] = server.host_public_key()
        self.targets[name] = spec
        return server

    def write_config(self) -> Path:
        data: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "keys_dir": "hostkeys",
            "recordings_dir": "recordings",
            "log_file": "bastion.log",
            "grace_period": "5s",
            **self.extra,
            "users": self.users,
            "targets": self.targets,
        }
        self.config_path.write_text(write_toml(data))
        return self.config_path

    def write_ssh_config(self, user: str = "alice") -> Path:
        """A client config for `user`: `-F` it and `ssh -J bastion root@db-1` just works."""
        config = load_config(self.write_config())
        hosts = [f"[127.0.0.1]:{self.port}"]
        known = self.directory / "known_hosts"
        known.write_text("\n".join(known_hosts_lines(self.keys, list(config.targets.values()), hosts)) + "\n")
        key = self.key_path(user)
        text = f"""\
Host bastion
    HostName 127.0.0.1
    Port {self.port}
    User {user}

Host *
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 20
"""
        path = self.directory / f"ssh_config-{user}"
        path.write_text(text)
        return path

    def start_bastion(self) -> subprocess.Popen[bytes]:
        self.write_config()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stderr=open(self.directory / "bastion.stderr", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_port("127.0.0.1", self.port, timeout=0.2)
                return self.process
            except TimeoutError:
                continue
        self.process.kill()
        self.process.wait()
        err = (self.directory / "bastion.stderr").read_text()
        raise RuntimeError(f"bastion did not start:\n{err}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=15)
        for server in self.servers.values():
            server.stop()

    def events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
