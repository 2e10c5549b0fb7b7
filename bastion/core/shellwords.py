"""Shell words after expansion, as far as the bastion can know them. Pure.

A `Word` is a sequence of literal text and `Hole`s: the parts whose value the bastion does not
know (a variable it never saw assigned, a command's output, a glob's matches). Matching a rule's
glob against a word says `YES`, `NO` or `MAYBE`; a `MAYBE` that could change the verdict makes
the line unsure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class HoleKind(Enum):
    VALUE = "value"  # anything: a command's output, a value read or computed in this session
    ENV = "env"  # a variable this session never assigned: the login's environment
    GLOB = "glob"  # pathname expansion: the names of files that match
    NUMBER = "number"  # arithmetic: an integer
    HOME = "home"  # ~ or ~user: a home directory


@dataclass(frozen=True)
class Hole:
    kind: HoleKind
    source: str  # as written: $x, $(date), *, ~
    pattern: str = "*"  # the values it may take, as a glob


Part = str | Hole


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]

    @classmethod
    def of(cls, text: str) -> Word:
        return cls((text,))

    @property
    def literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def text(self) -> str:
        """The value where known, holes as written: what a `command` regex reads."""
        return "".join(p if isinstance(p, str) else p.source for p in self.parts)

    @property
    def value(self) -> str:
        """The literal value (only meaningful when `literal`)."""
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def holes(self) -> tuple[Hole, ...]:
        return tuple(p for p in self.parts if isinstance(p, Hole))

    def pattern(self) -> str:
        """A glob for every value this word may take."""
        return "".join(_escape(p) if isinstance(p, str) else p.pattern for p in self.parts)


def _escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


class Match(Enum):
    NO = 0
    MAYBE = 1
    YES = 2


def match_glob(word: Word, glob: str) -> Match:
    """Could `word` match the fnmatch-style `glob`? Exact for literal words."""
    if word.literal:
        return Match.YES if _glob_regex(glob).fullmatch(word.value) else Match.NO
    if glob and set(glob) == {"*"}:
        return Match.YES
    return Match.MAYBE if intersects(word.pattern(), glob) else Match.NO


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    import fnmatch

    return re.compile(fnmatch.translate(glob))


# -- do two globs share a string? ------------------------------------------------------------

_Token = tuple[str, str]  # ("star", "") | ("char", c) | ("any", "") | ("set", body)


@lru_cache(maxsize=4096)
def _tokens(glob: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            if not out or out[-1] != ("star", ""):
                out.append(("star", ""))
        elif char == "?":
            out.append(("any", ""))
        elif char == "[":
            end = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(("char", "["))
            else:
                out.append(("set", glob[i + 1:end]))
                i = end
        else:
            out.append(("char", char))
        i += 1
    return tuple(out)


def _accepts(token: _Token, char: str) -> bool:
    kind, body = token
    if kind == "char":
        return body == char
    if kind == "any":
        return True
    negate = body[:1] in ("!", "^")
    inner = body[1:] if negate else body
    hit = bool(re.fullmatch("[" + re.sub(r"([\\\]^])", r"\\\1", inner).replace("\\-", "-") + "]", char)) \
        if inner else False
    return hit != negate


def _samples(token: _Token) -> set[str]:
    kind, body = token
    if kind == "char":
        return {body}
    if kind == "set":
        return set(body) | {"a", "-", "/", "0", "\u00e9"}
    return set()


def _shared(a: _Token, b: _Token) -> bool:
    """Is there one character both single-character tokens accept?"""
    if a[0] == "any":
        return b[0] != "set" or any(_accepts(b, c) for c in _samples(b) | _PRINTABLE)
    if b[0] == "any":
        return _shared(b, a)
    return any(_accepts(a, c) and _accepts(b, c) for c in _samples(a) | _samples(b) | _PRINTABLE)


_PRINTABLE = {chr(c) for c in range(32, 127)}


def intersects(left: str, right: str) -> bool:
    """Is some string matched by both globs (`*`, `?`, `[...]`)? A search over pairs of positions."""
    a, b = _tokens(left), _tokens(right)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        ta = a[i] if i < len(a) else None
        tb = b[j] if j < len(b) else None
        if ta == ("star", ""):
            todo.append((i + 1, j))  # the star matches nothing more
            if tb is not None and tb != ("star", ""):
                todo.append((i, j + 1))  # the star eats what b's next token takes
        if tb == ("star", ""):
            todo.append((i, j + 1))
            if ta is not None and ta != ("star", ""):
                todo.append((i + 1, j))
        if ta is not None and tb is not None and "star" not in (ta[0], tb[0]) and _shared(ta, tb):
            todo.append((i + 1, j + 1))
    return False
