"""Several bastion instances sharing one PostgreSQL database, behind a real HAProxy in TCP mode:
`ssh -J bastion` goes through HAProxy's one address. Each instance has its own config file
(its listen port and log), the same keys folder, recordings folder and state URL.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bastion.demo.openssh import free_port, stop_process, wait_for_port
from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, need

RULES = """
[defaults]
action = "allow"

[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "5m"
"""


def haproxy_binary() -> str:
    need("haproxy")
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


class Instance:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.port = free_port()
        self.config_path = cluster.directory / f"bastion-{name}.toml"
        self.log_path = cluster.directory / f"bastion-{name}.log"
        self.stderr_path = cluster.directory / f"bastion-{name}.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        box = self.cluster.box
        saved = box.port, dict(box.extra)
        box.port = self.port
        box.extra["log_file"] = self.log_path.name
        try:
            box.write_config()
            shutil.copyfile(box.config_path, self.config_path)
        finally:
            box.port, box.extra = saved

    def start(self) -> None:
        self.write_config()
        self.process = self.serve()
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_port("127.0.0.1", self.port, timeout=0.2)
            except TimeoutError:
                continue
            # Listening; it holds its lease once `instance_started` is written.
            while not self.events("instance_started") and self.process.poll() is None:
                time.sleep(0.05)
            if self.process.poll() is None:
                return
        raise RuntimeError(f"bastion {self.name} did not start:\n{self.stderr_path.read_text()}")

    def serve(self) -> subprocess.Popen[bytes]:
        """`bastion serve` with this instance's config (another one, if started twice)."""
        return subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(self.config_path)],
                                stdin=subprocess.DEVNULL, stderr=self.stderr_path.open("ab"))

    def kill(self) -> None:
        """kill -9: no clean stop, its lease is left to run out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=15)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        found = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [e for e in found if name is None or e["event"] == name]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bastion", *args, "-c", str(self.config_path)],
                              capture_output=True, text=True, timeout=60, check=False)


class Cluster:
    def __init__(self, directory: Path, state_url: str, *, count: int = 2, lease: str = "3s",
                 users: dict[str, list[str]] | None = None) -> None:
        need("ssh", "sshd")
        self.directory = directory
        self.state_url = state_url
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (directory / "rules.toml").write_text(RULES)
        self.box = Sandbox(directory, extra={"rules_file": "rules.toml", "state_db": state_url,
                                             "state": {"lease": lease}})
        for user, groups in (users or {"alice": ["ops"], "bob": ["dba"], "carol": ["ops"]}).items():
            self.box.add_user(user, groups)
        self.box.add_target("db-1", logins=[LOGIN], groups=["ops"])
        self.instances = [Instance(self, chr(ord("a") + i)) for i in range(count)]
        self.port = free_port()  # HAProxy's
        self.haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for instance in self.instances:
            instance.start()
        self.start_haproxy()
        self.box.port = self.port  # users' ssh goes through HAProxy
        for user in self.box.users:
            self.box.write_ssh_config(user)
        # Every instance presents the same host key: trusted at HAProxy's address and at theirs.
        known = self.directory / "known_hosts"
        names = ",".join([f"[127.0.0.1]:{self.port}", *(f"[127.0.0.1]:{i.port}" for i in self.instances)])
        known.write_text(known.read_text().replace(f"[127.0.0.1]:{self.port}", names))

    def start_haproxy(self) -> None:
        servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check inter 1s fall 1 rise 1"
                            for i in self.instances)
        config = self.directory / "haproxy.cfg"
        config.write_text(f"""\
global
    maxconn 500

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    option redispatch
    retries 2

frontend ssh
    bind 127.0.0.1:{self.port}
    default_backend bastions

backend bastions
    balance roundrobin
{servers}
""")
        self.haproxy = subprocess.Popen([haproxy_binary(), "-f", str(config), "-db"], stdin=subprocess.DEVNULL,
                                        stdout=(self.directory / "haproxy.log").open("ab"),
                                        stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, timeout=20)

    def stop(self) -> None:
        if self.haproxy is not None:
            stop_process(self.haproxy, grace=5)
        for instance in self.instances:
            instance.stop()
        for server in self.box.servers.values():
            server.stop()

    def ssh_argv(self, command: str, *, user: str = "alice", port: int | None = None) -> list[str]:
        """`ssh -J bastion LOGIN@db-1 COMMAND` through HAProxy, or straight to an instance's port."""
        argv = ["ssh", "-F", str(self.directory / f"ssh_config-{user}")]
        if port is not None:
            argv += ["-J", f"{user}@127.0.0.1:{port}"]
        else:
            argv += ["-J", "bastion"]
        return [*argv, f"{LOGIN}@db-1", command]

    def ssh(self, command: str, *, user: str = "alice", port: int | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.ssh_argv(command, user=user, port=port), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def holder(self, event: str, match: Any) -> Instance | None:
        """The instance whose log has `event` matching `match(event)`."""
        for instance in self.instances:
            if any(match(e) for e in instance.events(event)):
                return instance
        return None
