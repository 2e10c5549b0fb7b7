"""Bastion instances sharing one state database: who is alive (a lease each), and the keys
they must all present.

Each running `bastion serve` is an instance with an id of its own and a lease it renews
(`heartbeat`). Work an instance owns (its pending approvals, its live sessions, its recordings
in progress) names it; the others clean that work up only once its lease has run out, so
starting an instance never touches another live instance's rows. A stopped instance removes
its own row; a killed one stops renewing.

Every instance behind one address must hold the same keys (the host key users pinned, the
CAs targets trust, the recording and cookie keys). Their fingerprints are recorded by the
first instance; one whose keys differ refuses to start, and `bastion check` says so.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from dataclasses import dataclass

from bastion.state.db import Location, Migrations, StateDatabase

_V1 = (
    "CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
    " started REAL NOT NULL, heartbeat REAL NOT NULL, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS key_fingerprints (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
    " recorded REAL NOT NULL, instance TEXT NOT NULL)",
)
INSTANCES = Migrations(
    "instances",
    sqlite=(_V1,),
    postgres=(tuple(s.replace(" REAL ", " DOUBLE PRECISION ") for s in _V1),),
)
DEFAULT_LEASE = 15.0
CHANNEL_RELOAD = "bastion_reload"


def this_host() -> str:
    """The host name, and the PID namespace when there is one: processes of instances with the
    same value see each other's pids (containers sharing a host name do not)."""
    try:
        namespace = f"/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return socket.gethostname() + namespace


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_instance_id() -> str:
    """host-pid-random: unique, and says where to look for the process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def secret_fingerprint(name: str, secret: bytes) -> str:
    """A fingerprint of a symmetric key that does not reveal it."""
    digest = hashlib.sha256(b"bastion key fingerprint " + name.encode() + b"\0" + secret).hexdigest()
    return f"SHA256:{digest}"


@dataclass(frozen=True)
class KeyMismatch:
    name: str
    ours: str
    recorded: str
    by: str

    def __str__(self) -> str:
        return (f"{self.name}: this instance has {self.ours}, the other instances use {self.recorded}"
                f" (recorded by {self.by})")


class Instances:
    """Synchronous; code on the event loop calls it through a DatabaseThread."""

    def __init__(self, location: Location, instance: str, *, lease: float = DEFAULT_LEASE) -> None:
        self.db = StateDatabase.open(location)
        self.db.migrate(INSTANCES)
        self.id, self.lease = instance, lease

    def register(self) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO instances (id, host, pid, started, heartbeat, expires) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat, expires = excluded.expires",
            (self.id, this_host(), os.getpid(), now, now, now + self.lease))

    def heartbeat(self) -> bool:
        """Renew the lease. False when the row was gone (the lease had run out and another
        instance cleaned up after us): it is made again, but what was cleaned stays so."""
        now = time.time()
        renewed = self.db.execute("UPDATE instances SET heartbeat = ?, expires = ? WHERE id = ?",
                                  (now, now + self.lease, self.id)).rowcount > 0
        if not renewed:
            self.register()
        return renewed

    def stopped(self) -> None:
        """A clean stop: the instance's row goes (its sessions ended, its requests were cancelled)."""
        self.db.execute("DELETE FROM instances WHERE id = ?", (self.id,))

    def end_gone_here(self) -> list[str]:
        """Instances on this host (and PID namespace) whose process is gone: their lease ends
        now, as no process can renew it (a bastion killed and started again needs not wait for
        its old lease). Processes that run are never judged, whatever their pid holds."""
        rows = self.db.execute("SELECT id, pid FROM instances WHERE host = ? AND id != ? AND expires > ?",
                               (this_host(), self.id, time.time())).fetchall()
        gone = [instance for instance, pid in rows if pid != os.getpid() and not process_running(pid)]
        for instance in gone:
            self.db.execute("UPDATE instances SET expires = ? WHERE id = ?", (time.time() - 1, instance))
        return gone

    def alive(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM instances WHERE expires > ? ORDER BY started",
                                              (time.time(),))]

    def listing(self) -> list[tuple[str, str, int, float, float]]:
        """(id, host, pid, started, expires) of every instance with a row, live or not."""
        return [(r[0], r[1], r[2], r[3], r[4]) for r in self.db.execute(
            "SELECT id, host, pid, started, expires FROM instances ORDER BY started")]

    def forget_expired(self, older_than: float = 3600.0) -> int:
        """Rows of instances whose lease ran out long ago (their work was cleaned up meanwhile)."""
        cutoff = time.time() - older_than
        return self.db.execute("DELETE FROM instances WHERE expires < ?", (cutoff,)).rowcount

    # -- keys every instance must share ------------------------------------------------------------

    def recorded_keys(self) -> dict[str, tuple[str, str]]:
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            "SELECT name, fingerprint, instance FROM key_fingerprints")}

    def key_mismatches(self, fingerprints: dict[str, str]) -> list[KeyMismatch]:
        recorded = self.recorded_keys()
        return [KeyMismatch(name, fp, recorded[name][0], recorded[name][1])
                for name, fp in sorted(fingerprints.items())
                if name in recorded and recorded[name][0] != fp]

    def record_keys(self, fingerprints: dict[str, str]) -> list[KeyMismatch]:
        """Record the fingerprints not recorded yet (the first instance's keys become the
        service's), then compare: the mismatches, none when this instance may serve."""
        with self.db.transaction():
            for name, fp in fingerprints.items():
                self.db.execute("INSERT INTO key_fingerprints (name, fingerprint, recorded, instance)"
                                " VALUES (?,?,?,?) ON CONFLICT (name) DO NOTHING",
                                (name, fp, time.time(), self.id))
        return self.key_mismatches(fingerprints)
