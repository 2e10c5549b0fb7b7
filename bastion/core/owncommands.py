"""The bastion's own commands, as a user reaches them with `ssh bastion COMMAND`: what a command
line means, or why it is refused. Pure.

Nothing here is ever handed to a shell or a program: a command line is split like a POSIX shell
would (quotes only; no expansion, no operators), must be one of the commands below word for word,
and its arguments must look like what they stand for (a session id, an approval id, a name).
Anything else is refused with one line listing what exists.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# What `ssh bastion` offers, as the refusal lists it.
USAGE = (
    "whoami",
    "sessions list [--user NAME] [--target NAME] [--json]",
    "sessions kill ID [--reason TEXT]",
    "sessions follow ID (ssh -t)",
    "play ID (ssh -t)",
    "review (ssh -t)",
    "join ID (ssh -t, moderators)",
    "approvals list",
    "approvals show ID",
    "approvals approve ID",
    "approvals deny ID",
)
MAX_LINE = 1024
SESSION_ID = re.compile(r"[0-9a-f]{16}(\.[0-9]{1,4})?")
APPROVAL_ID = re.compile(r"[0-9A-Fa-f]{6}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
# Anything a terminal would act on, and anything a shell would: refused before splitting.
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f`$;&|<>(){}\\*?\[\]!~#]")


@dataclass(frozen=True)
class Command:
    name: str  # "whoami", "sessions list", "approvals approve"...
    target: str | None = None  # the session or request the command is about
    options: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refusal:
    reason: str

    def line(self) -> str:
        return f"bastion: {self.reason}; this bastion offers: {' | '.join(USAGE)}"


def parse(line: str | None) -> Command | Refusal:
    """The command `line` asks for, or why it is refused. None is a shell (no command)."""
    words = _words(line)
    if isinstance(words, Refusal):
        return words
    head, rest = words[0], words[1:]
    if head in ("whoami", "review"):
        return _no_more(Command(head), rest)
    if head in ("play", "join"):
        return _one_session(Command(head), rest)
    if head == "sessions" and rest:
        return _sessions(rest[0], rest[1:])
    if head == "approvals" and rest:
        return _approvals(rest[0], rest[1:])
    return Refusal(f"unknown command {' '.join(words[:2])!r}")


def _words(line: str | None) -> list[str] | Refusal:
    if line is None or not line.strip():
        return Refusal("no shell on the bastion")
    if len(line) > MAX_LINE:
        return Refusal("command too long")
    unsafe = UNSAFE.search(line)
    if unsafe is not None:
        return Refusal(f"character {unsafe.group()!r} is not accepted")
    try:
        words = shlex.split(line, posix=True)
    except ValueError as exc:
        return Refusal(f"cannot read the command ({exc})")
    if any(not word or (word.startswith("--") and "=" in word) for word in words):
        return Refusal("empty words and --option=value are not accepted")
    return words


def _no_more(command: Command, rest: list[str]) -> Command | Refusal:
    return command if not rest else Refusal(f"{command.name} takes no argument {rest[0]!r}")


def _one_session(command: Command, rest: list[str]) -> Command | Refusal:
    if len(rest) != 1 or not SESSION_ID.fullmatch(rest[0]):
        return Refusal(f"{command.name}: give one session id (see sessions list)")
    return Command(command.name, target=rest[0])


def _sessions_list(rest: list[str]) -> Command | Refusal:
    options: dict[str, str] = {}
    flags: set[str] = set()
    words = list(rest)
    while words:
        word = words.pop(0)
        if word == "--json":
            flags.add("json")
        elif word in ("--user", "--target") and words and NAME.fullmatch(words[0]):
            options[word[2:]] = words.pop(0)
        else:
            return Refusal(f"sessions list: unexpected {word!r}")
    return Command("sessions list", options=options, flags=frozenset(flags))


def _sessions(verb: str, rest: list[str]) -> Command | Refusal:
    if verb == "list":
        return _sessions_list(rest)
    if verb == "follow":
        return _one_session(Command("sessions follow"), rest)
    if verb == "kill":
        if not rest or not SESSION_ID.fullmatch(rest[0]):
            return Refusal("sessions kill: give a session id (see sessions list)")
        reason = ""
        if len(rest) > 1:
            if rest[1] != "--reason" or len(rest) < 3:
                return Refusal(f"sessions kill: unexpected {rest[1]!r}")
            reason = " ".join(rest[2:])
        return Command("sessions kill", target=rest[0], options={"reason": reason})
    return Refusal(f"unknown command 'sessions {verb}'")


def _approvals(verb: str, rest: list[str]) -> Command | Refusal:
    if verb == "list":
        return _no_more(Command("approvals list"), rest)
    if verb in ("show", "approve", "deny"):
        if len(rest) != 1 or not APPROVAL_ID.fullmatch(rest[0]):
            return Refusal(f"approvals {verb}: give one request id (see approvals list)")
        return Command(f"approvals {verb}", target=rest[0].upper())
    return Refusal(f"unknown command 'approvals {verb}'")
