"""A real PostgreSQL server for the tests: Debian's binaries, `initdb` into a temp folder,
listening on 127.0.0.1 at a free port (and a socket in its folder), no system service.

PostgreSQL refuses to run as root. When the tests run as root (as CI does), the server runs as
the `postgres` account the Debian package creates (or `nobody`), in a folder of its own under
the system temp folder (pytest's are private to root). Clients connect over TCP as the
`bastion` role with trust authentication: the server only listens on loopback.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

import psycopg
import pytest

from bastion.demo.openssh import free_port

ROLE = "bastion"


def bin_dir() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL is not installed (Debian: postgresql): run the test command from README.md")


def _account() -> pwd.struct_passwd | None:
    """Who the server runs as: None (the test user) unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.fail("running as root and neither a postgres nor a nobody account exists to run PostgreSQL")


class PostgresServer:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.account = _account()
        self.root = Path(tempfile.mkdtemp(prefix="bastion-test-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._names = 0
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust",
                   "-E", "UTF8", "--no-sync", "--locale=C"])

    def _as_account(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, timeout=120, check=False, cwd=self.root,
                                **self._as_account())  # type: ignore[call-overload]
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root,
            **self._as_account(),  # type: ignore[arg-type]
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (what `pg_ctl stop -m fast` does): clients are disconnected."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def url(self, database: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; its URL."""
        self._names += 1
        name = f"{prefix}_{os.getpid()}_{self._names}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
