"""Signed cookie values: a JSON payload with an expiry, HMAC-SHA256 signed for one purpose.

A value made for one purpose (the sign-in in progress) never reads as another (the signed-in
session); a tampered, foreign or expired value reads as None. The key is generated once into
the keys folder (0600) and kept across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COOKIE_KEY = "web_cookie_key"  # the key's file name in keys_dir


class SignedCookies:
    """JSON payloads with an expiry, HMAC-SHA256 signed: tampered or stale values read as None."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("cookie key must be at least 32 bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> SignedCookies:
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as file:
                file.write(key)
            return cls(key)

    def _sign(self, purpose: str, body: bytes) -> str:
        mac = hmac.new(self._key, purpose.encode() + b"\0" + body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def dumps(self, purpose: str, payload: Mapping[str, Any], ttl: int) -> str:
        body = base64.urlsafe_b64encode(
            json.dumps({**payload, "exp": int(time.time()) + ttl}, separators=(",", ":")).encode()
        ).rstrip(b"=")
        return f"{body.decode()}.{self._sign(purpose, body)}"

    def loads(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload if `value` was made by `dumps` for the same purpose and has not expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not same_secret(signature, self._sign(purpose, body.encode())):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        return payload if payload["exp"] > time.time() else None


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison of a value from a request with a secret (a token, a signature);
    anything but a string, or a string with characters a secret never has, is just different."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(errors="surrogatepass"), expected.encode())
