"""Counted nouns in what the bastion prints: "1 target", "3 targets"."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """`count` and `noun`, plural unless the count is one (nouns that take an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
