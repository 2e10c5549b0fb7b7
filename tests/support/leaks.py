"""Leak trials for the secret masker: secrets printed the ways a hostile program can print them,
fed to a masker split at every offset (with and without a pause there), and drawn as a terminal
draws them.

A trial is a list of parts: plain output, or a piece of a secret. It is drawn three times by a
pyte screen: as printed (the truth), with each secret character replaced by a placeholder (which
cells hold secret characters, and which of them may show: a public prefix, a card's first six
and last four digits), and after the masker (what a user sees). A secret cell showing its true
character where it may not is a leak; an ordinary cell not showing its true character is an
over-mask. Leaks are checked after every piece released (the screen at every moment), over-masks
at the end.

The same trials run end to end (tests/e2e/test_leaks_e2e.py): printed by a real target, drawn by
tmux as the client's terminal, read back from tmux.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyte

from bastion.core.masker import MaskResult, luhn_ok

HIDDEN = "§"  # a secret character that must never show
PUBLIC = "¤"  # one that may (a public prefix, a card's first six and last four digits)
LATE = "¦"  # one drawn before the rest of the secret: it may show until the secret is complete
WIDTH, HEIGHT = 120, 40

rng = random.Random(16)
UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits


def _rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _card(prefix: str, length: int = 16) -> str:
    body = prefix + _rand(string.digits, length - len(prefix) - 1)
    return next(body + c for c in string.digits if luhn_ok((body + c).encode()))


@dataclass(frozen=True)
class Secret:
    kind: str
    text: str
    public: frozenset[int]  # indexes of characters that may show


def _prefixed(kind: str, prefix: str, body: str) -> Secret:
    return Secret(kind, prefix + body, frozenset(range(len(prefix))))


def _spaced_card(card: str) -> Secret:
    text = " ".join(card[i:i + 4] for i in range(0, len(card), 4))
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    public = set(digits[:6]) | set(digits[-4:]) | {i for i, c in enumerate(text) if c == " "}
    return Secret("card-number", text, frozenset(public))


def _plain_card(card: str) -> Secret:
    return Secret("card-number", card, frozenset([*range(6), *range(len(card) - 4, len(card))]))


def corpus() -> list[Secret]:
    """One of each kind, drawn from a seeded generator (the same in every run)."""
    header = "eyJhbGciOiJIUzI1NiJ9"
    jwt = f"{header}.eyJ{_rand(ALNUM, 24)}.{_rand(ALNUM + '-_', 43)}"
    return [
        _prefixed("aws-access-key-id", "AKIA", _rand(UPPER_DIGITS, 16)),
        _prefixed("google-api-key", "AIza", _rand(ALNUM + "-_", 35)),
        _prefixed("gitlab-token", "glpat-", _rand(ALNUM, 20)),
        _prefixed("github-token", "ghp_", _rand(ALNUM, 36)),
        _prefixed("stripe-key", "sk_live_", _rand(ALNUM, 24)),
        _prefixed("slack-token", "xoxb-", _rand(string.digits, 12) + "-" + _rand(ALNUM, 24)),
        Secret("jwt", jwt, frozenset(range(len(header) + 4))),
        _plain_card(_card("4")),
        _spaced_card(_card("5")),
    ]


@dataclass(frozen=True)
class Piece:
    """Output as printed: plain, or characters `start`.. of the trial's secret."""

    text: str
    start: int = -1  # -1: not secret


@dataclass(frozen=True)
class Trial:
    name: str
    secret: Secret
    pieces: tuple[Piece, ...]
    allowed: frozenset[int] = frozenset()  # more characters that may show (drawn before any
    # masker could know they were part of a secret)
    # Strict: no hidden character shows at any moment. Otherwise (drawing tricks, where any part
    # of the last piece drawn before the secret is whole cannot be known either): the secret
    # never shows whole, and the final screen shows none of it.
    strict: bool = True
    # Ordinary text that must still show, as words on a row, where a pty's masker may redraw
    # the line otherwise (a character terminals draw with different widths becomes U+FFFD):
    # then the cells are not compared one by one.
    words: tuple[str, ...] = ()

    def printed(self, placeholders: bool = False) -> bytes:
        out = []
        for piece in self.pieces:
            if piece.start < 0 or not placeholders:
                out.append(piece.text)
                continue
            out.append("".join(
                c if c in "\r\n" else PUBLIC if i in self.secret.public else LATE if i in self.allowed
                else HIDDEN
                for i, c in enumerate(piece.text, piece.start)))
        return "".join(out).encode("utf-8", "surrogateescape")  # lone surrogates: bytes not UTF-8


def draw(data: bytes, screen: pyte.Screen | None = None) -> pyte.Screen:
    if screen is None:
        screen = pyte.Screen(WIDTH, HEIGHT)
    pyte.ByteStream(screen).feed(for_pyte(data))
    return screen


def for_pyte(data: bytes) -> bytes:
    """pyte draws nothing after a variation selector of the supplement (U+E0100-U+E01EF);
    terminals draw nothing for it."""
    return re.sub(rb"\xf3\xa0[\x84-\x87][\x80-\xbf]", b"", data)


@dataclass
class Judge:
    """Where a trial's secret characters are drawn, and what every other cell must show."""

    trial: Trial
    hidden: list[tuple[int, int, str]] = field(default_factory=list)  # row, column, true character
    late: list[tuple[int, int, str]] = field(default_factory=list)  # masked by the end
    ordinary: list[tuple[int, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        truth = draw(self.trial.printed())
        marked = draw(self.trial.printed(placeholders=True))
        for row in range(HEIGHT):
            for column in range(WIDTH):
                cell = marked.buffer[row][column].data[:1]  # a mark combined onto it follows
                true = truth.buffer[row][column].data
                if cell == HIDDEN:
                    self.hidden.append((row, column, true))
                elif cell == LATE:
                    self.late.append((row, column, true))
                elif cell != PUBLIC and cell.strip():
                    self.ordinary.append((row, column, true))
        assert self.hidden or self.late, f"{self.trial.name}: no secret character is drawn"

    def leaked(self, screen: pyte.Screen, *, final: bool = False) -> bool:
        if final or self.trial.strict:
            cells = self.hidden + self.late if final else self.hidden
            return any(screen.buffer[r][c].data == true for r, c, true in cells)
        return all(screen.buffer[r][c].data == true for r, c, true in self.hidden + self.late)

    def over_masked(self, screen: pyte.Screen) -> bool:
        if self.trial.words:
            shown = ["".join(screen.buffer[r][c].data for c in range(WIDTH)) for r in range(HEIGHT)]
            return not all(any(word in row for row in shown) for word in self.trial.words)
        return any(screen.buffer[r][c].data != true for r, c, true in self.ordinary)


class Masker:
    """What the trials feed: a masking stage's masker (feed; a pause is a flush)."""

    def feed(self, data: bytes) -> MaskResult: ...  # pragma: no cover - a protocol
    def flush(self, *, pause: bool = False) -> MaskResult: ...  # pragma: no cover


@dataclass
class Tally:
    trials: int = 0
    leaks: int = 0
    over_masks: int = 0
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.leaks}/{self.trials} leaked, {self.over_masks}/{self.trials} over-masked"


def run(trial: Trial, chunks: list[bytes], pauses: list[bool], masker: Masker, judge: Judge,
        tally: Tally, label: str) -> None:
    """Feed `chunks` (a pause after those marked), drawing every release."""
    screen = pyte.Screen(WIDTH, HEIGHT)
    stream = pyte.ByteStream(screen)
    leaked = False
    released = []

    def show(data: bytes) -> None:
        nonlocal leaked
        if data:
            released.append(data)
            stream.feed(for_pyte(data))
            leaked = leaked or judge.leaked(screen)

    for chunk, pause in zip(chunks, pauses, strict=True):
        show(masker.feed(chunk).data)
        if pause:
            show(masker.flush(pause=True).data)
    show(masker.flush().data)
    leaked = leaked or judge.leaked(screen, final=True)
    over = judge.over_masked(screen)
    tally.trials += 1
    tally.leaks += leaked
    tally.over_masks += over
    if (leaked or over) and len(tally.examples) < 5:
        tally.examples.append(f"{label}: {'leak' if leaked else 'over-mask'}: "
                              f"{chunks!r} -> {b''.join(released)!r}")


def splits(trial: Trial) -> Iterator[tuple[str, list[bytes], list[bool]]]:
    """Every offset, output going on at once, and with a pause there."""
    data = trial.printed()
    for offset in range(1, len(data)):
        pieces = [data[:offset], data[offset:]]
        yield f"{trial.name} @{offset}", pieces, [False, False]
        yield f"{trial.name} @{offset} paused", pieces, [True, False]


def slowly(trial: Trial) -> Iterator[tuple[str, list[bytes], list[bool]]]:
    """A character at a time, a pause after each (a program printing with sleeps)."""
    text = trial.printed().decode()
    chunks = [c.encode() for c in text]
    yield f"{trial.name} slowly", chunks, [True] * len(chunks)


def tally(trials: list[Trial], make: Callable[[], Masker],
          ways: Callable[[Trial], Iterator[tuple[str, list[bytes], list[bool]]]] = splits) -> Tally:
    result = Tally()
    for trial in trials:
        judge = Judge(trial)
        for label, chunks, pauses in ways(trial):
            run(trial, chunks, pauses, make(), judge, result, label)
    return result


# -- the classes -------------------------------------------------------------------------------

def _whole(secret: Secret, before: str = "id=", after: str = " end\r\n$ ") -> tuple[Piece, ...]:
    return Piece(before), Piece(secret.text, 0), Piece(after)


def plain(secrets: list[Secret]) -> list[Trial]:
    return [Trial(f"plain {s.kind}", s, _whole(s)) for s in secrets]


UNDRAWN = ["\x00", "\x7f", "\x0e", "\x0f", "\x07", "\u200b", "\u2060", "\ufeff", "\u034f"]


def undrawn(secrets: list[Secret], chars: list[str] = UNDRAWN) -> list[Trial]:
    """A character no terminal draws inside the secret (NUL first)."""
    trials = []
    for index, secret in enumerate(secrets):
        char = chars[index % len(chars)] if index else "\x00"
        for cut in (len(secret.text) // 2, len(secret.text) - 3):
            trials.append(Trial(f"undrawn {char!r} {secret.kind}", secret, (
                Piece("id="), Piece(secret.text[:cut], 0), Piece(char),
                Piece(secret.text[cut:], cut), Piece(" end\r\n$ "))))
    return trials


# Characters a terminal may not draw (or draw with another width) that are outside the set the
# masker sets aside by name: an invalid byte, an overlong NUL, an unassigned code point, combining
# marks beyond U+0300-U+036F, a variation selector of the supplement, format characters, a
# symbol newer than the masker's Unicode tables.
UNDRAWN_ELSEWHERE = ["\udcff", "\udcc0\udc80", "\u0378", "\u20d0", "\u0483", "\U000e0100", "\u0600",
                     "\u00ad", "\U0001fae8"]


def undrawn_elsewhere(secrets: list[Secret], chars: list[str] = UNDRAWN_ELSEWHERE) -> list[Trial]:
    """Each of `chars` inside three of the secrets, in their middle."""
    trials = []
    for index, char in enumerate(chars):
        for secret in secrets[index % 3::3]:
            cut = len(secret.text) // 2
            trials.append(Trial(f"undrawn {char!r} {secret.kind}", secret, (
                Piece("id="), Piece(secret.text[:cut], 0), Piece(char),
                Piece(secret.text[cut:], cut), Piece(" end\r\n$ ")), words=("id=", " end", "$")))
    return trials


def cursor_drawn(secrets: list[Secret]) -> list[Trial]:  # the second half may show until the first comes
    """The second half printed first at its column (ESC[nG), then CR and the first half, then
    the cursor moved past it for what follows."""
    trials = []
    for secret in secrets:
        cut = len(secret.text) // 2
        column = len("id=") + cut + 1  # 1-based
        end = len("id=") + len(secret.text) + 1
        second = frozenset(range(cut, len(secret.text)))
        trials.append(Trial(f"cursor {secret.kind}", secret, (
            Piece("id="), Piece(f"\x1b[{column}G"), Piece(secret.text[cut:], cut), Piece("\rid="),
            Piece(secret.text[:cut], 0), Piece(f"\x1b[{end}G end\r\n$ ")), allowed=second))
    return trials


def cards_then_digits() -> list[Trial]:
    """A card number followed by a space and more digits (an address, a count)."""
    trials = []
    for tail in (" 127.0.0.1", " 42", " 2026-11-30", " 1234 5678"):
        for card in (_spaced_card(_card("4")), _plain_card(_card("5"))):
            trials.append(Trial(f"card+digits {tail!r}", card,
                                (Piece("ip "), Piece(card.text, 0), Piece(tail + "\r\n$ "))))
    return trials


def pem_footer(key: str) -> list[Trial]:
    """A private key, then ordinary output: the masking must end at the footer."""
    lines = key.strip("\n").split("\n")
    body = "\r\n".join(lines[1:-1])
    secret = Secret("private-key", body, frozenset())
    return [Trial("pem footer", secret, (
        Piece(lines[0] + "\r\n"), Piece(body, 0), Piece("\r\n" + lines[-1] + "\r\nafter the key\r\n$ ")))]


def classes(make_key: Callable[[], str]) -> dict[str, tuple[list[Trial], Callable[[Trial], Iterator[tuple[str, list[bytes], list[bool]]]]]]:
    secrets = corpus()
    return {
        "plain": (plain(secrets), splits),
        "undrawn (NUL, DEL, SO/SI, BEL, zero-width)": (undrawn(secrets), splits),
        "undrawn elsewhere (invalid, unassigned, marks)": (undrawn_elsewhere(secrets), splits),
        "cursor (ESC[nG, CR)": (cursor_drawn(secrets), splits),
        "drawing tricks": (tricks(secrets), splits),
        "card + digits": (cards_then_digits(), splits),
        "slow prefixed tokens": (plain(secrets), slowly),
        "pem footer": (pem_footer(make_key()), splits),
    }


def main() -> None:
    from bastion.core.masker import SecretMasker
    from tests.support.samples import pem
    def make() -> SecretMasker:
        masker = SecretMasker()
        masker.on_screen(WIDTH, HEIGHT)
        return masker

    for name, (trials, ways) in classes(lambda: pem("openssh")).items():
        result = tally(trials, make, ways)
        print(f"{name:45} {result}")
        for example in result.examples[:2]:
            print("   ", example[:300])


# -- drawing tricks: each a way to assemble a secret on a screen row from separate writes ------

def _halves(secret: Secret) -> tuple[str, str, int]:
    cut = len(secret.text) // 2
    return secret.text[:cut], secret.text[cut:], cut


def tricks(secrets: list[Secret]) -> list[Trial]:
    """Every trick in `TRICKS` on every secret. What is drawn before the last piece may show
    until that piece completes the secret; at the end none of it may."""
    trials = []
    for name, build in TRICKS.items():
        for secret in secrets:
            pieces = build(secret)
            before_last = [p for p in pieces if p.start >= 0][:-1]
            trials.append(Trial(f"{name} {secret.kind}", secret, pieces, allowed=frozenset(
                i for p in before_last for i in range(p.start, p.start + len(p.text))), strict=False))
    return trials


def _sgr(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    half = len(second) // 2
    return (Piece("id="), Piece(f"\x1b[{3 + cut + 1}G\x1b[31m"), Piece(second[:half], cut), Piece("\x1b[0m"),
            Piece(second[half:], cut + half), Piece("\r\x1b[1mid="), Piece(first, 0),
            Piece(f"\x1b[0m\x1b[{3 + len(s.text) + 1}G end\r\n$ "))


def _backspaces(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("id="), Piece(first, 0), Piece("~" * len(second) + "\b" * len(second)),
            Piece(second, cut), Piece(" end\r\n$ "))


def _tabs(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    stop = (3 + cut + 7) // 8 * 8
    pad = stop - 3 - cut
    return (Piece("\t" * (stop // 8)), Piece(second, cut), Piece("\r" + "-" * pad + "id="), Piece(first, 0),
            Piece(f"\x1b[{stop + len(second) + 1}G end\r\n$ "))


def _wide(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("漢字="), Piece(f"\x1b[{5 + cut + 1}G"), Piece(second, cut), Piece("\r漢字="), Piece(first, 0),
            Piece(f"\x1b[{5 + len(s.text) + 1}G end\r\n$ "))


def _forward(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece(f"id=\x1b[{cut}C"), Piece(second, cut), Piece("\rid="), Piece(first, 0),
            Piece(f"\x1b[{len(second)}C end\r\n$ "))


def _save_restore(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece(f"id=\x1b7\x1b[{cut}C"), Piece(second, cut), Piece("\x1b8"), Piece(first, 0),
            Piece(f"\x1b[{len(second)}C end\r\n$ "))


def _scosc(s: Secret) -> tuple[Piece, ...]:  # pyte does not know CSI s/u: end to end only (tmux)
    first, second, cut = _halves(s)
    return (Piece(f"id=\x1b[s\x1b[{cut}C"), Piece(second, cut), Piece("\x1b[u"), Piece(first, 0),
            Piece(f"\x1b[{len(second)}C end\r\n$ "))


def _line_above(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece(f"id=\x1b[{3 + cut + 1}G"), Piece(second, cut), Piece("\r\nnext line\r\n\x1b[2A\rid="),
            Piece(first, 0), Piece("\x1b[2B\r$ "))


def _insert_mode(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("id="), Piece(second, cut), Piece("\r\x1b[3C\x1b[4h"), Piece(first, 0),
            Piece(f"\x1b[4l\x1b[{len(second)}C end\r\n$ "))


def _delete_chars(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("id="), Piece(first, 0), Piece("~~~~"), Piece(second, cut),
            Piece(f"\x1b[{len(second) + 4}D\x1b[4P\x1b[{len(second)}C end\r\n$ "))


def _scroll_region(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("\x1b[2J\x1b[H\x1b[2;10r\x1b[5;1Hid="), Piece(f"\x1b[5;{3 + cut + 1}H"), Piece(second, cut),
            Piece("\x1b[10;1H\r\nscrolled\x1b[4;1Hid="), Piece(first, 0), Piece("\x1b[r\x1b[12;1H$ "))


def _absolute(s: Secret) -> tuple[Piece, ...]:
    first, second, cut = _halves(s)
    return (Piece("\x1b[2J\x1b[3;1Hid="), Piece(f"\x1b[3;{3 + cut + 1}H"), Piece(second, cut),
            Piece("\x1b[3;4H"), Piece(first, 0), Piece("\x1b[5;1H$ "))


TRICKS = {
    "sgr": _sgr, "backspaces": _backspaces, "tabs": _tabs, "wide": _wide, "CUF": _forward,
    "DECSC": _save_restore, "CUU": _line_above, "IRM": _insert_mode, "DCH": _delete_chars,
    "DECSTBM": _scroll_region, "CUP": _absolute,
}


if __name__ == "__main__":
    main()
