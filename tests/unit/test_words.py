"""Counted nouns in the bastion's lines."""

from bastion.core.words import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "target") == "1 target"
    assert [counted(n, "target") for n in (0, 2, 10)] == ["0 targets", "2 targets", "10 targets"]
