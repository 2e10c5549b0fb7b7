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
    "undrawn-elsewhere": (leaks.undrawn_elsewhere(SECRETS), leaks.splits),
    "slow": (leaks.plain(SECRETS), leaks.slowly),
    "pem-footer-openssh": (leaks.pem_footer(pem("openssh")), leaks.splits),
    "pem-footer-pkcs8": (leaks.pem_footer(PKCS8), leaks.splits),
    "pem-footer-ec": (leaks.pem_footer(EC), leaks.splits),
}


def masker() -> SecretMasker:
    return SecretMasker()


def on_screen() -> SecretMasker:
    """A pty session's masker: it follows the terminal's rows."""
    masker = SecretMasker()
    masker.on_screen(leaks.WIDTH, leaks.HEIGHT)
    return masker


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("make", [masker, on_screen], ids=["stream", "pty"])
def test_no_leak_and_no_over_mask(name: str, make: Callable[[], SecretMasker]) -> None:
    trials, ways = CLASSES[name]
    result = leaks.tally(trials, make, ways)
    assert result.trials > 0
    assert (result.leaks, result.over_masks) == (0, 0), "\n".join(result.examples)


def test_secrets_drawn_by_cursor_moves_are_masked_on_a_pty() -> None:
    """The second half at its column (ESC[nG), then CR and the first half: no write holds the
    secret. It may show only until the write completing it, which leaves masked, and the
    half drawn before is drawn over with stars."""
    result = leaks.tally(leaks.cursor_drawn(SECRETS), on_screen)
    assert result.trials > 0
    assert (result.leaks, result.over_masks) == (0, 0), "\n".join(result.examples)


def test_without_a_screen_a_secret_drawn_by_cursor_moves_leaks() -> None:
    # What the screen view is for: the stream masker alone cannot see it.
    result = leaks.tally(leaks.cursor_drawn(SECRETS[:1]), masker)
    assert result.leaks > 0


# A sample of secrets for each trick: a prefixed token, a spaced card number, a JWT.
TRICK_SECRETS = [s for s in SECRETS if s.kind in ("aws-access-key-id", "jwt")] + [
    s for s in SECRETS if s.kind == "card-number" and " " in s.text]


@pytest.mark.parametrize("trick", list(leaks.TRICKS))
def test_drawing_tricks(trick: str) -> None:
    trials = [t for t in leaks.tricks(TRICK_SECRETS) if t.name.startswith(trick + " ")]
    result = leaks.tally(trials, on_screen)
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


def test_cards_followed_by_digits_on_a_pty_are_not_over_masked_whatever_the_pause() -> None:
    """A pause inside the digits after a card masks them as a card that may go on; once the
    run ends and they are not one, they are drawn again."""
    result = leaks.tally(leaks.cards_then_digits(), on_screen)
    assert result.trials > 0 and (result.leaks, result.over_masks) == (0, 0), "\n".join(result.examples)
