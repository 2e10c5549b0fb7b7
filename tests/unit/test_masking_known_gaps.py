"""The masking gaps docs/masking.md lists, each as the hostile output that shows a key whole on
a real terminal (checked through the real data path with tmux) while the masker lets both its
halves through. They are expected to fail until closed; strict, so a fix that closes one
fails here until its entry moves to the leak trials of tests/support/leaks.py."""

from __future__ import annotations

import pytest

from bastion.core.masker import SecretMasker
from tests.support.mask_attacks import FIRST, LEAKS, SECOND

GAP = pytest.mark.xfail(strict=True, reason="a known masking gap (docs/masking.md, Known gaps)")
OPEN = set(LEAKS) - {
    "invalid UTF-8 byte inside", "overlong NUL inside", "unassigned code point inside",
    "combining mark U+20D0 inside", "combining mark U+0483 inside",
    "variation selector supplement inside", "format char U+0600 inside",
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=GAP if n in OPEN else ()) for n in LEAKS])
def test_a_half_of_the_key_is_masked(name: str) -> None:
    masker = SecretMasker()
    masker.on_screen(100, 30)
    out = b""
    for chunk in LEAKS[name]:
        out += masker.feed(chunk).data + masker.flush(pause=True).data
    out += masker.flush().data
    assert not (FIRST[4:] in out and SECOND in out), out
