"""The bastion's key material on disk: created on first use, mode 0600, never world-readable."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import asyncssh

from bastion.config import TargetConfig
from bastion.errors import KeyStoreError

KEY_NAMES = ("bastion_host", "inner_host", "host_ca", "user_ca", "login_ca")
PINNED_HOST_KEYS = "target_host_keys"
HOST_CERT_LIFETIME = 24 * 3600
HOST_CERT_RENEW_BEFORE = 3600


def _write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by the owner only, atomically (no window at a wider mode)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(
            f"{path} is accessible by other users (mode {mode:04o}); run: chmod 600 {path}"
        )


class KeyStore:
    """CAs and host keys in one folder. Creating missing keys is the only write it does."""

    def __init__(self, keys_dir: Path) -> None:
        self.dir = keys_dir
        self._keys: dict[str, asyncssh.SSHKey] = {}
        self._host_certs: dict[str, tuple[float, asyncssh.SSHCertificate]] = {}

    def load(self) -> KeyStore:
        """Load every key, generating the missing ones. Refuses keys other users can read."""
        if self.dir.exists() and not self.dir.is_dir():
            raise KeyStoreError(f"{self.dir} is a file, not a folder for keys")
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in KEY_NAMES:
                self._keys[name] = self._load_or_create(self.dir / name)
        except OSError as exc:
            raise KeyStoreError(f"cannot use keys folder {self.dir}: {exc.strerror}") from None
        return self

    def _load_or_create(self, path: Path) -> asyncssh.SSHKey:
        if path.exists():
            _check_private(path)
            try:
                return asyncssh.read_private_key(path)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise KeyStoreError(f"{path}: not a readable private key ({exc})") from None
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"bastion {path.name}")
        _write_private(path, key.export_private_key())
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
        return key

    def _key(self, name: str) -> asyncssh.SSHKey:
        if not self._keys:
            self.load()
        return self._keys[name]

    def key(self, name: str) -> asyncssh.SSHKey:
        """One of KEY_NAMES."""
        return self._key(name)

    @property
    def bastion_host_key(self) -> asyncssh.SSHKey:
        return self._key("bastion_host")

    @property
    def inner_host_key(self) -> asyncssh.SSHKey:
        return self._key("inner_host")

    @property
    def host_ca(self) -> asyncssh.SSHKey:
        return self._key("host_ca")

    @property
    def user_ca(self) -> asyncssh.SSHKey:
        return self._key("user_ca")

    @property
    def login_ca(self) -> asyncssh.SSHKey:
        return self._key("login_ca")

    def target_host_certificate(self, target: TargetConfig) -> asyncssh.SSHCertificate:
        """The host certificate the inner server presents for `target`'s names (cached a day)."""
        now = time.time()
        cached = self._host_certs.get(target.name)
        if cached and cached[0] - now > HOST_CERT_RENEW_BEFORE:
            return cached[1]
        valid_before = int(now) + HOST_CERT_LIFETIME
        cert = self.host_ca.generate_host_certificate(
            self.inner_host_key,
            key_id=f"bastion target {target.name}",
            principals=list(target.names),
            valid_after=int(now) - 300,
            valid_before=valid_before,
        )
        self._host_certs[target.name] = (valid_before, cert)
        return cert

    # -- target host keys pinned by `bastion targets scan` ------------------------------

    @property
    def pinned_path(self) -> Path:
        return self.dir / PINNED_HOST_KEYS

    def pinned_host_key(self, target_name: str) -> asyncssh.SSHKey | None:
        try:
            lines = self.pinned_path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            name, _, key = line.partition(" ")
            if name == target_name and key:
                return asyncssh.import_public_key(key)
        return None

    def pin_host_key(self, target_name: str, key: asyncssh.SSHKey) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            lines = self.pinned_path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            lines = []
        kept = [line for line in lines if line.partition(" ")[0] != target_name]
        public = key.export_public_key().decode("ascii").strip()
        kept.append(f"{target_name} {public}")
        _write_private(self.pinned_path, ("\n".join(kept) + "\n").encode("ascii"))

    def trusted_target_keys(
        self, target: TargetConfig
    ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        """(host keys, host CAs) the upstream connection accepts for `target`; config wins."""
        if target.host_key or target.host_ca:
            return (
                [target.host_key] if target.host_key else [],
                [target.host_ca] if target.host_ca else [],
            )
        pinned = self.pinned_host_key(target.name)
        return ([pinned] if pinned else [], [])


def public_line(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 AAAA... comment` without the trailing newline."""
    return key.export_public_key().decode("ascii").strip()


def known_hosts_lines(store: KeyStore, targets: list[TargetConfig], bastion_hosts: list[str]) -> list[str]:
    """What a user puts in known_hosts: the bastion's own key and the CA line for targets."""
    host_key = store.bastion_host_key.convert_to_public()
    lines = [f"{','.join(bastion_hosts)} {public_line(host_key)}"] if bastion_hosts else []
    names = sorted({name for target in targets for name in target.names})
    if names:
        lines.append(f"@cert-authority {','.join(names)} {public_line(store.host_ca.convert_to_public())}")
    return lines
