"""Single sign-on users: who signed in from the identity provider, the user certificates the
bastion issued them, and who is revoked.

State lives in the state database (SQLite or PostgreSQL, shared with approvals): one row per SSO user bound
to issuer + subject on first sign-in (a later identity claiming the same name is refused), one
row per issued certificate (serial, identity, expiry), a revocation list by user name. The
revoked serials are also published as an OpenSSH KRL (`ssh-keygen -k`), for `RevokedKeys`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives.asymmetric import rsa

from bastion.auth.identity import SignInRefused, resolve_approver
from bastion.auth.oidc import ProviderIdentity
from bastion.config import UserConfig
from bastion.errors import BastionError
from bastion.state.db import Location, Migrations, StateDatabase
from bastion.state.dbthread import DatabaseThread

_V1 = (
    """CREATE TABLE IF NOT EXISTS sso_users (
    "user" TEXT PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    groups TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS user_certificates (
    serial INTEGER PRIMARY KEY,
    "user" TEXT NOT NULL,
    identity TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    issued REAL NOT NULL,
    expires REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS revoked_users (
    "user" TEXT PRIMARY KEY,
    at REAL NOT NULL,
    by TEXT NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS revoked_certificates (serial INTEGER PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS machine_certificates (
    serial INTEGER PRIMARY KEY,
    machine TEXT NOT NULL,
    workload TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS used_tokens (
    token TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    used REAL NOT NULL,
    expires REAL NOT NULL
)""",
)
# 2: certificates are found by user and by issue time (the rate limit).
_V2 = (
    'CREATE INDEX IF NOT EXISTS user_certificates_user ON user_certificates ("user")',
    "CREATE INDEX IF NOT EXISTS user_certificates_identity ON user_certificates (identity, issued)",
)


def _postgres(statements: tuple[str, ...]) -> tuple[str, ...]:
    # Serials are 63-bit; times are seconds with fractions.
    return tuple(s.replace("serial INTEGER", "serial BIGINT").replace(" REAL", " DOUBLE PRECISION")
                 for s in statements)


MIGRATIONS = Migrations("directory", sqlite=(_V1, _V2), postgres=(_postgres(_V1), _postgres(_V2)))
CHANNEL_REVOKED = "bastion_revocations"  # NOTIFY payload: the user revoked
ALLOWED_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
MIN_RSA_BITS = 3072
CERT_RATE = (5, 60.0)  # certificates per identity per that many seconds


class SSOError(BastionError):
    """A sign-in or certificate request refused; the message is safe to show the user."""

    code = "sso_error"
    http_status = 403


class TokenReplayed(SSOError):
    """A workload token that was exchanged before."""

    code = "token_replayed"


class TooManyCertificates(SSOError):
    """The identity asked for more certificates than CERT_RATE allows."""

    code = "too_many_certificates"
    http_status = 429


@dataclass(frozen=True)
class SSOUser:
    user: str
    identity: str
    groups: frozenset[str]
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: asyncssh.SSHCertificate
    serial: int
    key_id: str
    valid_before: int


def certificate_serial(cert: object) -> int | None:
    """An OpenSSH certificate's serial (asyncssh keeps it without a public accessor)."""
    serial = getattr(cert, "_serial", None)
    return serial if isinstance(serial, int) else None


def certificate_info(cert: object) -> dict[str, Any]:
    """Serial, key id, principals and validity of an asyncssh OpenSSH certificate."""
    return {
        "serial": certificate_serial(cert),
        "key_id": getattr(cert, "_key_id", ""),
        "principals": list(getattr(cert, "principals", ())),
        "valid_after": getattr(cert, "_valid_after", 0),
        "valid_before": getattr(cert, "_valid_before", 0),
    }


KRL_FILE = "revoked_user_certs.krl"


def krl_path(state_db: Path) -> Path:
    """Where the revocation list is published: beside the state (it is public), not the keys.
    With the state in PostgreSQL, each instance writes it where the SQLite file would be."""
    return state_db.with_name(KRL_FILE)


class Directory:
    """Synchronous; code on the event loop calls it through `thread`."""

    def __init__(self, location: Location) -> None:
        self.db = StateDatabase.open(location)
        self.db.migrate(MIGRATIONS)
        self.thread = DatabaseThread("sso-db")

    # -- identities ---------------------------------------------------------------------------

    def sign_in(self, identity: ProviderIdentity, users: Mapping[str, UserConfig],
                machines: Collection[str] = ()) -> tuple[str, frozenset[str]]:
        """The bastion user and groups for a verified identity; binds a new SSO user to it.

        Refused when the name belongs to a config user bound elsewhere, to another SSO
        identity, or to a revoked user.
        """
        try:
            user, groups = resolve_approver(identity, users, machines)
        except SignInRefused as exc:
            raise SSOError(str(exc)) from None
        if self.revoked(user):
            raise SSOError(f"user {user} has been revoked on this bastion")
        now = time.time()
        with self.db.transaction():
            row = self.db.execute('SELECT identity FROM sso_users WHERE "user" = ?', (user,)).fetchone()
            if row is not None and row[0] != identity.key:
                raise SSOError(f"user {user} is bound to a different identity at the provider")
            other = self.db.execute(
                'SELECT "user" FROM sso_users WHERE identity = ?', (identity.key,)
            ).fetchone()
            if other is not None and other[0] != user:
                raise SSOError(f"this identity signed in before as {other[0]}, not {user}")
            self.db.execute(
                "INSERT INTO sso_users VALUES (?,?,?,?,?)"
                ' ON CONFLICT ("user") DO UPDATE SET groups = excluded.groups,'
                " last_seen = excluded.last_seen",
                (user, identity.key, ",".join(sorted(groups)), now, now),
            )
        return user, groups

    def sso_user(self, user: str) -> SSOUser | None:
        row = self.db.execute(
            'SELECT "user", identity, groups, first_seen, last_seen FROM sso_users WHERE "user" = ?', (user,)
        ).fetchone()
        if row is None:
            return None
        return SSOUser(row[0], row[1], frozenset(g for g in row[2].split(",") if g), row[3], row[4])

    def sso_users(self) -> list[SSOUser]:
        names = [r[0] for r in self.db.execute('SELECT "user" FROM sso_users ORDER BY "user"')]
        return [u for u in map(self.sso_user, names) if u is not None]

    # -- certificates ---------------------------------------------------------------------------

    def issue(
        self,
        ca: asyncssh.SSHKey,
        public_key: str,
        *,
        user: str,
        identity: str,
        ttl: int,
        now: float | None = None,
    ) -> IssuedCertificate:
        """A user certificate for `public_key`: principal = user, valid `ttl` seconds."""
        key = check_public_key(public_key, ca)
        if not user:
            raise SSOError("no user name to certify")
        if self.revoked(user):
            raise SSOError(f"user {user} has been revoked on this bastion")
        with self.db.transaction():  # the count and the row it adds: no race between processes
            issued_at = time.time()
            self._rate_limit(identity, issued_at)
            now = issued_at if now is None else now
            serial = secrets.randbits(63) | 1
            key_id = f"bastion-login user={user} identity={identity} serial={serial}"
            cert = ca.generate_user_certificate(
                key,
                key_id=key_id,
                serial=serial,
                principals=[user],
                valid_after=int(now) - 60,
                valid_before=int(now) + ttl,
                permit_x11_forwarding=False,
                permit_agent_forwarding=False,
                permit_port_forwarding=True,
                permit_pty=True,
                permit_user_rc=False,
            )
            self.db.execute(
                "INSERT INTO user_certificates VALUES (?,?,?,?,?,?)",
                (serial, user, identity, key.get_fingerprint(), issued_at, now + ttl),
            )
        return IssuedCertificate(cert, serial, key_id, int(now) + ttl)

    def _rate_limit(self, identity: str, now: float) -> None:
        """At most CERT_RATE certificates per identity per window, counted in the state
        database: every process issuing from it shares the count."""
        count, window = CERT_RATE
        recent = self.db.execute("SELECT COUNT(*) FROM user_certificates WHERE identity = ? AND issued > ?",
                                 (identity, now - window)).fetchone()[0]
        if recent >= count:
            raise TooManyCertificates(
                f"too many certificates for this identity; try again in {int(window)} s"
            )

    def certificate_allowed(self, user: str, serial: int | None, fingerprint: str) -> str | None:
        """Why a presented login certificate is refused now, or None. `fingerprint` is the
        SHA-256 fingerprint of the certified key: it must be the one recorded at issue (a
        certificate reusing an issued serial for another key is not that certificate)."""
        if self.revoked(user):
            return f"user {user} has been revoked"
        row = self.db.execute('SELECT "user", fingerprint FROM user_certificates WHERE serial = ?',
                              (serial,)).fetchone()
        if self.db.execute("SELECT 1 FROM revoked_certificates WHERE serial = ?", (serial,)).fetchone():
            return "certificate revoked"
        if row is None:
            return "certificate not issued by this bastion's records"
        if row[0] != user:
            return "certificate was issued to another user"
        if row[1] != fingerprint:
            return f"certificate serial {serial} was issued for another key"
        return None

    # -- machines: workload tokens used once, their certificates and what the token said ---------
    # The whole of the machines' state: `exchange` (one transaction) and `machine_grant`.

    def exchange(
        self,
        ca: asyncssh.SSHKey,
        public_key: str,
        *,
        machine: str,
        identity: str,
        token: str,
        token_expires: float,
        workload: Mapping[str, str],
        ttl: int,
    ) -> IssuedCertificate:
        """A certificate for `machine`, spending `token` (its jti, or its hash): a token is
        exchanged once. Refused, the token stays unspent, except when it was spent before."""
        now = time.time()
        with self.db.transaction(keep_on_error=False):  # refused: nothing of it is kept
            # Tokens past their expiry (and its leeway) can no longer be replayed anyway.
            self.db.execute("DELETE FROM used_tokens WHERE expires < ?", (now - 3600,))
            used = self.db.execute("SELECT machine, used FROM used_tokens WHERE token = ?",
                                   (token,)).fetchone()
            if used is not None:
                raise TokenReplayed(f"this token was already exchanged (by {used[0]}, "
                                    f"{int(now - used[1])} s ago); each token is used once")
            issued = self.issue(ca, public_key, user=machine, identity=identity, ttl=ttl, now=now)
            self.db.execute("INSERT INTO used_tokens VALUES (?,?,?,?)", (token, machine, now, token_expires))
            self.db.execute("INSERT INTO machine_certificates VALUES (?,?,?)",
                            (issued.serial, machine, json.dumps(dict(workload), sort_keys=True)))
        return issued

    def machine_grant(self, serial: int | None) -> tuple[str, dict[str, str]] | None:
        """(machine, workload claims) for a certificate issued by `exchange`, else None."""
        row = self.db.execute("SELECT machine, workload FROM machine_certificates WHERE serial = ?",
                              (serial,)).fetchone()
        if row is None:
            return None
        workload = json.loads(row[1])
        return row[0], {str(k): str(v) for k, v in workload.items()}

    # -- revocation -------------------------------------------------------------------------------

    def revoke(self, user: str, by: str) -> list[int]:
        """Revoke a user (SSO or config); returns the serials of their certificates."""
        with self.db.transaction():
            self.db.execute('INSERT INTO revoked_users ("user", at, by) VALUES (?,?,?)'
                            ' ON CONFLICT ("user") DO UPDATE SET at = excluded.at, by = excluded.by',
                            (user, time.time(), by))
            self.db.execute(
                "INSERT INTO revoked_certificates (serial)"
                ' SELECT serial FROM user_certificates WHERE "user" = ?'
                " ON CONFLICT (serial) DO NOTHING",
                (user,),
            )
        self.db.notify(CHANNEL_REVOKED, user)
        rows = self.db.execute('SELECT serial FROM user_certificates WHERE "user" = ?', (user,))
        return [r[0] for r in rows]

    def restore(self, user: str) -> bool:
        return self.db.execute('DELETE FROM revoked_users WHERE "user" = ?', (user,)).rowcount > 0

    def revoked(self, user: str) -> bool:
        return self.db.execute('SELECT 1 FROM revoked_users WHERE "user" = ?', (user,)).fetchone() is not None

    def revoked_users(self) -> list[str]:
        return [r[0] for r in self.db.execute('SELECT "user" FROM revoked_users ORDER BY "user"')]

    def revoked_serials(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT serial FROM revoked_certificates ORDER BY serial")]


def check_public_key(text: str, ca: asyncssh.SSHKey) -> asyncssh.SSHKey:
    """A user's public key, fit to certify: an allowed type and size, not a certificate, not ours."""
    if not isinstance(text, str) or not text.strip() or len(text) > 16384:
        raise SSOError("no public key")
    first = text.strip().split()[0]
    if "-cert-v01@openssh.com" in first:
        raise SSOError("that is a certificate, not a public key")
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise SSOError(f"not an OpenSSH public key ({exc})") from None
    algorithm = key.get_algorithm()
    if algorithm not in ALLOWED_KEY_TYPES:
        raise SSOError(f"key type {algorithm} is not accepted (use ed25519, ECDSA or RSA >= {MIN_RSA_BITS})")
    if algorithm == "ssh-rsa":
        rsa_key = key.pyca_key
        bits = rsa_key.key_size if isinstance(rsa_key, rsa.RSAPublicKey) else 0
        if bits < MIN_RSA_BITS:
            raise SSOError(f"RSA keys need at least {MIN_RSA_BITS} bits (this one has {bits})")
    if key.public_data == ca.public_data:
        raise SSOError("refusing to certify a certificate authority key")
    return key


def write_krl(path: Path, ca: asyncssh.SSHKey, serials: list[int]) -> None:
    """The revoked serials of `ca` as an OpenSSH KRL (ssh-keygen -k), replaced atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        ca_file = Path(work) / "ca.pub"
        ca.write_public_key(ca_file)
        spec = Path(work) / "spec"
        spec.write_text("".join(f"serial: {s}\n" for s in serials))
        out = Path(work) / "krl"
        result = subprocess.run(
            ["ssh-keygen", "-q", "-k", "-f", str(out), "-s", str(ca_file), str(spec)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise SSOError(f"ssh-keygen could not write the KRL: {result.stderr.strip()}")
        os.chmod(out, 0o644)
        os.replace(out, path)
