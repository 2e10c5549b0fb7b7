"""Command rules: which commands are allowed, denied, logged or held for approval. Pure.

A rules file holds ordered `[[rule]]` tables. For every simple command a line would run (see
`bastion.core.shellscope`), the first rule in scope that matches decides; commands no rule matches
get the target's default action. The line's verdict is the strictest of its commands' (`Action`
says which is stricter).

A word the bastion cannot know (a variable from the environment, a command's output, a glob)
may or may not match a rule's `program` or `args`. When a rule that *may* match comes before
the one that decides, and would be stricter, the line is unsure: `when_unsure` applies.

An sftp session is decided twice: the subsystem as a whole (rules of kind "sftp" without `sftp`
or `paths`), then each operation (rules with them), once per path it names: renaming a file
out of a protected folder is renaming a protected file.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeAlias

from bastion.core.durations import parse_duration
from bastion.core.shellscope import Analysis, SimpleCommand, analyze
from bastion.core.shellwords import Match, match_glob
from bastion.errors import ConfigError
from recorder.sftp import OPERATIONS as SFTP_OPERATIONS


class Action(StrEnum):
    """What a rule does with what it matches, from the least strict to the strictest."""

    ALLOW = "allow"
    LOG = "log"
    APPROVE = "approve"
    DENY = "deny"

    @property
    def strictness(self) -> int:
        """The action's place in the order above: of two verdicts, the higher one stands."""
        return _STRICTNESS[self]

    @classmethod
    def parse(cls, value: object) -> Action | None:
        """The action a rules file names, or None when it names none."""
        if not isinstance(value, str):
            return None
        try:
            return cls(value)
        except ValueError:
            return None


_STRICTNESS = {action: rank for rank, action in enumerate(Action)}
KINDS = ("exec", "shell", "sftp", "forward")
# What an unsure line gets: an action, or "default" (approve if an approve rule could apply, else allow).
UnsurePolicy: TypeAlias = Action | Literal["default"]
UNSURE_POLICIES: tuple[UnsurePolicy, ...] = ("default", Action.ALLOW, Action.APPROVE, Action.DENY)


class Principals(StrEnum):
    """Whom a rule is about: everyone, people only, or machines (CI jobs, agents) only."""

    ALL = "all"
    PEOPLE = "people"
    MACHINES = "machines"

    def covers(self, *, machine: bool) -> bool:
        return self is Principals.ALL or (self is Principals.MACHINES) == machine


@dataclass(frozen=True)
class Rule:
    name: str
    action: Action
    message: str = ""
    command: re.Pattern[str] | None = None
    programs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset({"exec", "shell"})
    targets: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    timeout: int = 300
    line: int = 0
    operations: frozenset[str] = frozenset()  # sftp operations; with `paths`: an operation rule
    paths: tuple[str, ...] = ()
    principals: Principals = Principals.ALL

    @property
    def screens_operations(self) -> bool:
        return bool(self.operations or self.paths)

    def in_scope(self, request: CommandRequest) -> bool:
        if request.kind not in self.kinds:
            return False
        if self.targets and not any(fnmatch.fnmatchcase(request.target, t) for t in self.targets):
            return False
        if self.logins and not any(fnmatch.fnmatchcase(request.login, p) for p in self.logins):
            return False
        if not self.principals.covers(machine=request.machine):
            return False
        return not (self.groups or self.users) or bool(
            request.user in self.users or self.groups & request.groups
        )

    def matches(self, part: SimpleCommand | None, line: str) -> Match:
        """YES, NO, or MAYBE when the answer hangs on a word the bastion cannot know."""
        if part is None:  # sftp, forwards, assignments only: no program to match
            if self.programs or self.args or self.screens_operations:
                return Match.NO
            return Match.YES if self.command is None or self.command.search(line) else Match.NO
        result = Match.YES
        if self.programs:
            if part.program:
                if not any(fnmatch.fnmatchcase(part.program, p) for p in self.programs):
                    return Match.NO
            else:
                result = Match.MAYBE
        for pattern in self.args:
            best = max((match_glob(a, pattern) for a in part.args), key=lambda m: m.value, default=Match.NO)
            if best is Match.NO:
                return Match.NO
            result = min(result, best, key=lambda m: m.value)
        if self.command is not None and not self.command.search(part.text):
            # A `command` regex reads the words as typed, values this session assigned
            # substituted: what an expansion would produce is for `program` and `args` rules.
            return Match.NO
        return result

    def matches_operation(self, request: CommandRequest, path: str) -> bool | None:
        """Whether this rule decides an sftp operation on `path`; None when that cannot be told:
        a path the target resolves from its own working directory, or none, against globs."""
        if not self.screens_operations:
            return False
        if self.operations and request.operation not in self.operations:
            return False
        if self.command is not None and not self.command.search(request.command):
            return False
        if not self.paths:
            return True
        if not path.startswith("/"):
            return None
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.paths)


@dataclass(frozen=True)
class CommandRequest:
    user: str
    groups: frozenset[str]
    target: str
    login: str
    kind: str
    command: str
    unsure: bool = False  # the bastion could not tell exactly what was submitted
    why: str = ""  # ... and why not
    analysis: Analysis | None = None  # the line read in its session's scope (else: a fresh one)
    operation: str = ""  # an sftp operation (see recorder.sftp.OPERATIONS); "" for the subsystem
    paths: tuple[str, ...] = ()  # the operation's paths, absolute and normalised where known
    machine: bool = False  # the requester is a machine (a CI job, an agent), not a person


@dataclass(frozen=True)
class Verdict:
    action: Action
    rule: str | None
    message: str = ""
    part: str = ""
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    timeout: int = 300
    unsure: bool = False
    why: str = ""

    def describe(self) -> str:
        by = f"rule {self.rule!r}" if self.rule else "the target's default"
        text = f"{self.action} by {by}"
        if self.part:
            text += f" (on: {self.part})"
        if self.unsure:
            text += " [unsure what was submitted]"
        return text


MODERATOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")


def moderator_names(value: object, where: str) -> frozenset[str]:
    """`moderated_by`: a non-empty list of group or user names (the config's targets and the
    rules file's [[moderation]] read it alike)."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: moderated_by: expected a non-empty list of group or user names,"
                          f" got {value!r}")
    for name in value:
        if not isinstance(name, str) or not MODERATOR_NAME.fullmatch(name):
            raise ConfigError(f"{where}: moderated_by: {name!r} is not a group or user name")
    return frozenset(value)


@dataclass(frozen=True)
class Moderation:
    """A [[moderation]] scope of the rules file: sessions in scope wait for a moderator."""

    name: str
    moderated_by: frozenset[str]
    timeout: int = 300
    targets: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    line: int = 0

    def covers(self, user: str, groups: frozenset[str], target: str, login: str) -> bool:
        if self.targets and not any(fnmatch.fnmatchcase(target, t) for t in self.targets):
            return False
        if self.logins and not any(fnmatch.fnmatchcase(login, p) for p in self.logins):
            return False
        return not (self.groups or self.users) or user in self.users or bool(self.groups & groups)


@dataclass(frozen=True)
class ModerationNeed:
    """Who moderates a session, and how long it may go without one (seconds)."""

    moderated_by: frozenset[str]
    timeout: int
    scopes: tuple[str, ...] = ()  # the [[moderation]] scopes that asked for it ("target" for the config)


def moderation_need(scopes: tuple[Moderation, ...], *, user: str, groups: frozenset[str], target: str,
                    login: str, target_moderators: frozenset[str] = frozenset(),
                    target_timeout: int = 300) -> ModerationNeed | None:
    """What moderation a session needs: the target's own `moderated_by` (config) and every
    [[moderation]] scope covering it together; any of their moderators may moderate, and the
    shortest timeout applies. None: the session is not moderated."""
    names, timeouts, why = set(target_moderators), [], []
    if target_moderators:
        timeouts.append(target_timeout)
        why.append("target")
    for scope in scopes:
        if scope.covers(user, groups, target, login):
            names |= scope.moderated_by
            timeouts.append(scope.timeout)
            why.append(scope.name)
    if not names:
        return None
    return ModerationNeed(frozenset(names), min(timeouts), tuple(why))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    default_action: Action = Action.ALLOW
    target_defaults: tuple[tuple[str, Action], ...] = ()  # (target glob, action), first match wins
    when_unsure: UnsurePolicy = "default"
    path: Path | None = None
    moderations: tuple[Moderation, ...] = ()

    def default_for(self, target: str) -> Action:
        for pattern, action in self.target_defaults:
            if fnmatch.fnmatchcase(target, pattern):
                return action
        return self.default_action

    def decide(self, request: CommandRequest) -> Verdict:
        scoped = [rule for rule in self.rules if rule.in_scope(request)]
        if request.kind == "sftp" and request.operation:
            return self._decide_operation(request, scoped)
        verdicts: list[Verdict] = []
        reasons: list[str] = [request.why] if request.unsure and request.why else []
        unsure = request.unsure
        parts: list[SimpleCommand | None] = [None]
        if request.kind in ("exec", "shell"):
            analysis = request.analysis or analyze(request.command)
            reasons += analysis.unsure
            if analysis.incomplete and request.kind == "exec":
                reasons.append(f"the command is not complete ({analysis.incomplete})")
            unsure = unsure or bool(reasons)
            parts = list(analysis.commands) or [None]
        whole = " ".join(request.command.split())
        for part in parts:
            part_text = part.text if part is not None else whole
            decided: Verdict | None = None
            maybe: list[Rule] = []
            for rule in scoped:
                match = rule.matches(part, whole)
                if match is Match.YES:
                    decided = self._by(rule, part_text, request)
                    break
                if match is Match.MAYBE:
                    maybe.append(rule)
            if decided is None:
                decided = self._by(None, part_text, request)
            stricter = [r for r in maybe if r.action.strictness > decided.action.strictness]
            if stricter:
                unsure = True
                reasons.append(f"{part_text!r} may match rule {stricter[0].name!r}")
            verdicts.append(decided)
        verdict = max(verdicts, key=lambda v: v.action.strictness)
        if unsure:
            verdict = self._unsure(verdict, scoped, request, "; ".join(reasons))
        return verdict

    def _decide_operation(self, request: CommandRequest, scoped: list[Rule]) -> Verdict:
        unsure = request.unsure
        reasons = [request.why or "the request could not be read exactly"] if unsure else []
        verdicts: list[Verdict] = []
        for path in request.paths or ("",):
            decided: Rule | None = None
            for rule in scoped:
                match = rule.matches_operation(request, path)
                if match is None:
                    unsure = True  # this rule might apply: the verdict cannot be certain
                    if path:
                        reasons.append(f"{path!r} is resolved by the target: rule {rule.name!r} may apply")
                elif match:
                    decided = rule
                    break
            part = f"{request.operation} {shlex.quote(path)}" if path else request.operation
            verdicts.append(self._by(decided, part, request))
        verdict = max(verdicts, key=lambda v: v.action.strictness)
        if unsure:
            verdict = self._unsure(verdict, scoped, request, "; ".join(reasons))
        return verdict

    def _by(self, rule: Rule | None, part: str, request: CommandRequest) -> Verdict:
        if rule is None:
            return Verdict(self.default_for(request.target), None, part=part, why="no rule matched")
        return Verdict(rule.action, rule.name, rule.message, part, rule.approvers, rule.approvals,
                       rule.timeout, why=f"rule at line {rule.line}")

    def _unsure(self, verdict: Verdict, scoped: list[Rule], request: CommandRequest, reasons: str) -> Verdict:
        policy: Action
        if self.when_unsure == "default":
            approving = [r for r in self.rules if r.action is Action.APPROVE and
                         (not r.targets or any(fnmatch.fnmatchcase(request.target, t) for t in r.targets))]
            policy = Action.APPROVE if approving else Action.ALLOW
            approvers = approving[0].approvers if approving else ()
        else:
            policy = self.when_unsure
            approvers = next((r.approvers for r in scoped if r.action is Action.APPROVE), ())
        if verdict.action.strictness >= policy.strictness:
            return Verdict(verdict.action, verdict.rule, verdict.message, verdict.part, verdict.approvers,
                           verdict.approvals, verdict.timeout, unsure=True,
                           why=f"{verdict.why}; unsure: {reasons}")
        return Verdict(policy, "when_unsure", f"the bastion cannot tell what this runs: {reasons}",
                       verdict.part, approvers or verdict.approvers, unsure=True,
                       why=f"when_unsure: {reasons}")


def _rule_lines(text: str, header: str = "[[rule]]") -> list[int]:
    return [number for number, line in enumerate(text.splitlines(), 1) if line.strip() == header]


MODERATION_KEYS = {"name", "moderated_by", "timeout", "targets", "logins", "groups", "users"}


def _moderations(data: Mapping[str, Any], where: str, text: str) -> tuple[Moderation, ...]:
    raw_scopes = data.get("moderation", [])
    if not isinstance(raw_scopes, list):
        raise ConfigError(f"{where}: moderation must be written [[moderation]]")
    lines = _rule_lines(text, "[[moderation]]")
    scopes, names = [], set()
    for index, raw in enumerate(raw_scopes):
        line = lines[index] if index < len(lines) else 0
        at = f"{where}:{line}" if line else f"{where}: moderation {index + 1}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{at}: a [[moderation]] must be a table")
        extra = set(raw) - MODERATION_KEYS
        if extra:
            raise ConfigError(f"{at}: unknown key {sorted(extra)[0]!r} (a [[moderation]] takes"
                              f" {', '.join(sorted(MODERATION_KEYS))})")
        name = raw.get("name", f"moderation {index + 1}")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{at}: [[moderation]] name: expected a name of its own, got {name!r}")
        names.add(name)
        if "moderated_by" not in raw:
            raise ConfigError(f"{at}: [[moderation]] {name!r}: needs moderated_by (groups or users)")
        moderated_by = moderator_names(raw["moderated_by"], f"{at}: [[moderation]] {name!r}")
        timeout = parse_duration(raw.get("timeout", "5m"), where=f"{at}: [[moderation]] {name!r} timeout")
        if timeout <= 0:
            raise ConfigError(f"{at}: [[moderation]] {name!r} timeout: must be more than 0")
        scopes.append(Moderation(
            name=name, moderated_by=moderated_by, timeout=timeout, targets=_strings(raw, "targets", at),
            logins=_strings(raw, "logins", at), groups=frozenset(_strings(raw, "groups", at)),
            users=frozenset(_strings(raw, "users", at)), line=line))
    return tuple(scopes)


def parse_rules(data: Mapping[str, Any], *, path: Path | None = None, text: str = "") -> RuleSet:
    where = str(path) if path else "rules"
    lines = _rule_lines(text)
    unknown = set(data) - {"rule", "defaults", "targets", "moderation"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}"
                          " (expected [[rule]], [[moderation]], [defaults], [targets.NAME])")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{where}: [defaults] must be a table")
    extra = set(defaults) - {"action", "when_unsure"}
    if extra:
        raise ConfigError(f"{where}: [defaults]: unknown key {sorted(extra)[0]!r}")
    default_action = Action.parse(defaults.get("action", Action.ALLOW))
    if default_action is None:
        raise ConfigError(f"{where}: [defaults] action: must be one of {', '.join(Action)}")
    raw_unsure = defaults.get("when_unsure", "default")
    when_unsure: UnsurePolicy | None = "default" if raw_unsure == "default" else Action.parse(raw_unsure)
    if when_unsure is None or when_unsure not in UNSURE_POLICIES:
        raise ConfigError(f"{where}: [defaults] when_unsure: must be one of {', '.join(UNSURE_POLICIES)}")
    target_defaults = []
    for name, table in data.get("targets", {}).items():
        action = Action.parse(table.get("default")) if isinstance(table, Mapping) else None
        if action is None or set(table) - {"default"}:
            raise ConfigError(f"{where}: [targets.{name}]: expected default = one of {', '.join(Action)}")
        target_defaults.append((name, action))
    rules = []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{where}: rule must be written [[rule]]")
    names: set[str] = set()
    for index, raw in enumerate(raw_rules):
        line = lines[index] if index < len(lines) else 0
        rule = _rule(raw, f"{where}:{line}" if line else f"{where}: rule {index + 1}", line)
        if rule.name in names:
            raise ConfigError(f"{where}:{line}: a rule named {rule.name!r} exists already")
        names.add(rule.name)
        rules.append(rule)
    return RuleSet(tuple(rules), default_action, tuple(target_defaults), when_unsure, path,
                   _moderations(data, where, text))


RULE_KEYS = {"name", "action", "message", "command", "program", "args", "kinds", "targets", "logins",
             "groups", "users", "approvers", "approvals", "timeout", "sftp", "paths", "principals"}
# Kinds whose requests are commands: a rule for them needs program, args or command (the rest
# of a rule is scope). An sftp or forward rule may leave them out: the kind itself is what it
# matches (every transfer, every forward).
COMMAND_KINDS = {"exec", "shell"}


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key}: expected a string or a list of strings")
    return tuple(value)


def _rule(raw: Any, where: str, line: int) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a rule must be a table")
    extra = set(raw) - RULE_KEYS
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
    name, action = raw.get("name"), Action.parse(raw.get("action"))
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: every rule needs a name")
    if action is None:
        raise ConfigError(f"{where}: rule {name!r}: action must be one of {', '.join(Action)}")
    command = None
    if "command" in raw:
        try:
            command = re.compile(raw["command"])
        except (re.error, TypeError) as exc:
            reason = f"command is not a valid regular expression ({exc})"
            raise ConfigError(f"{where}: rule {name!r}: {reason}") from None
    kinds, operations, paths = _kinds(raw, f"{where}: rule {name!r}")
    approvers = _strings(raw, "approvers", where)
    if action is Action.APPROVE and not approvers:
        raise ConfigError(f"{where}: rule {name!r}: an approve rule needs approvers (groups)")
    approvals = raw.get("approvals", 1)
    if not isinstance(approvals, int) or approvals < 1:
        raise ConfigError(f"{where}: rule {name!r}: approvals must be a positive number")
    timeout = parse_duration(raw.get("timeout", "5m"), where=f"{where}: rule {name!r} timeout")
    message = raw.get("message", "")
    if not isinstance(message, str):
        raise ConfigError(f"{where}: rule {name!r}: message must be a string")
    programs, args = _strings(raw, "program", where), _strings(raw, "args", where)
    if not (programs or args or (command and command.pattern)) and COMMAND_KINDS & set(kinds):
        # Left out by mistake, it would decide every command (a deny rule: a deny-all).
        raise ConfigError(f"{where}: rule {name!r}: says nothing about which commands it matches:"
                          ' set program, args or command (program = "*" if every command is meant)')
    principals = raw.get("principals", Principals.ALL)
    if principals not in tuple(Principals):
        raise ConfigError(f"{where}: rule {name!r}: principals must be one of {', '.join(Principals)}")
    return Rule(
        principals=Principals(principals),
        name=name, action=action, message=message, command=command,
        programs=programs, args=args,
        kinds=frozenset(kinds), targets=_strings(raw, "targets", where),
        logins=_strings(raw, "logins", where),
        groups=frozenset(_strings(raw, "groups", where)),
        users=frozenset(_strings(raw, "users", where)),
        approvers=approvers, approvals=approvals, timeout=timeout, line=line,
        operations=frozenset(operations), paths=paths,
    )


def _kinds(raw: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The rule's kinds, sftp operations and path globs; operations and paths imply kind sftp."""
    kinds = _strings(raw, "kinds", where)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"{where}: unknown kind {bad[0]!r} (kinds: {', '.join(KINDS)})")
    operations, paths = _operations(raw, where)
    if not (operations or paths):
        return kinds or ("exec", "shell"), (), ()
    if "program" in raw or "args" in raw:
        raise ConfigError(f"{where}: sftp and paths screen sftp operations, program and args screen"
                          " commands: write two rules")
    if set(kinds) - {"sftp"}:
        raise ConfigError(f"{where}: sftp and paths apply to kind sftp only"
                          ' (leave kinds out, or write kinds = ["sftp"])')
    return ("sftp",), operations, paths


def _operations(raw: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    operations = _strings(raw, "sftp", where)
    if "sftp" in raw and not operations:
        raise ConfigError(f"{where}: sftp: name at least one operation ({', '.join(SFTP_OPERATIONS)})")
    unknown = [op for op in operations if op not in SFTP_OPERATIONS]
    if unknown:
        raise ConfigError(f"{where}: sftp: unknown operation {unknown[0]!r}"
                          f" (operations: {', '.join(SFTP_OPERATIONS)})")
    paths = _strings(raw, "paths", where)
    if "paths" in raw and not paths:
        raise ConfigError(f"{where}: paths: name at least one path glob")
    # Operations are matched on absolute paths: a glob that starts otherwise could never match.
    relative = [p for p in paths if not p.startswith(("/", "*", "?", "["))]
    if relative:
        raise ConfigError(f"{where}: paths: {relative[0]!r} can never match: sftp paths are matched"
                          " absolute (start the glob with / or *)")
    return operations, paths
