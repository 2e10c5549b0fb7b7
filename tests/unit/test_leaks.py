"""Leak trials: each class of hostile output, split at every offset (with and without a pause
there), drawn by pyte as a terminal draws it. Leaks and over-masks are counted; both must be 0.
The trials and the judge are in tests/support/leaks.py; `python -m tests.support.leaks` prints
the counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.core.masker import SecretMasker
from tests.support import leaks
from tests.support.samples import pem

PKCS8 = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
EC = ec.generate_private_key(ec.SECP256R1()).private_bytes(  # -----BEGIN EC PRIVATE KEY-----
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()
Ways = Callable[[leaks.Trial], Iterator[tuple[str, list[bytes], list[bool]]]]
SECRETS = leaks.corpus()
CLASSES: dict[str, tuple[list[leaks.Trial], Ways]] = {
    "plain": (leaks.plain(SECRETS), leaks.splits),
    "undrawn": (leaks.undrawn(SECRETS), leaks.splits),
    "slow": (leaks.plain(SECRETS), leaks.slowly),
    "pem-footer-openssh": (leaks.pem_footer(pem("openssh")), leaks.splits),
    "pem-footer-pkcs8": (leaks.pem_footer(PKCS8), leaks.splits),
    "pem-footer-ec": (leaks.pem_footer(EC), leaks.splits),
}


def masker() -> SecretMasker:
    return SecretMasker()


@pytest.mark.parametrize("name", list(CLASSES))
def test_no_leak_and_no_over_mask(name: str) -> None:
    trials, ways = CLASSES[name]
    result = leaks.tally(trials, masker, ways)
    assert result.trials > 0
    assert (result.leaks, result.over_masks) == (0, 0), "\n".join(result.examples)


def test_the_judge_sees_an_unmasked_secret() -> None:
    # Without a masker every trial leaks: the judge can fail.
    class Nothing:
        held = b""

        def feed(self, data: bytes) -> leaks.MaskResult:
            return leaks.MaskResult(data)

        def flush(self, *, pause: bool = False) -> leaks.MaskResult:
            return leaks.MaskResult(b"")

    for trials, ways in CLASSES.values():
        result = leaks.tally(trials[:1], Nothing, ways)
        assert result.leaks == result.trials > 0


def test_the_judge_sees_an_over_mask() -> None:
    class Everything:
        def feed(self, data: bytes) -> leaks.MaskResult:
            return leaks.MaskResult(bytes(b if b in b"\r\n" else 42 for b in data))

        def flush(self, *, pause: bool = False) -> leaks.MaskResult:
            return leaks.MaskResult(b"")

    result = leaks.tally(leaks.plain(SECRETS)[:1], Everything)
    assert result.over_masks == result.trials > 0 and result.leaks == 0


def test_cards_followed_by_digits_never_show_more_than_six_and_four() -> None:
    result = leaks.tally(leaks.cards_then_digits(), masker)
    assert result.trials > 0 and result.leaks == 0, "\n".join(result.examples)


def test_cards_followed_by_digits_without_a_pause_are_not_over_masked() -> None:
    def at_once(trial: leaks.Trial) -> Iterator[tuple[str, list[bytes], list[bool]]]:
        return ((label, chunks, pauses) for label, chunks, pauses in leaks.splits(trial) if not any(pauses))

    result = leaks.tally(leaks.cards_then_digits(), masker, at_once)
    assert result.trials > 0 and result.over_masks == 0, "\n".join(result.examples)
