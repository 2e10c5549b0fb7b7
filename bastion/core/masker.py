"""Streaming secret masker: secrets in terminal output become `*`, everything else passes.

Pure and synchronous: `feed(bytes) -> bytes` releases what is safe, `flush() -> bytes` the rest.

How a chunk is handled:

1. Escape sequences (CSI, OSC, other ESC) and zero-width characters are set aside: detectors
   see the *visible* text, so `AK\\x1b[0mIA...` is still a key; the sequences pass through
   untouched and each masked character becomes one `*` (the display width is kept).
2. A multi-pattern prefilter (Hyperscan when installed, else one `re` alternation) tells which
   detector families can possibly match; only those run their precise regular expressions.
   Ordinary output costs one prefilter pass and nothing else.
3. The end of the chunk is checked for a secret still being written (`AKIA` plus a few key
   characters, `password=` plus part of a value, a run of digits, a PEM header): a short
   tail is held back until the next chunk; once a strong prefix and four plausible characters
   are seen the rest is masked *provisionally*, character by character, as it arrives. So a
   secret printed one character at a time never appears whole, and ordinary echo never waits:
   the caller releases a held tail after `hold_seconds` without more output (`flush_held`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from bastion.core.screenview import ScreenView
from bastion.core.terminal import (
    C0_INSIDE,
    CUT_ESCAPE,
    ESC_SEQUENCES,
    ESCAPES,
    FLAG_NON_ASCII,
    FLAG_UNDRAWN,
    UNDRAWN,
    UNDRAWNS,
    screen_flags,
)

hyperscan: ModuleType | None
digit_run: Callable[[bytes, int], bool] | None
try:  # Hyperscan scans for every trigger at once, at GB/s; optional (x86-64 wheels).
    import hyperscan
except ImportError:  # pragma: no cover - exercised where the wheel is missing
    hyperscan = None

try:  # bastion/core/_digits.c, built at install when a C compiler is there
    from bastion.core._digits import digit_run
except ImportError:  # pragma: no cover - digit runs stay in the Hyperscan scan
    digit_run = None

# Where a word may start in bytes still holding escape sequences: the start, a non-word byte, or
# the end of a CSI sequence (whose final byte is a letter, as in SGR's `m`).
_RAW_BOUNDARY = rb"(?:^|[^0-9A-Za-z_]|\x1b\[[0-?]*[ -/]*[@-~])"
_RAW_END = rb"(?:$|[^0-9A-Za-z_])"  # where a word may end: an escape sequence starts with ESC
TRAILING_ESCAPE = re.compile(rb"\x1b[^\x1b]{0,63}\Z")
# An escape sequence the chunk's end may have cut: a CSI without its final byte (`ESC [` alone
# also reads as a complete two-byte escape), an OSC or DCS without its terminator.


def has_escape(data: bytes, flags: int | None = None) -> bool:
    """Any escape sequence or character a terminal does not draw? (One pass in C; the regex
    only runs on chunks that are not ASCII.) `flags`: `screen_flags(data)`, when known."""
    if b"\x1b" in data:  # memchr: coloured output answers at its first escape
        return True
    if flags is None:
        flags = screen_flags(data)
    if flags & FLAG_UNDRAWN:
        return True
    return bool(flags & FLAG_NON_ASCII) and UNDRAWNS.search(data) is not None


def _cut_character(buf: bytes) -> int:
    """How many bytes at the end of `buf` start a UTF-8 character the chunk cut (0: none)."""
    for back in range(1, min(4, len(buf)) + 1):
        byte = buf[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # a lead byte: the character needs 2, 3 or 4 bytes
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if back < need else 0
    return 0
TAIL_WINDOW = 160  # visible bytes examined for a secret still being written
MAX_HOLD = 4096  # bytes: a held tail never grows past this
CONTEXT = 96  # visible bytes already released that detection still looks back on
PROVISIONAL_AFTER = 4  # plausible characters after a strong prefix before masking provisionally


def luhn_ok(digits: bytes) -> bool:
    total, parity = 0, len(digits) % 2
    for index, char in enumerate(digits):
        value = char - 48
        if index % 2 == parity:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_ok(candidate: bytes, *, luhn: bool = True) -> bool:
    digits = candidate.replace(b" ", b"").replace(b"-", b"")
    if not 13 <= len(digits) <= 19 or digits[0] not in b"23456":
        return False
    separators = set(candidate) - set(b"0123456789")
    if len(separators) > 1:
        return False
    if separators:
        groups = [len(g) for g in re.split(rb"[ -]", candidate)]
        if groups not in CARD_LAYOUTS:
            return False
    return not luhn or luhn_ok(digits)


RUN_OF_DIGITS = re.compile(rb"[0-9 -]*")
MASKED_THEN_TOKEN = re.compile(r"\*{4,}([A-Za-z0-9_+/.=-]+)")
CARD_LAYOUTS = ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 6, 5], [4, 6, 4], [4, 4, 4, 4, 2])
CARD_RUN = re.compile(rb"[0-9](?:[ -]?[0-9])*")
# A run as CARD_RUN finds it, from its first digit, when it holds the 13 digits a card number
# needs at least: shorter runs (most numbers in output) are passed over at the regex's speed.
CARD_CANDIDATE = re.compile(rb"[0-9](?:[ -]?[0-9]){12,}")
# Where to look for one: 13 or more digits, spaces and dashes in a row, each such stretch
# tried once from its start.
CARD_STRETCH = re.compile(rb"(?<![0-9 -])[0-9 -]{13,}")
_WORD_OR_DASH = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-")


def _groups(run: bytes) -> list[tuple[int, int]]:
    """(start, end) of each group of digits in a run, whatever separates them."""
    return [m.span() for m in re.finditer(rb"[0-9]+", run)]


def card_spans(text: bytes, start: int = 0, *, luhn: bool = True) -> list[tuple[int, int]]:
    """Card numbers in `text`, as (start, end): inside each run of digits (consecutive ones at
    most a space or a dash apart, not inside a word), the longest runs of whole groups that
    `card_ok` accepts. So `4472 2226 2086 7409 127.0.0.1` holds one, and so does a card after
    other numbers."""
    found = []
    matches = (match for stretch in CARD_STRETCH.finditer(text, start)
               for match in CARD_CANDIDATE.finditer(text, stretch.start(), stretch.end()))
    for match in matches:
        run_start, run_end = match.span()
        if run_start > 0 and text[run_start - 1] in _WORD_OR_DASH:
            continue
        if run_end < len(text) and text[run_end] in _WORD_OR_DASH and text[run_end] != 0x2D:
            continue  # digits going on into a word (a hash); a dash after them may end a date
        run = match.group()
        groups = _groups(run)
        first = 0
        while first < len(groups):
            best = None
            digits = 0
            for last in range(first, len(groups)):
                digits += groups[last][1] - groups[last][0]
                if digits > 19:
                    break
                if digits >= 13 and card_ok(run[groups[first][0]:groups[last][1]], luhn=luhn):
                    best = last
                    if digits == 16:
                        break  # the usual length first: `4472 2226 2086 7409 42` keeps its 42
            if best is None:
                first += 1
                continue
            found.append((run_start + groups[first][0], run_start + groups[best][1]))
            first = best + 1
    return found


def _card_in_progress(text: bytes, floor: int) -> int:
    """Where the hidden part (from the seventh digit) of a card number that the end of `text`
    may still be writing starts; -1 when no such number ends the text."""
    trailing = floor + len(text[floor:].rstrip(b"0123456789 -"))
    match = CARD_RUN.search(text, trailing)
    if match is None or match.end() < len(text.rstrip(b" -")):
        return -1
    run_start = match.start()
    groups = _groups(text[run_start:match.end()])
    for first in range(len(groups)):
        begin = run_start + groups[first][0]
        if begin > 0 and text[begin - 1] in _WORD_OR_DASH and not (
                first > 0 and text[begin - 1] in b" -"):
            continue
        if text[begin] not in b"23456":
            continue
        sizes = [e - s for s, e in groups[first:]]
        digits = sum(sizes)
        if not 7 <= digits <= 19:
            continue
        if len(sizes) > 1 and not any(
                layout[:len(sizes) - 1] == sizes[:-1] and sizes[-1] <= layout[len(sizes) - 1]
                for layout in CARD_LAYOUTS if len(layout) >= len(sizes)):
            continue
        seen = 0
        for s, e in groups[first:]:
            if seen + (e - s) > 6:
                return run_start + s + 6 - seen
            seen += e - s
    return -1


_PLACEHOLDERS = {b"null", b"none", b"true", b"false", b"undefined", b"changeme", b"xxx", b"redacted"}


def value_ok(value: bytes) -> bool:
    """An assignment's value worth masking: not empty, not a placeholder, not already masked."""
    return len(value) >= 3 and value.lower() not in _PLACEHOLDERS and value.strip(b"*") != b""


@dataclass(frozen=True)
class Detector:
    """One kind of secret.

    `pattern` finds complete secrets in visible text; group `group` is what gets masked.
    `trigger` is a cheap pattern that must occur wherever `pattern` can match. `opening`
    (anchored at the end of the text) finds a secret still being written: its group 1 is the
    part already known to be secret, `token` the characters that may continue it.
    """

    name: str
    pattern: re.Pattern[bytes]
    trigger: bytes
    group: int = 0
    validate: Callable[[bytes], bool] | None = None
    opening: re.Pattern[bytes] | None = None
    token: re.Pattern[bytes] | None = None
    provisional: bool = True  # mask a long enough opening before it is complete
    opening_words: tuple[bytes, ...] = ()  # lowercase; when set, every opening holds one of them
    # When set, every trigger match holds that many digits, consecutive ones at most a space or a
    # dash apart: the C check `digit_run` (bastion/core/_digits.c) then runs before the trigger.
    digits: int = 0


def _d(name: str, pattern: bytes, trigger: bytes, group: int = 0, *, flags: int = 0,
       validate: Callable[[bytes], bool] | None = None, opening: bytes | None = None,
       token: bytes | None = None, provisional: bool = True,
       opening_words: tuple[bytes, ...] = (), digits: int = 0) -> Detector:
    return Detector(
        name=name, pattern=re.compile(pattern, flags), trigger=trigger, group=group,
        validate=validate, opening=re.compile(opening + rb"\Z", flags) if opening else None,
        token=re.compile(token) if token else None, provisional=provisional,
        opening_words=opening_words, digits=digits,
    )


_ASSIGN_KEYS = (
    rb"(?:[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    rb"|private[_-]?key|client[_-]?secret|auth[_-]?key))"
)
# Still being written, masked provisionally: quoted values without spaces only (a quote opening
# a sentence, as in read -p 'Password: ' var, is not a secret).
_ASSIGN_VALUE_OPEN = rb"[\"']?\s*(?:=|:)[ \t]*(?:\"([^\"\s]*)|'([^'\s]*)|([^\s\"',;]*))"

BUILTIN_DETECTORS: tuple[Detector, ...] = (
    _d("aws-access-key-id", rb"\b(?:AKIA|ASIA|ABIA|ACCA)([A-Z0-9]{16})\b", rb"A[KSBC][IC]A", 1,
       opening=rb"(?:AKIA|ASIA|ABIA|ACCA)([A-Z0-9]{0,16})", token=rb"[A-Z0-9]+"),
    _d("aws-secret-access-key",
       rb"(?i)(?:aws_?secret_?access_?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
       rb"(?i)secret_?access_?key", 1),
    _d("github-token", rb"(?:gh[pousr]_([A-Za-z0-9]{36,255})|github_pat_([A-Za-z0-9_]{22,255}))\b",
       rb"gh[pousr]_|github_pat_", 0,
       opening=rb"(?:gh[pousr]_|github_pat_)([A-Za-z0-9_]*)", token=rb"[A-Za-z0-9_]+"),
    _d("gitlab-token", rb"glpat-([A-Za-z0-9_-]{20,})", rb"glpat-", 1,
       opening=rb"glpat-([A-Za-z0-9_-]*)", token=rb"[A-Za-z0-9_-]+"),
    _d("slack-token", rb"xox[baprs]-([A-Za-z0-9-]{10,})", rb"xox[baprs]-", 1,
       opening=rb"xox[baprs]-([A-Za-z0-9-]*)", token=rb"[A-Za-z0-9-]+"),
    _d("slack-webhook", rb"https://hooks\.slack\.com/services/(T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})",
       rb"hooks\.slack\.com/services/", 1),
    _d("stripe-key", rb"(?:sk|rk)_(?:live|test)_([A-Za-z0-9]{16,})", rb"[sr]k_(?:live|test)_", 1,
       opening=rb"(?:sk|rk)_(?:live|test)_([A-Za-z0-9]*)", token=rb"[A-Za-z0-9]+"),
    _d("google-api-key", rb"\bAIza([0-9A-Za-z_-]{35})", rb"AIza", 1,
       opening=rb"AIza([0-9A-Za-z_-]*)", token=rb"[0-9A-Za-z_-]+"),
    _d("jwt", rb"\beyJ[A-Za-z0-9_-]{8,}\.eyJ([A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})", rb"eyJ", 1,
       opening=rb"\beyJ[A-Za-z0-9_-]{8,}\.eyJ([A-Za-z0-9_.-]*)", token=rb"[A-Za-z0-9_.-]+"),
    _d("bearer-token", rb"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{12,}=*)", rb"(?i)bearer", 1,
       opening=rb"(?i)\bbearer\s+([A-Za-z0-9._~+/-]*)", token=rb"[A-Za-z0-9._~+/=-]+"),
    _d("url-password", rb"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@", rb"://[^\s/@:]+:", 1,
       opening=rb"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:([^\s@/]*)", token=rb"[^\s@/]+"),
    _d("password-assignment",
       rb"(?i)\b" + _ASSIGN_KEYS + rb"[\"']?\s*(?:=|:)[ \t]*(?:\"([^\"\r\n]+)\"|'([^'\r\n]+)'|([^\s\"',;]+))",
       rb"(?i)passw|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key", 0,
       validate=value_ok,
       opening=rb"(?i)\b" + _ASSIGN_KEYS + _ASSIGN_VALUE_OPEN,
       # Every key above holds one of these; checking for them first spares the regex (the
       # costliest opening by far) on almost every chunk.
       opening_words=(b"pass", b"pwd", b"secret", b"token", b"key"),
       token=rb"[^\s\"',;]+"),
    _d("card-number", rb"(?<![\w-])([0-9](?:[ -]?[0-9]){12,18})(?![\w-])",
       # A necessary condition for every card layout card_ok accepts (behind `digit_run`).
       rb"\b[0-9]{13,19}\b|\b[0-9]{4}[ -][0-9]{4,6}[ -][0-9]{4,5}", 1,
       validate=card_ok, opening=rb"(?<![\w-])([0-9](?:[ -]?[0-9])*[ -]?)", provisional=False,
       digits=12),
)
# A quoted value with spaces still being written is held (not masked provisionally) until its
# closing quote shows it is one, or the line ends, or output pauses (then it goes out as it is).
QUOTED_VALUE_OPEN = re.compile(
    rb"(?i)\b" + _ASSIGN_KEYS + rb"[\"']?[ \t]*(?:=|:)[ \t]*(?:\"([^\"\r\n]*)|'([^'\r\n]*))\Z")
DETECTOR_NAMES = (*(d.name for d in BUILTIN_DETECTORS), "private-key")
PEM_TRIGGER = rb"-----BEGIN"
PEM_BEGIN = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----")
PEM_END = re.compile(rb"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
PEM_PARTIAL_HEADER = re.compile(rb"-----(?:B(?:E(?:G(?:I(?:N[^\n]*)?)?)?)?)?\Z")


def custom_detector(name: str, regex: str, group: int = 0) -> Detector:
    """A detector from the config: masks `group` of every match of `regex`."""
    pattern = re.compile(regex.encode())
    if group > pattern.groups:
        raise ValueError(f"custom detector {name!r}: regex has no group {group}")
    return Detector(name=name, pattern=pattern, trigger=regex.encode(), group=group)


@functools.lru_cache(maxsize=16)
def chosen_detectors(disable: tuple[str, ...] = (),
                     custom: tuple[tuple[str, str, int], ...] = ()) -> tuple[Detector, ...]:
    """The built-ins not disabled, then the custom ones ((name, regex, group) each). The same
    settings give the same detector objects, so maskers share compiled prefilters."""
    chosen = [d for d in BUILTIN_DETECTORS if d.name not in disable]
    return (*chosen, *(custom_detector(name, regex, group) for name, regex, group in custom))


_BUILTIN_IDS = frozenset(map(id, BUILTIN_DETECTORS))  # the objects themselves, not equal ones
_PREFILTERS: dict[tuple[Detector, ...], _Prefilter] = {}


def _prefilter_for(detectors: tuple[Detector, ...]) -> _Prefilter:
    """Compiling the Hyperscan databases costs milliseconds: once per detector set."""
    prefilter = _PREFILTERS.get(detectors)
    if prefilter is None:
        if len(_PREFILTERS) >= 32:
            _PREFILTERS.pop(next(iter(_PREFILTERS)))  # bounded: the oldest set goes
        prefilter = _PREFILTERS[detectors] = _Prefilter(list(detectors))
    return prefilter


class _Prefilter:
    """Which detectors can possibly match this text."""

    def __init__(self, detectors: list[Detector]) -> None:
        self._detectors = detectors
        pem = len(detectors)  # the id of the PEM header in the Hyperscan databases
        # A digit pattern slows Hyperscan down on every chunk (output is full of digits), so
        # detectors that declare a digit run are scanned for only where `digit_run` finds one.
        checked = {i for i, d in enumerate(detectors) if d.digits and digit_run is not None}
        self._db = self._raw_db = None
        self._checked: list[tuple[int, Any, Any]] = []  # (index, visible database, raw database)
        if hyperscan is not None:
            with contextlib.suppress(Exception):  # no databases: the `re` alternation below
                visible = {i: _hyperscan_pattern(d.trigger) for i, d in enumerate(detectors)}
                # For chunks that still hold escape sequences: the same triggers without word
                # boundaries (an SGR sequence next to a token is a word character in the raw
                # bytes), plus "an escape inside a token".
                raw = {i: _raw_trigger(p) for i, p in visible.items()}
                inside = dict(enumerate(_INSIDE_TOKEN, pem + 1))
                db = _database({i: p for i, p in visible.items() if i not in checked} | {pem: PEM_TRIGGER})
                raw_db = _database({i: p for i, p in raw.items() if i not in checked}
                                   | {pem: PEM_TRIGGER} | inside)
                self._checked = [(i, _database({i: visible[i]}), _database({i: raw[i]}))
                                 for i in sorted(checked)]
                self._db, self._raw_db = db, raw_db
        alternation = b"|".join(
            b"(?P<t%d>%s)" % (i, _hyperscan_pattern(d.trigger)) for i, d in enumerate(detectors)
        )
        self._fallback = re.compile(alternation + b"|(?P<pem>" + PEM_TRIGGER + b")")

    def raw_clear(self, data: bytes) -> bool | None:
        """On bytes still holding escape sequences: True when no trigger occurs (escapes next to
        a token tolerated) and no escape sits inside a token; None without Hyperscan."""
        if self._raw_db is None:
            return None
        if _matches(self._raw_db, data):
            return False
        return not any(digit_run is not None and digit_run(data, self._detectors[i].digits)
                       and _matches(raw, data)
                       for i, _, raw in self._checked)

    def scan(self, text: bytes) -> tuple[list[Detector], bool]:
        """(detectors whose trigger occurs, whether a PEM header may start here)."""
        if self._db is not None:
            hits: set[int] = set()
            self._db.scan(text, match_event_handler=lambda index, *_: hits.add(index))  # None: go on
            for index, visible, _ in self._checked:
                if (digit_run is not None and digit_run(text, self._detectors[index].digits)
                        and _matches(visible, text)):
                    hits.add(index)
            if not hits:
                return [], False
            pem = len(self._detectors) in hits
            return [d for i, d in enumerate(self._detectors) if i in hits], pem
        names = {m.lastgroup for m in self._fallback.finditer(text)}
        return [d for i, d in enumerate(self._detectors) if f"t{i}" in names], "pem" in names


def _database(patterns: dict[int, bytes]) -> Any:
    """A Hyperscan block-mode database reporting each pattern once, by its key."""
    assert hyperscan is not None  # only called where it imported
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=list(patterns.values()), ids=list(patterns), elements=len(patterns),
               flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(patterns))
    return db


def _matches(db: Any, data: bytes) -> bool:
    """Whether any of `db`'s patterns occurs in `data` (the scan stops at the first)."""
    assert hyperscan is not None  # `db` is one of its databases
    hits: list[int] = []

    def found(index: int, _start: int, _end: int, _flags: int, _ctx: object) -> int:
        hits.append(index)
        return 1

    with contextlib.suppress(hyperscan.ScanTerminated):
        db.scan(data, match_event_handler=found)
    return bool(hits)


def _hyperscan_pattern(trigger: bytes) -> bytes:
    return trigger.replace(b"(?i)", b"(?i:", 1) + b")" if trigger.startswith(b"(?i)") else trigger


# "An escape inside a token", cheap enough to scan for on every coloured chunk: a chain of CSI
# sequences between two visible characters, any other escape right after a visible character
# (conservative), or a zero-width character after one. Hyperscan reports every way a pattern
# matches, so each form is spelled out whole.
_CSI = rb"\x1b\[[" + C0_INSIDE + rb"0-?]*[" + C0_INSIDE + rb" -/]*[@-~]"
_INSIDE_TOKEN = (
    rb"[^\s\x1b]" + _CSI + rb"(?:" + _CSI + rb")*[^\s\x1b]",
    rb"[^\s\x1b]\x1b[^\[]",
    rb"[^\s](?:" + UNDRAWN + rb")",
    rb"\x1b[\[ -/]?[0-?]*[ -/]*[" + C0_INSIDE + rb"]",  # a control character inside a sequence
)


def _raw_trigger(trigger: bytes) -> bytes:
    """A trigger for bytes that still hold escape sequences, from one for visible text.

    A word boundary opening a top-level alternative becomes `_RAW_BOUNDARY`; one closing it, a
    non-word byte or the end (an escape sequence after a token starts with a non-word byte, and
    a run of digits going on into letters, as in a git hash, stays no match); others are dropped.
    """
    if b"\\b" not in trigger:
        return trigger
    alternatives = []
    for alternative in _top_level_alternatives(trigger):
        opens = alternative.startswith(rb"\b")
        closes = alternative.endswith(rb"\b") and not alternative.endswith(rb"\\b")
        body = alternative.replace(rb"\b", b"")
        alternatives.append((_RAW_BOUNDARY if opens else b"") + body + (_RAW_END if closes else b""))
    return b"|".join(alternatives)


def _top_level_alternatives(pattern: bytes) -> list[bytes]:
    """`pattern` split at the `|` outside groups and character classes."""
    parts, depth, start, index, in_class = [], 0, 0, 0, False
    while index < len(pattern):
        char = pattern[index:index + 1]
        if char == b"\\":
            index += 2
            continue
        if in_class:
            in_class = char != b"]"
        elif char == b"[":
            in_class = True
        elif char == b"(":
            depth += 1
        elif char == b")":
            depth -= 1
        elif char == b"|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    return [*parts, pattern[start:]]


@dataclass
class _Run:
    """A secret being masked provisionally: its characters keep coming."""

    detector: str
    token: re.Pattern[bytes] | None  # None: a PEM body, masked line by line until its footer


@dataclass
class MaskResult:
    data: bytes
    masked: list[str] = field(default_factory=list)  # detector names, one per secret
    # Secrets the screen view found assembled on screen but could not draw over (see
    # bastion/core/screenview.py): "DETECTOR (where)".
    drawn: list[str] = field(default_factory=list)


def _stars(segment: bytes) -> bytes:
    """One `*` per character, keeping line breaks. Bytes that are not UTF-8 count as a
    character each where a terminal shows a replacement character for them."""
    if segment.isascii():
        return re.sub(rb"[^\r\n]", b"*", segment)
    text = segment.decode("utf-8", "replace")
    return re.sub(r"[^\r\n]", "*", text).encode()


class SecretMasker:
    def __init__(self, detectors: Iterable[Detector] = BUILTIN_DETECTORS, *, pem: bool = True) -> None:
        self.detectors = list(detectors)
        self._openings = [d for d in self.detectors if d.opening is not None]
        self._fast_path = all(id(d) in _BUILTIN_IDS for d in self.detectors)
        self._prefilter = _prefilter_for(tuple(self.detectors))
        self._pem = pem
        # The words a password-like key holds, when that detector is on: a quoted value may be held.
        self._quoted = next((d.opening_words for d in self.detectors if d.name == "password-assignment"),
                            None)
        self._held = b""
        self._context = b""
        self.flags: int | None = None  # screen_flags of the last text processed (None: not known)
        self._run: _Run | None = None
        self._card_digits = any(d.name == "card-number" for d in self.detectors)
        self._view: ScreenView | None = None
        # Masked at a pause as a possible card number: (start, end) counted back from the end
        # of the context.
        self._starred: tuple[int, int] | None = None

    @property
    def holding(self) -> bool:
        return bool(self._held) or (self._view is not None and self._view.holding)

    def on_screen(self, width: int, height: int) -> None:
        """The output goes to a terminal of this size: follow its rows (a pty session), so a
        secret assembled on screen from writes that each hold part of it is masked too."""
        if self._view is None:
            self._view = ScreenView(width, height, *self.view_finders())
        else:
            self._view.resize(width, height)

    def view_finders(self) -> tuple[Callable[[str], list[tuple[int, int, str]]], Callable[[str], int] | None]:
        """What a screen view reads rows with: the secrets in a row, and where a card number
        still being written at a row's end starts (None: card numbers are not masked)."""
        return self.secrets_in, self._card_opening if self._card_digits else None

    def secrets_across(self, text: bytes, joint: int) -> list[tuple[int, int, str]]:
        """(start, end, detector) of the complete secrets in visible `text` that hold its bytes
        from `joint` on (the character after a tab taken out, which ends `text`)."""
        detectors, _ = self._prefilter.scan(text)
        across = []
        for detector in detectors:
            spans: list[tuple[int, int]] = []
            if detector.name == "card-number":  # within the run of digits the joint ends
                if not text[joint:joint + 1].isdigit():
                    continue
                head = max(0, len(text[:joint].rstrip(b"0123456789 -")) - 1)
                spans = [(head + begin, head + end) for begin, end in card_spans(text[head:])]
            else:
                self._detect(detector, text, joint, 0, spans, [])
            across += [(begin, end, detector.name) for begin, end in spans if end > joint]
        return across

    def may_join(self, text: bytes) -> bool:
        """Whether `text` read with a tab taken out (its two sides joined) may hold a secret that
        it does not hold whole, as far as detectors other than card numbers go: a secret ending
        right after such a tab starts before it, so its trigger occurs in `text` as it is
        (every built-in trigger ends before the secret does). A custom detector's trigger is
        its whole pattern: with one on, always."""
        if not self._fast_path:
            return True
        return any(d.name != "card-number" for d in self._prefilter.scan(text)[0])

    def resize(self, width: int, height: int) -> None:
        if self._view is not None:
            self._view.resize(width, height)

    def secrets_in(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, detector) of the secrets in a complete line of text. A `*` stands for a
        character already masked: a card number holding one is not checked with Luhn's sum."""
        spans = self._secrets_in(text.replace("*", "0"))
        # Characters right after a run of masked ones, with no break between: the rest of that
        # secret, drawn over what hid its start (unnamed: its secret is counted already).
        spans += [(m.start(1), m.end(1), "") for m in MASKED_THEN_TOKEN.finditer(text)]
        if "*" in text and self._card_digits:
            line = text.encode("utf-8", "surrogateescape")
            for begin, end in card_spans(line.replace(b"*", b"4"), luhn=False):  # any issuer digit
                if b"*" in line[begin:end] and any(c in b"0123456789" for c in line[begin:end]):
                    before = len(line[:begin].decode("utf-8", "surrogateescape"))  # characters, not bytes
                    spans.append((before, before + end - begin, "card-number"))
        return spans

    @staticmethod
    def _card_opening(text: str) -> int:
        """Where the hidden part of a card number still being written at the end of `text`
        starts, in characters (-1: none)."""
        line = text.encode("utf-8", "surrogateescape")
        begin = _card_in_progress(line, max(0, len(line) - TAIL_WINDOW))
        return begin if begin < 0 else len(line[:begin].decode("utf-8", "surrogateescape"))

    def _secrets_in(self, text: str) -> list[tuple[int, int, str]]:
        masker = SecretMasker(self.detectors, pem=False)
        data = text.encode("utf-8", "surrogateescape") + b"\n"
        result = masker.feed(data)
        tail = masker.flush()
        masked = (result.data + tail.data).decode("utf-8", "replace")
        names = iter(result.masked + tail.masked)
        spans: list[tuple[int, int, str]] = []
        start = -1
        for index, (was, now) in enumerate(zip(text + "\n", masked, strict=False)):
            if was != now and start < 0:
                start = index
            elif was == now and start >= 0:
                spans.append((start, index, next(names, "secret")))
                start = -1
        return spans

    def feed(self, data: bytes) -> MaskResult:
        return self._viewed(self._process(self._held + data, final=False))

    def _viewed(self, result: MaskResult, *, end: bool = False, pause: bool = False) -> MaskResult:
        if self._view is None or not (result.data or pause or (end and self._view.holding)):
            return result
        viewed = self._view.draw(result.data, end=end, pause=pause)
        return MaskResult(viewed.data, result.masked + viewed.masked,
                          [f"{name} ({where})" for name, where in viewed.unreachable])

    def flush(self, *, pause: bool = False) -> MaskResult:
        """Release everything held, masking what is complete (end of stream or, with `pause`,
        a quiet pause: then a character or an escape sequence the chunk's end cut stays held,
        as a terminal waits for its last bytes before acting on it)."""
        held, self._held = self._held, b""
        keep = 0
        if pause:  # kept back: a character or an escape sequence the chunk's end cut
            escape = CUT_ESCAPE.search(held, max(0, len(held) - 4096)) if b"\x1b" in held[-4096:] else None
            keep = len(held) - escape.start() if escape is not None else _cut_character(held)
        cut, held = held[len(held) - keep:], held[:len(held) - keep]
        result = self._process(held, final=True) if held else MaskResult(b"")
        self._held = cut
        return self._viewed(result, end=not pause, pause=pause)

    # -- the work ---------------------------------------------------------------------------

    def _process(self, buf: bytes, *, final: bool) -> MaskResult:
        self._held = b""
        # What the chunk holds besides text and line ends, when it has no escape (one pass in C):
        # what is released of it holds no more (a reader after the masker may use it).
        self.flags = None if b"\x1b" in buf else screen_flags(buf)
        escaped = has_escape(buf, self.flags)
        if escaped and self._fast_path and not final and self._run is None and len(buf) >= 2048:
            fast = self._coloured_without_secrets(buf)
            if fast is not None:
                return fast
        projection = _Projection(buf, final=final, escaped=escaped)
        visible = projection.visible
        # Detection runs over the last released visible bytes too, so a secret whose prefix
        # went out in the previous chunk is still found; only the new part can be masked.
        context = self._context
        offset = len(context)
        text = context + visible
        spans: list[tuple[int, int]] = []
        found: list[tuple[int, str]] = []  # where a complete secret starts, and its detector
        masked: list[str] = []
        start, run_hold = offset, len(text)
        if self._run is not None:
            start, run_hold = self._continue_run(text, offset, spans)
        detectors, pem = self._prefilter.scan(text) if start < len(text) else ([], False)
        for detector in detectors:
            self._detect(detector, text, start, offset, spans, found)
        if pem and self._pem:
            run_hold = min(run_hold, self._pem_blocks(text, max(start, offset), spans, masked))
        # The second view: the text without any character outside ASCII. A terminal may draw
        # none of them (an invalid byte, a code point it does not know, a format character),
        # so a secret they split is looked for whole there too; its ASCII characters are masked.
        wide = not text.isascii()
        if wide and start < len(text):
            self._detect_ascii(text, start, offset, spans, found, masked)
        ascii_view = _AsciiView(text, max(0, len(text) - ASCII_TAIL)) if wide else None
        hold = self._tails(text, ascii_view, max(start, offset), spans, masked, final=final)
        if not final and run_hold < len(text):
            hold = min(hold, run_hold)
        hold = max(offset, min([hold, *(b for b, e in spans if e > hold)]))
        vis_hold = hold - offset
        cut = projection.byte_offset(vis_hold)
        if not final and len(buf) - cut > MAX_HOLD:
            vis_hold, cut = len(visible), len(buf)  # too long to be a secret in progress
        if final and self._run is not None and self._run.token is not None:
            self._run = None
        local = [(max(b, offset) - offset, min(e, hold) - offset) for b, e in spans if e > offset]
        released = projection.masked(cut, [(b, e) for b, e in local if b < vis_hold])
        if self._starred is not None and not final:
            released = self._unstar(text, offset, vis_hold, spans) + released
        self._held = buf[cut:]
        self._context = (context + visible[max(0, vis_hold - CONTEXT):vis_hold])[-CONTEXT:]
        # A secret held back is found again with the next chunk: it is named when released.
        return MaskResult(released, [name for b, name in found if b < offset + vis_hold] + masked)

    def _detect_ascii(self, source: bytes, start: int, offset: int, spans: list[tuple[int, int]],
                      found: list[tuple[int, str]], masked: list[str]) -> None:
        """Complete secrets of the ASCII view, as spans of the text (its ASCII characters)."""
        detectors, pem = self._prefilter.scan(source.translate(None, _HIGH))
        if not detectors and not pem:
            return
        view = _AsciiView(source)
        text, start2, offset2 = view.text, view.to_view(start), view.to_view(offset)
        spans2: list[tuple[int, int]] = []
        found2: list[tuple[int, str]] = []
        for detector in detectors:
            self._detect(detector, text, start2, offset2, spans2, found2)
        if pem and self._pem and self._run is None:
            pem_masked: list[str] = []
            self._pem_blocks(text, max(start2, offset2), spans2, pem_masked)
            found2 += [(len(text), name) for name in pem_masked]
        for begin, name in found2:
            where = view.to_text(begin)
            if not any(b <= where < e for b, e in spans):
                if begin >= len(text):
                    masked.append(name)
                else:
                    found.append((where, name))
        for b2, e2 in spans2:
            spans.extend(view.spans(b2, e2))

    def _tails(self, text: bytes, ascii_view: _AsciiView | None, start: int, spans: list[tuple[int, int]],
               masked: list[str], *, final: bool) -> int:
        """The end of the text (and of its ASCII view): where releasing must stop."""
        if final:
            self._final_tail(text, start, spans, masked)
            if ascii_view is not None:
                self._ascii_tail(ascii_view, start, spans, masked, final=True)
            return len(text)
        hold = self._open_tail(text, start, spans, masked)
        if ascii_view is not None:
            hold = min(hold, self._ascii_tail(ascii_view, start, spans, masked, final=False))
        return hold

    def _ascii_tail(self, view: _AsciiView, start: int, spans: list[tuple[int, int]], masked: list[str], *,
                    final: bool) -> int:
        """A secret still being written at the end of the ASCII view: held, or masked
        provisionally, as in the text itself. Returns where releasing must stop (in the text)."""
        text = view.text
        if not text:
            return len(view.source)
        spans2: list[tuple[int, int]] = []
        start2 = view.to_view(start)
        if final:
            starred = self._starred
            self._final_tail(text, start2, spans2, masked)
            self._starred = starred  # digits masked at a pause are drawn back from the text only
            hold = len(view.source)
        else:
            hold2 = self._open_tail(text, start2, spans2, masked)
            hold = view.to_text(hold2) if hold2 < len(text) else len(view.source)
        for b2, e2 in spans2:
            spans.extend(view.spans(b2, e2))
        return hold

    def _detect(self, detector: Detector, text: bytes, start: int, offset: int,
                spans: list[tuple[int, int]], found: list[tuple[int, str]]) -> None:
        """Add the spans of `detector`'s complete secrets ending after `start`."""
        if detector.name == "card-number":
            matches = [(b, e) for b, e in card_spans(text) if e > start]
        else:
            matches = []
            for match in detector.pattern.finditer(text):
                group = detector.group or next((g for g in range(1, (match.re.groups or 0) + 1)
                                                if match.group(g) is not None), 0)
                begin, end = match.span(group)
                if end <= start:
                    continue  # released before, or masked already by the run
                if detector.validate is not None and not detector.validate(match.group(group)):
                    continue
                matches.append((begin, end))
        for begin, end in matches:
            # One secret, one marker: the first detector to find it names it (the built-ins
            # go from the most specific, e.g. a GitHub token, to a generic assignment).
            counted = any(b < end and begin < e for b, e in spans)
            spans.append((begin, end))
            if not counted and (begin >= start or start == offset):
                found.append((begin, detector.name))  # not the run's secret, counted already

    def _coloured_without_secrets(self, buf: bytes) -> MaskResult | None:
        """A coloured chunk with no trigger anywhere needs no projection: only its tail is looked
        at, for a secret still being written. None means: take the full path."""
        context = self._context
        if context[-1:].strip() and buf[:1] in (b"\x1b", b"\xe2", b"\xef"):
            return None  # an escape right at the boundary might split a token
        if not self._prefilter.raw_clear(context + buf):
            return None
        if not buf.isascii() and not self._prefilter.raw_clear((context + buf).translate(None, _HIGH)):
            return None  # a secret split by characters outside ASCII (the second view)
        line = buf.rfind(b"\n", 0, max(0, len(buf) - TAIL_WINDOW))
        if line < 0:
            return None
        tail = _Projection(buf[line + 1:])
        spans: list[tuple[int, int]] = []
        hold = self._open_tail(tail.visible, 0, spans, [])
        if not tail.visible.isascii():  # the tail's second view: a secret still being written there
            view = _AsciiView(tail.visible)
            hold = min(hold, self._ascii_tail(view, 0, spans, [], final=False))
        if spans or self._run is not None:
            self._run = None
            return None
        cut = line + 1 + tail.byte_offset(hold)  # a number cut by the chunk's end waits for the next
        if len(buf) - cut > MAX_HOLD:
            hold, cut = len(tail.visible), len(buf)  # too long to be a secret in progress, as below
        self._held = buf[cut:]
        self._context = tail.visible[:hold][-CONTEXT:]
        return MaskResult(buf[:cut], [])

    def _continue_run(self, text: bytes, offset: int, spans: list[tuple[int, int]]) -> tuple[int, int]:
        """Mask the run's continuation: (where detection resumes, where releasing must stop)."""
        run = self._run
        assert run is not None
        if run.token is None:  # inside a PEM body: everything up to the footer is secret
            # The footer may have started in what was released before a pause (held, never
            # masked, as a line starting with '-' is): it is looked for there too.
            line = text.rfind(b"\n", 0, offset) + 1
            end = PEM_END.search(text, line if text.startswith(b"-", line) else offset)
            if end is not None and end.start() < offset:
                self._run = None
                return max(offset, end.end()), len(text)
            if end is None:
                stop = _footer_hold(text, offset)
                spans.append((offset, stop))
                return len(text), stop
            spans.append((offset, end.start()))
            self._run = None
            return end.end(), len(text)
        match = run.token.match(text, offset)
        stop = match.end() if match else offset
        if stop > offset:
            spans.append((offset, stop))
        if stop < len(text):
            self._run = None  # the token ended: the secret is complete
        return stop, len(text)

    def _pem_blocks(self, text: bytes, start: int, spans: list[tuple[int, int]], masked: list[str]) -> int:
        """Mask private key bodies; returns where releasing must stop (a footer may be arriving)."""
        for begin in PEM_BEGIN.finditer(text, max(0, start - 64)):
            body = text.find(b"\n", begin.end())
            if body < 0:
                continue  # the header line is not complete yet: the tail check holds it
            if body < start and not spans:
                continue  # its body began in a chunk already released: the run masked it
            end = PEM_END.search(text, body)
            masked.append("private-key")
            if end is None:
                stop = _footer_hold(text, body)
                spans.append((body, stop))
                self._run = _Run("private-key", None)
                return stop
            spans.append((body, end.start()))
        return len(text)

    def _open_tail(self, text: bytes, start: int, spans: list[tuple[int, int]], masked: list[str]) -> int:
        """Where to stop releasing: the start of a secret that may still be being written."""
        if self._run is not None:
            return len(text)  # a provisional run reaching the end masks as it goes
        if text[-1:] in (b"\n", b"\r"):
            return len(text)  # no opening pattern can end with a line break
        window_start = _tail_start(text)
        window = text[window_start:]
        hold = len(text)
        if self._pem and (partial := PEM_PARTIAL_HEADER.search(window)):
            hold = window_start + partial.start()
        lowered = window.lower()
        for detector in self._openings:
            assert detector.opening is not None
            if detector.opening_words and not any(map(lowered.__contains__, detector.opening_words)):
                continue
            match = detector.opening.search(window)
            if match is None:
                continue
            group = next((g for g in range(1, (match.re.groups or 0) + 1) if match.group(g) is not None), 0)
            secret_start = window_start + match.start(group)
            if secret_start == len(text) and detector.provisional:
                continue  # only the prefix so far: released, kept as context
            # A placeholder so far (`token: null`) is held, not masked: the next byte tells.
            if (detector.provisional and match.end(group) - match.start(group) >= PROVISIONAL_AFTER
                    and (detector.validate is None or detector.validate(match.group(group)))):
                if not any(b <= secret_start < e for b, e in spans):
                    spans.append((max(secret_start, start), len(text)))
                    masked.append(detector.name)
                self._run = _Run(detector.name, detector.token)
                return len(text)
            hold = min(hold, secret_start)
        if self._quoted is not None:
            hold = min(hold, self._quoted_value_start(text))
        return hold

    def _final_tail(self, text: bytes, start: int, spans: list[tuple[int, int]], masked: list[str]) -> None:
        """Output paused: what is held goes out. A prefixed token still being written shows its
        prefix only (its first characters are masked, whatever their number); a run of digits
        that may still become a card number shows its first six digits only."""
        if self._run is not None or text[-1:] in (b"\n", b"\r"):
            return
        window_start = _tail_start(text)
        window = text[window_start:]
        for detector in self._openings:
            assert detector.opening is not None
            if detector.token is None or detector.validate is not None or not detector.provisional:
                continue
            match = detector.opening.search(window)
            if match is None:
                continue
            group = next((g for g in range(1, (match.re.groups or 0) + 1) if match.group(g) is not None), 0)
            secret_start = window_start + match.start(group)
            if secret_start == len(text) or any(b <= secret_start < e for b, e in spans):
                continue
            spans.append((max(secret_start, start), len(text)))
            masked.append(detector.name)
            return
        if self._card_digits:
            begin = _card_in_progress(text, window_start)
            if begin >= 0:  # to the last digit: a separator after it is not part of a card
                end = len(text.rstrip(b" -"))
                spans.append((max(begin, start), end))
                # Remembered (from the end of what is released now) to draw back what turns
                # out not to be a card, once the run of digits ends.
                first = max(begin, start)
                if self._starred is not None:
                    first = min(first, start - self._starred[0])
                self._starred = (len(text) - first, len(text) - end)
                return
        self._starred = None

    def _unstar(self, text: bytes, offset: int, vis_hold: int, spans: list[tuple[int, int]]) -> bytes:
        """Digits masked when output paused, as a card number that may still be written, that
        turn out not to be one (the run of digits ended): drawn again as they are. Only on a
        pty, when the cursor is still right after them on their row (backspaces go back)."""
        assert self._starred is not None
        first, last = offset - self._starred[0], offset - self._starred[1]
        run_end = RUN_OF_DIGITS.match(text, last).end()  # type: ignore[union-attr]
        if run_end >= offset + vis_hold:
            if vis_hold:
                self._starred = None  # something else went out: no longer right before the cursor
            return b""  # the run goes on, held: decided when it ends
        self._starred = None
        if first < 0 or self._view is None:
            return b""
        covered = {i for b, e in [*spans, *card_spans(text)] for i in range(max(b, first), min(e, last))}
        shown = [i for i in range(first, last) if i not in covered]
        view = self._view
        back = offset - shown[0] if shown else 0
        if not shown or view.wrap_pending or view.insert or view.x < back or not text[first:offset].isascii():
            return b""
        redrawn = bytes(42 if i in covered else text[i] for i in range(shown[0], offset))
        return b"\b" * back + redrawn

    def _quoted_value_start(self, text: bytes) -> int:
        """Where an unclosed quoted value after a password-like key starts (len(text): none)."""
        assert self._quoted is not None
        floor = max(0, len(text) - 2 * TAIL_WINDOW)
        tail = text[floor:]
        if b'"' not in tail and b"'" not in tail:
            return len(text)
        if not any(map(tail.lower().__contains__, self._quoted)):
            return len(text)
        match = QUOTED_VALUE_OPEN.search(tail)
        if match is None:
            return len(text)
        return floor + (match.start(1) if match.group(1) is not None else match.start(2))


def _footer_hold(text: bytes, start: int) -> int:
    """Inside a key body, where releasing stops: a last line starting with '-' may be the footer
    arriving (base64 has no '-'), so it is held, not masked."""
    newline = text.rfind(b"\n", start)
    line = newline + 1 if newline >= 0 else start
    return line if text.startswith(b"-", line) else len(text)


_SPACES = bytes.maketrans(b"\t\n\r", b"   ")  # the whitespace between words, as spaces


def _tail_start(text: bytes) -> int:
    """Where the end-of-text check starts: the last three words (a key, `=`, a value) and any
    trailing run of digits, spaces and dashes (a card number), at most TAIL_WINDOW bytes back.
    Searching a few words instead of the whole window keeps this cheap on every chunk."""
    floor = max(0, len(text) - TAIL_WINDOW)
    tail = text[floor:].translate(_SPACES)
    end = len(tail)
    for _ in range(3):
        space = tail.rfind(b" ", 0, end)
        if space < 0:
            return floor
        end = len(tail[:space].rstrip(b" "))
    return floor + min(end, len(text[floor:].rstrip(b"0123456789 -")))


ASCII_RUN = re.compile(rb"[\x00-\x7f]+")
_HIGH = bytes(range(0x80, 0x100))
ASCII_TAIL = 4096  # bytes at the end of a text whose ASCII view the end-of-text checks read


class _AsciiView:
    """A text without its characters outside ASCII, and the way between the two."""

    def __init__(self, source: bytes, begin: int = 0) -> None:
        """The view of `source[begin:]` (positions still count from the source's start)."""
        self.source = source
        self._runs = [m.span() for m in ASCII_RUN.finditer(source, begin)]  # (start, end) in the source
        self._starts: list[int] = []  # where each run starts in the view
        length = 0
        for run_begin, run_end in self._runs:
            self._starts.append(length)
            length += run_end - run_begin
        self.text = b"".join(source[b:e] for b, e in self._runs)
        self._sources = [b for b, _ in self._runs]

    def to_view(self, position: int) -> int:
        """How many ASCII bytes come before `position` of the source."""
        index = bisect_right(self._sources, position) - 1
        if index < 0:
            return 0
        begin, end = self._runs[index]
        return self._starts[index] + min(position, end) - begin

    def to_text(self, position: int) -> int:
        """Where the view's byte `position` is in the source."""
        if position >= len(self.text):
            return len(self.source)
        index = bisect_right(self._starts, position) - 1
        return self._runs[index][0] + position - self._starts[index]

    def spans(self, begin: int, end: int) -> list[tuple[int, int]]:
        """The view's span as spans of the source: its ASCII runs only."""
        out = []
        index = max(0, bisect_right(self._starts, begin) - 1)
        while index < len(self._runs) and self._starts[index] < end:
            run_begin, run_end = self._runs[index]
            lo = max(begin, self._starts[index])
            hi = min(end, self._starts[index] + run_end - run_begin)
            if lo < hi:
                out.append((run_begin + lo - self._starts[index], run_begin + hi - self._starts[index]))
            index += 1
        return out


class _Projection:
    """The visible text of a chunk, and the way back from visible offsets to bytes.

    The visible text costs one `re.sub`; the segment table is only built when something in a
    chunk with escape sequences has to be masked or held.
    """

    def __init__(self, buf: bytes, *, final: bool = False, escaped: bool | None = None) -> None:
        self.buf = buf
        self.end = len(buf)  # bytes past `end`: an escape or a zero-width character the chunk cut
        if not final and buf[-1:] >= b"\x80":
            self.end -= _cut_character(buf)
        self.identity = not (has_escape(buf) if escaped is None else escaped) and self.end == len(buf)
        if self.identity:
            self.visible = buf
            return
        end = self.end
        trailing = None if final else TRAILING_ESCAPE.search(buf, max(0, end - 64), end)
        if trailing is not None and (ESC_SEQUENCES.match(buf, trailing.start(), end) is None
                                     or CUT_ESCAPE.match(buf, trailing.start(), end)):
            self.end = trailing.start()
        visible = ESC_SEQUENCES.sub(b"", buf[: self.end]) if self.end else b""
        if screen_flags(visible) & (FLAG_UNDRAWN | FLAG_NON_ASCII):
            visible = UNDRAWNS.sub(b"", visible)
        self.visible = visible
        self._segments: list[tuple[int, int, int]] | None = None
        self._starts: list[int] = []

    def segments(self) -> list[tuple[int, int, int]]:
        """(visible start, byte start, length) of every run of text between escapes."""
        if self._segments is None:
            segments, position, visible = [], 0, 0
            for match in ESCAPES.finditer(self.buf, 0, self.end):
                if match.start() > position:
                    segments.append((visible, position, match.start() - position))
                    visible += match.start() - position
                position = match.end()
            if position < self.end:
                segments.append((visible, position, self.end - position))
            self._segments = segments
            self._starts = [vis for vis, _, _ in segments]
        return self._segments

    def _visible_from(self, position: int) -> bool:
        """Whether every byte from `position` to `end` is visible text. An escape can be long
        (an OSC title): one starting well before `position` may still reach past it."""
        buf, end = self.buf, self.end
        if has_escape(buf[max(0, position - 3):end]):  # an undrawn character is up to 4 bytes
            return False
        escape = buf.rfind(b"\x1b", 0, position)
        reach = ESCAPES.match(buf, escape, end) if escape >= 0 else None
        return reach is None or reach.end() <= position

    def byte_offset(self, offset: int) -> int:
        """Byte position of a visible offset; escapes just before it go out with what precedes."""
        if self.identity:
            return offset
        if offset >= len(self.visible):
            return self.end
        # Usually the offset is near the end (a held tail): if no escape sits in between,
        # count back from the end instead of building the segment table.
        candidate = self.end - (len(self.visible) - offset)
        if candidate >= 0 and self._visible_from(candidate):
            return candidate
        segments = self.segments()
        vis, byte, _ = segments[bisect_right(self._starts, offset) - 1]
        return byte + offset - vis

    def masked(self, cut: int, spans: list[tuple[int, int]]) -> bytes:
        """`buf[:cut]` with the visible spans replaced by stars, escape sequences untouched."""
        spans = sorted((s, e) for s, e in spans if e > s)
        if not spans:
            return self.buf[:cut]
        if self.identity:
            byte_spans = spans
        else:
            byte_spans = []
            segments = self.segments()
            for s, e in spans:
                first = max(0, bisect_right(self._starts, s) - 1)
                for vis, byte, length in segments[first:]:
                    if vis >= e:
                        break
                    lo, hi = max(s, vis), min(e, vis + length)
                    if lo < hi:
                        byte_spans.append((byte + lo - vis, byte + hi - vis))
        out, last = [], 0
        for span_start, span_end in byte_spans:
            s, e = max(min(span_start, cut), last), min(span_end, cut)
            if e <= s:
                continue
            out.append(self.buf[last:s])
            out.append(_stars(self.buf[s:e]))
            last = e
        out.append(self.buf[last:cut])
        return b"".join(out)


@dataclass(frozen=True)
class TextMasker:
    """Masks complete short texts (a command line, keys, a screen) for logs, headers and chat.

    Built once from the config's masking settings and handed to whatever stores or prints such
    text; the default is the built-in detectors."""

    detectors: tuple[Detector, ...] = BUILTIN_DETECTORS
    pem: bool = True

    def mask(self, text: str) -> str:
        """`text` with its secrets masked."""
        if not text:
            return text
        masker = SecretMasker(self.detectors, pem=self.pem)
        # The text is complete: a closing line break stops a secret that could still be growing
        # at its end from being masked provisionally (the streaming policy), then goes again.
        data = text.encode("utf-8", "surrogateescape") + b"\n"
        masked = masker.feed(data).data + masker.flush().data
        return masked[:-1].decode("utf-8", "surrogateescape")
