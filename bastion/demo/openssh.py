"""Start a throwaway OpenSSH sshd on loopback that trusts the bastion's user CA.

Used by `bastion demo` (a local target to try), by the test suite (the real target) and by the
benchmarks (target and a plain OpenSSH jump host). Everything lives in one folder it owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str:
    for candidate in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("OpenSSH sshd not found; install it (Debian: apt-get install openssh-server)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class OpenSSHServer:
    """An sshd process: `TrustedUserCAKeys`, per-user principals, VERBOSE log in `log_path`."""

    directory: Path
    user_ca: str | None = None
    principals: dict[str, list[str]] = field(default_factory=dict)
    authorized_keys: str | None = None
    extra_config: list[str] = field(default_factory=list)
    # The sessions' HOME (sshd's SetEnv): a folder of its own keeps the account's start-up files
    # (shell rc, version managers' hooks) out of every session. None: the account's own.
    home: Path | None = None
    max_startups: str = "100:30:200"  # sshd's MaxStartups (start:rate:full)
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def host_key_path(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    def host_public_key(self) -> str:
        return self.host_key_path.with_suffix(".pub").read_text().strip()

    def start(self) -> OpenSSHServer:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.host_key_path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment="target host key")
            key.write_private_key(self.host_key_path)
            os.chmod(self.host_key_path, 0o600)
            key.write_public_key(self.host_key_path.with_suffix(".pub"))
        self.port = self.port or free_port(self.host)
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.directory / 'sshd.pid'}",
            "LogLevel VERBOSE",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp internal-sftp",
            f"MaxStartups {self.max_startups}",
            "MaxSessions 50",
            "ExposeAuthInfo yes",
        ]
        if self.user_ca:
            (self.directory / "user_ca.pub").write_text(self.user_ca.strip() + "\n")
            lines.append(f"TrustedUserCAKeys {self.directory / 'user_ca.pub'}")
        if self.principals:
            folder = self.directory / "principals"
            folder.mkdir(exist_ok=True)
            for login, names in self.principals.items():
                (folder / login).write_text("".join(f"{n}\n" for n in names))
            lines.append(f"AuthorizedPrincipalsFile {folder}/%u")
        if self.authorized_keys:
            (self.directory / "authorized_keys").write_text(self.authorized_keys)
            lines.append(f"AuthorizedKeysFile {self.directory / 'authorized_keys'}")
        else:
            lines.append("AuthorizedKeysFile none")
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            lines.append(f"SetEnv HOME={self.home}")
        lines.extend(self.extra_config)
        config = self.directory / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen(
            [find_sshd(), "-D", "-f", str(config), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"sshd did not start on port {self.port}:\n{log}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=5)

    def __enter__(self) -> OpenSSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
