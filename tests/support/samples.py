"""Fake secrets that look like real ones, for the masking tests, unit and end to end alike.

Drawn from one seeded generator: the same values in every run. test_masker draws its other
cases from the same generator after these.
"""

from __future__ import annotations

import random
import string

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bastion.core.masker import luhn_ok

rng = random.Random(7)


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + rand(string.digits, length - len(prefix) - 1)
    for check in string.digits:
        if luhn_ok((body + check).encode()):
            return body + check
    raise AssertionError


def pem(kind: str) -> str:
    if kind == "openssh":
        key = ed25519.Ed25519PrivateKey.generate()
        fmt = serialization.PrivateFormat.OpenSSH
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # type: ignore[assignment]
        fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


AWS_ID = "AKIA" + rand(UPPER_DIGITS, 16)
AWS_SECRET = rand(ALNUM + "/+", 40)
GH = "ghp_" + rand(ALNUM, 36)
CARD = luhn_complete("4", 16)
