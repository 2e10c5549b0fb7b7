"""Expand a word's source as bash would, as far as a session's table tells the values. Pure.

Brace expansion is done exactly (it is syntax), quotes are removed, variables this session
assigned are substituted (and split into words where bash would split them), and everything
else -- command output, globs, variables from the login's environment -- becomes a `Hole`.
Command substitutions met on the way are collected: their commands run too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bastion.core.shellsplit import Incomplete, Lexer, backquote_end, double_quote_end, find_close
from bastion.core.shellwords import Hole, HoleKind, Part, Word

MAX_BRACE_WORDS = 256
MAX_ALTERNATIVES = 32
_ANSI_C = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
           "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_SPECIAL = re.compile(r"[0-9@*#?$!_-]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A variable's value: the words it may hold (several after `for` or a conditional assignment),
# or None: anything.
Value = tuple[Word, ...] | None


@dataclass
class Found:
    """What expanding words met besides their values."""

    nested: list[str] = field(default_factory=list)  # command substitutions' text: commands too
    process: list[str] = field(default_factory=list)  # process substitutions' text
    arithmetic: list[str] = field(default_factory=list)  # arithmetic expressions evaluated
    unsure: list[str] = field(default_factory=list)


class Variables:
    """Lookup of a session's variables (see `bastion.core.shellscope.Scope`)."""

    def __init__(self, values: dict[str, Value], *, ifs_changed: bool) -> None:
        self.values, self.ifs_changed = values, ifs_changed

    def lookup(self, name: str, source: str) -> tuple[Value, Hole]:
        """The value, or None with the hole that stands for it."""
        if name in self.values:
            value = self.values[name]
            return value, Hole(HoleKind.VALUE, source)
        if _SPECIAL.fullmatch(name) or name.isdigit():
            return None, Hole(HoleKind.VALUE, source)
        return None, Hole(HoleKind.ENV, source)


def ansi_c(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ANSI_C:
                out.append(_ANSI_C[nxt])
                i += 2
                continue
            hexa = re.match(r"x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{1,4})|U([0-9a-fA-F]{1,8})|([0-7]{1,3})",
                            body[i + 1:])
            if hexa:
                digits = next(g for g in hexa.groups() if g)
                base = 8 if hexa.group(4) else 16
                code = int(digits, base)
                out.append(chr(code) if code < 0x110000 else "\ufffd")
                i += 1 + hexa.end()
                continue
            if nxt == "c" and i + 2 < len(body):
                out.append(chr(ord(body[i + 2]) & 0x1F))
                i += 3
                continue
        out.append(char)
        i += 1
    return "".join(out)


# -- brace expansion ----------------------------------------------------------------------------

def brace_expand(source: str) -> list[str]:
    """`{a,b}c` -> ac bc, `x{1..3}` -> x1 x2 x3: on the unquoted text, before anything else."""
    words = [source]
    for _ in range(MAX_BRACE_WORDS):
        for index, word in enumerate(words):
            expanded = _expand_once(word)
            if expanded is not None:
                words[index:index + 1] = expanded
                if len(words) > MAX_BRACE_WORDS:
                    raise ValueError("brace expansion gives too many words")
                break
        else:
            return words
    raise ValueError("brace expansion nests too deep")


def _expand_once(word: str) -> list[str] | None:
    i = 0
    while i < len(word):
        char = word[i]
        if char == "{" and not word.startswith("{}", i):
            close, commas = _brace_close(word, i + 1)
            if close is not None:
                body = word[i + 1:close]
                head, tail = word[:i], word[close + 1:]
                if commas:
                    return [head + piece + tail for piece in _split_commas(body, commas, i + 1)]
                sequence = _sequence(body)
                if sequence is not None:
                    return [head + piece + tail for piece in sequence]
            i += 1
        elif char == "$" and word.startswith("${", i):
            i = find_close(word, i + 2, "{", "}") + 1
        elif char in "\\'\"`" or word.startswith(("$(", "$'", '$"'), i):
            i = Lexer.skip_quoted(word, i)
        else:
            i += 1
    return None


def _brace_close(word: str, i: int) -> tuple[int | None, list[int]]:
    depth, commas = 0, list[int]()
    while i < len(word):
        char = word[i]
        if char in "\\'\"`" or word.startswith(("$(", "${", "$'", '$"'), i):
            i = Lexer.skip_quoted(word, i)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i, commas
            depth -= 1
        elif char == "," and depth == 0:
            commas.append(i)
        i += 1
    return None, []


def _split_commas(body: str, commas: list[int], offset: int) -> list[str]:
    cuts = [c - offset for c in commas]
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(body[start:cut])
        start = cut + 1
    pieces.append(body[start:])
    return pieces


def _sequence(body: str) -> list[str] | None:
    match = re.fullmatch(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?", body)
    if not match:
        return None
    if match.group(1) is not None:
        first, last = int(match.group(1)), int(match.group(2))
        step = abs(int(match.group(3) or 1)) or 1
        count = abs(last - first) // step + 1
        if count > MAX_BRACE_WORDS:
            raise ValueError("brace expansion gives too many words")
        width = max(len(match.group(1)), len(match.group(2))) if re.match(r"-?0\d", match.group(1) + "x") \
            or re.match(r"-?0\d", match.group(2) + "x") else 0
        direction = 1 if last >= first else -1
        return [str(n).zfill(width) for n in range(first, last + direction, step * direction)]
    first_c, last_c = ord(match.group(4)), ord(match.group(5))
    direction = 1 if last_c >= first_c else -1
    return [chr(c) for c in range(first_c, last_c + direction, direction)]


# -- one word -----------------------------------------------------------------------------------

class _Builder:
    """The words one source word becomes, for every combination of variables' values."""

    def __init__(self, *, split: bool = True) -> None:
        self.states: list[tuple[list[Word], list[Part]]] = [([], [])]
        self.split = split  # field splitting and globbing (not in assignments, here-strings)

    def add(self, part: Part) -> None:
        for _, current in self.states:
            current.append(part)

    def add_split(self, values: tuple[Word, ...], quoted: bool, fallback: Hole) -> None:
        """A variable's possible values; unquoted ones are split into words."""
        if len(self.states) * len(values) > MAX_ALTERNATIVES:
            self.add(fallback)
            return
        new: list[tuple[list[Word], list[Part]]] = []
        for words, current in self.states:
            for value in values:
                w, c = list(words), list(current)
                if quoted or not self.split:
                    c.extend(value.parts)
                else:
                    _split_into(value, w, c)
                new.append((w, c))
        self.states = new

    def words(self) -> list[list[Word]]:
        out = []
        for words, current in self.states:
            done = list(words)
            if current:
                done.append(Word(_glob_parts(current)))
            out.append(done)
        return out


def _split_into(value: Word, words: list[Word], current: list[Part]) -> None:
    for part in value.parts:
        if isinstance(part, Hole):
            current.append(part)
            continue
        pieces = re.split(r"[ \t\n]+", part)
        for index, piece in enumerate(pieces):
            if index > 0 and current:
                words.append(Word(_glob_parts(current)))
                current.clear()
            if piece:
                current.append(_Unquoted(piece))


class _Unquoted(str):
    """Literal text where glob characters still expand."""

    __slots__ = ()


def _glob_parts(parts: list[Part]) -> tuple[Part, ...]:
    """Unquoted `*`, `?` and `[...]` become glob holes; the rest stays literal."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, _Unquoted) and re.search(r"[@*+?!]\(", part):
            out.append(Hole(HoleKind.GLOB, str(part), "*"))  # an extended glob: @(a|b), !(x)
        elif isinstance(part, _Unquoted) and re.search(r"[*?]|\[.*\]", part):
            for piece in re.split(r"(\*|\?|\[[^\]]*\])", part):
                if piece in ("*", "?") or (piece.startswith("[") and piece.endswith("]") and len(piece) > 2):
                    out.append(Hole(HoleKind.GLOB, piece, piece))
                elif piece:
                    out.append(str(piece))
        else:
            out.append(str(part) if isinstance(part, str) else part)
    return Word(tuple(out)).parts if out else ("",)


def expand_word(source: str, variables: Variables, found: Found, *, split: bool = True) -> list[list[Word]]:
    """Every way `source` can expand: alternatives, each a list of words."""
    try:
        sources = brace_expand(source) if split else [source]
    except ValueError as exc:
        found.unsure.append(str(exc))
        return [[Word((Hole(HoleKind.VALUE, source),))]]
    alternatives: list[list[Word]] = [[]]
    for piece in sources:
        builder = _Builder(split=split)
        try:
            _scan(piece, 0, len(piece), builder, variables, found, quoted=False, at_start=True)
        except Incomplete as exc:
            found.unsure.append(str(exc))
            builder.add(Hole(HoleKind.VALUE, piece))
        ways = builder.words()
        if len(alternatives) * len(ways) > MAX_ALTERNATIVES:
            ways = [[Word((Hole(HoleKind.VALUE, piece),))]]
        alternatives = [a + w for a in alternatives for w in ways]
    return alternatives


def _scan(text: str, i: int, end: int, out: _Builder, variables: Variables, found: Found,  # noqa: C901, PLR0912, PLR0915 - one branch per kind of quote or expansion, in the order the shell tries them
          *, quoted: bool, at_start: bool = False) -> None:
    literal: list[str] = []

    def flush() -> None:
        if literal:
            piece = "".join(literal)
            out.add(piece if quoted or not out.split else _Unquoted(piece))
            literal.clear()

    if at_start and not quoted and text.startswith("~", i):  # (bash also expands ~ in assignments)
        stop = i + 1
        while stop < end and (text[stop].isalnum() or text[stop] in "_.-+"):
            stop += 1
        if stop == end or text[stop] == "/":
            out.add(Hole(HoleKind.HOME, text[i:stop], "/*"))
            i = stop
    while i < end:
        char = text[i]
        if char == "\\":
            nxt = text[i + 1:i + 2]
            if quoted and nxt not in ('$', '`', '"', "\\", "\n"):
                literal.append("\\")
                i += 1
                continue
            flush()
            if nxt != "\n":
                out.add(nxt)  # escaped: a literal that never globs
            i += 2
        elif char == "'" and not quoted:
            close = text.index("'", i + 1)
            flush()
            out.add(text[i + 1:close])
            i = close + 1
        elif text.startswith("$'", i) and not quoted:
            close = Lexer.skip_quoted(text, i)
            flush()
            out.add(ansi_c(text[i + 2:close - 1]))
            i = close
        elif (char == '"' or text.startswith('$"', i)) and not quoted:
            start = i + (2 if char == "$" else 1)
            close = double_quote_end(text, start)
            flush()
            out.add("")  # "" is an empty word, not no word
            _scan(text, start, close, out, variables, found, quoted=True)
            i = close + 1
        elif text.startswith("$((", i) and text[find_close(text, i + 3, "(", ")", depth=2) - 1] == ")":
            close = find_close(text, i + 3, "(", ")", depth=2)
            flush()
            inner = text[i + 3:close - 1]
            found.arithmetic.append(inner)
            collect_substitutions(inner, found)
            out.add(Hole(HoleKind.NUMBER, text[i:close + 1], "*"))
            i = close + 1
        elif text.startswith("$(", i):
            close = find_close(text, i + 2, "(", ")")
            flush()
            found.nested.append(text[i + 2:close])
            out.add(Hole(HoleKind.VALUE, text[i:close + 1]))
            i = close + 1
        elif char == "`":
            close = backquote_end(text, i + 1)
            flush()
            found.nested.append(re.sub(r"\\([\\`$])", r"\1", text[i + 1:close]))
            out.add(Hole(HoleKind.VALUE, text[i:close + 1]))
            i = close + 1
        elif text.startswith(("<(", ">("), i) and not quoted:
            close = find_close(text, i + 2, "(", ")")
            flush()
            found.nested.append(text[i + 2:close])
            found.process.append(text[i + 2:close])
            out.add(Hole(HoleKind.VALUE, text[i:close + 1], "/dev/fd/*"))
            i = close + 1
        elif text.startswith("${", i):
            close = find_close(text, i + 2, "{", "}")
            flush()
            _parameter(text[i + 2:close], text[i:close + 1], out, variables, found, quoted=quoted)
            i = close + 1
        elif char == "$" and re.match(r"[=~^]+[A-Za-z_{]", text[i + 1:i + 3]) and not quoted:
            zsh = re.match(r"\$[=~^]+(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", text[i:])
            stop = i + (zsh.end() if zsh else 1)
            flush()
            found.unsure.append(f"a zsh expansion ({text[i:stop]}) splits or globs a value")
            out.add(Hole(HoleKind.VALUE, text[i:stop]))
            i = stop
        elif char == "$" and i + 1 < end and (_SPECIAL.match(text, i + 1) or _NAME.match(text, i + 1)):
            name_match = _NAME.match(text, i + 1) or _SPECIAL.match(text, i + 1)
            assert name_match is not None
            flush()
            _variable(name_match.group(), text[i:name_match.end()], out, variables, quoted=quoted)
            i = name_match.end()
        else:
            run = _PLAIN.match(text, i, end)
            stop = run.end() if run and run.end() > i else i + 1
            literal.append(text[i:stop])
            i = stop
    flush()


_PLAIN = re.compile(r"[^\\'\"$`<>~]+")


def _variable(name: str, source: str, out: _Builder, variables: Variables, *, quoted: bool) -> None:
    value, hole = variables.lookup(name, source)
    if value is None:
        out.add(hole)
    elif not quoted and out.split and variables.ifs_changed:
        out.add(Hole(HoleKind.VALUE, source))  # split on an IFS the bastion does not know
    else:
        out.add_split(value, quoted, hole)


def _parameter(inner: str, source: str, out: _Builder, variables: Variables, found: Found, *,
               quoted: bool) -> None:
    collect_substitutions(inner, found)  # ${x:-$(cmd)}: the command may run
    if inner.startswith("("):
        found.unsure.append(f"zsh parameter flags ({source}) can evaluate a value")
    subscript = re.match(r"[A-Za-z_][A-Za-z0-9_]*\[([^\]]*)\]", inner)
    if subscript and subscript.group(1) not in ("@", "*"):
        found.arithmetic.append(subscript.group(1))  # an index is arithmetic: its names are evaluated
    name = _NAME.match(inner) or _SPECIAL.match(inner)
    if inner.startswith("#") and len(inner) > 1:
        out.add(Hole(HoleKind.NUMBER, source))
        return
    if name is None or inner.startswith("!"):
        out.add(Hole(HoleKind.VALUE, source))
        return
    rest = inner[name.end():]
    if rest and not re.fullmatch(r":?[-=+?].*", rest, re.S):
        value, hole = variables.lookup(name.group(), source)
        # A transformation (${x%.*}, ${x/a/b}, ${x[0]}) of an unknown value stays unknown.
        out.add(Hole(hole.kind if value is None else HoleKind.VALUE, source))
        return
    value, hole = variables.lookup(name.group(), source)
    if value is None or rest[:2] in (":+", ":?") or rest[:1] in ("+", "?") or \
            (rest and any(not w.literal or not w.value for w in value)):
        out.add(Hole(hole.kind if value is None else HoleKind.VALUE, source))
    elif not quoted and out.split and variables.ifs_changed:
        out.add(Hole(HoleKind.VALUE, source))
    else:
        out.add_split(value, quoted, hole)


def collect_substitutions(text: str, found: Found) -> None:
    """Command substitutions anywhere in `text` (an arithmetic expression, a ${...})."""
    i = 0
    while i < len(text):
        if text.startswith("$((", i):
            i += 3
        elif text.startswith("$(", i):
            close = find_close(text, i + 2, "(", ")")
            found.nested.append(text[i + 2:close])
            i = close + 1
        elif text[i] == "`":
            close = backquote_end(text, i + 1)
            found.nested.append(text[i + 1:close])
            i = close + 1
        elif text[i] == "'":
            close = text.find("'", i + 1)
            i = len(text) if close < 0 else close + 1
        else:
            i += 1


def identifiers(expression: str) -> list[str]:
    """The variable names an arithmetic expression reads (bash evaluates their values too)."""
    found = Found()
    collect_substitutions(expression, found)
    for inner in found.nested:
        expression = expression.replace(inner, " ")
    return _IDENTIFIER.findall(re.sub(r"0[xX][0-9a-fA-F]+|\d+#\w+|'[^']*'", " ", expression))
