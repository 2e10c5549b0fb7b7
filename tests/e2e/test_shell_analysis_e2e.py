"""bash itself as the judge of how the shell reader expands words."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.shellexpand import Found, Variables, expand_word

pytestmark = pytest.mark.e2e


WORD_PIECES = ["a", "b", "'q s'", '"d q"', "\\x", "{a,b}", "$'\\x41'", "''", "\\\\", "-", "=", "x,y", "{1..2}",
               '"\\$x"', "'$x'", "\\{a,b\\}"]


@given(st.lists(st.sampled_from(WORD_PIECES), min_size=1, max_size=4))
@settings(max_examples=150, deadline=None)
def test_literal_words_expand_as_bash_expands_them(pieces: list[str]) -> None:
    """bash is the judge: a word with no unknown part must give exactly bash's words."""
    source = "".join(pieces)
    ways = expand_word(source, Variables({}, ifs_changed=False), Found())
    assert len(ways) == 1
    ours = [w.value for w in ways[0]]
    result = subprocess.run(["bash", "--norc", "-c", f"printf '%s\\0' {source}"], capture_output=True,
                            check=True, timeout=10)
    assert ours == result.stdout.decode().split("\0")[:-1], source
