"""The ed25519 key that signs recordings' hash chains."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def fingerprint(public: Ed25519PublicKey) -> str:
    """OpenSSH-style `SHA256:...` fingerprint of the key."""
    blob = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(blob.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class RecordingVerifier:
    def __init__(self, public: Ed25519PublicKey) -> None:
        self.public = public
        self.fingerprint = fingerprint(public)

    @classmethod
    def load(cls, path: Path) -> RecordingVerifier:
        key = serialization.load_ssh_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an ed25519 public key")
        return cls(key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.public.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class RecordingKey(RecordingVerifier):
    def __init__(self, private: Ed25519PrivateKey) -> None:
        super().__init__(private.public_key())
        self._private = private

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def raw(self) -> bytes:
        """The 32 private bytes, for handing the key to the recorder process."""
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @classmethod
    def from_raw(cls, raw: bytes) -> RecordingKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def generate(cls) -> RecordingKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> RecordingKey:
        """`path` (PEM, 0600) and `path.pub` (OpenSSH); created on first use."""
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise PermissionError(f"{path} is accessible by other users; run: chmod 600 {path}")
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an ed25519 private key")
            return cls(private)
        key = cls.generate()
        pem = key._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        pub = key.public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        path.with_name(path.name + ".pub").write_bytes(pub + b" bastion recording key\n")
        return key
