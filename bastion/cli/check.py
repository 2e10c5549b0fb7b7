"""`bastion check`: what the config will do once served, and the mistakes that load fine.

`findings` is pure (config, rules and what is known about keys and names in, lines out), so
each warning has a unit test; `resolve` is the one part that asks the system (DNS).
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bastion.config import BastionConfig, TargetConfig
from bastion.core.rules import Principals, RuleSet

Resolved = Mapping[str, "list[str] | str"]  # host -> its addresses, or why it does not resolve


@dataclass(frozen=True)
class Finding:
    warning: bool
    text: str

    def __str__(self) -> str:
        return f"warning: {self.text}" if self.warning else self.text


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_line(config: BastionConfig) -> str:
    host, port = config.listen_host, config.listen_port
    everywhere = {"0.0.0.0": "every IPv4 address of this machine", "::": "every address of this machine"}  # noqa: S104
    scope = everywhere.get(host, "this machine only" if host in ("127.0.0.1", "::1", "localhost") else host)
    shown = "any free port" if port == 0 else f"port {port}"
    return f"listen: ssh -J connects to {_where(host, port)} ({scope}, {shown})"


def findings(config: BastionConfig, rules: RuleSet | None, *, pinned: Callable[[TargetConfig], bool],
             resolved: Resolved) -> list[Finding]:
    """What `check` says: one line per listener and target, then warnings."""
    out = [Finding(False, _listen_line(config))]
    if config.web is not None:
        out.append(Finding(False, f"web: {_where(config.web.listen_host, config.web.listen_port)} "
                                  f"({config.web.public_url})"))
    if config.metrics is not None:
        metrics = _where(config.metrics.listen_host, config.metrics.listen_port)
        out.append(Finding(False, f"metrics: http://{metrics}/metrics, /healthz, /readyz"))
    out.append(Finding(False, f"recordings: {config.recordings_dir}" if config.recording.enabled
                       else "recordings: off"))
    out.append(Finding(False, f"audit log: {config.log_file or 'stderr'}"))
    members, reach = _group_members(config)
    sso = config.oidc is not None
    for target in config.targets.values():
        addresses = resolved.get(target.host)
        shown = f"{target.name} -> {_where(target.host, target.port)}"
        if isinstance(addresses, list) and addresses != [target.host]:
            shown += f" ({', '.join(addresses)})"
        out.append(Finding(False, f"target {shown}, logins {', '.join(target.logins) or 'none'}"))
        if isinstance(addresses, str):
            out.append(Finding(True, f"target {target.name}: {target.host} does not resolve ({addresses}); "
                                     "sessions to it will fail"))
        if not pinned(target):
            out.append(Finding(True, f"target {target.name}: no pinned host key (host_key, host_ca or "
                                     f"`bastion targets scan {target.name}`); sessions to it will fail"))
        if not target.logins:
            out.append(Finding(True, f"target {target.name}: no logins; nobody can log into it"))
        reachable = target.users & {*config.users, *config.machines} or any(target.groups & set(reach))
        if not reachable and not sso:
            out.append(Finding(True, f"target {target.name}: no configured user may reach it "
                                     f"(users {sorted(target.users)}, groups {sorted(target.groups)})"))
    if rules is not None:
        out.extend(_rule_findings(config, rules, members, reach, sso))
    return out


def _group_members(config: BastionConfig) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each group's users (who may approve), and its users and machines (who a target or a
    rule's scope reaches)."""
    members: dict[str, set[str]] = {}
    for user in config.users.values():
        for group in user.groups:
            members.setdefault(group, set()).add(user.name)
    reach = {group: set(names) for group, names in members.items()}
    for machine in config.machines.values():
        for group in machine.groups:
            reach.setdefault(group, set()).add(machine.name)
    return members, reach


def _rule_findings(config: BastionConfig, rules: RuleSet, members: Mapping[str, set[str]],
                   reach: Mapping[str, set[str]], sso: bool) -> list[Finding]:
    out = []
    logins = {login for target in config.targets.values() for login in target.logins}
    names = list(config.targets)
    for rule in rules.rules:
        where = f"rule {rule.name!r} (line {rule.line})" if rule.line else f"rule {rule.name!r}"
        if rule.targets and not any(fnmatch.fnmatchcase(n, g) for n in names for g in rule.targets):
            out.append(Finding(True, f"{where} can never match: no target is named "
                                     f"{', '.join(rule.targets)}"))
        elif rule.logins and not any(fnmatch.fnmatchcase(n, g) for n in logins for g in rule.logins):
            out.append(Finding(True, f"{where} can never match: no target has a login "
                                     f"{', '.join(rule.logins)}"))
        elif rule.principals is Principals.MACHINES and not config.machines:
            out.append(Finding(True, f"{where} can never match: it is for machines and none is configured"))
        elif (rule.users or rule.groups) and not sso and not (
                rule.users & (set(config.users) | set(config.machines)) or rule.groups & set(reach)):
            who = sorted(rule.users | {f"in group {g}" for g in rule.groups})
            out.append(Finding(True, f"{where} can never match: no configured user is {' or '.join(who)}"))
        for group in rule.approvers:
            if group not in members:
                then = ("only users signing in with single sign-on who carry it can approve" if sso
                        else "nobody can approve, and its requests will expire")
                out.append(Finding(True, f"{where}: approver group {group!r} has no configured members; "
                                         f"{then}"))
        if rule.approvers and rule.approvals > 1:
            approvers = set().union(*(members.get(g, set()) for g in rule.approvers))
            if len(approvers) < rule.approvals and not sso:
                out.append(Finding(True, f"{where} needs {rule.approvals} approvers but groups "
                                         f"{', '.join(rule.approvers)} have {len(approvers)} members"))
    return out


def resolve(hosts: list[str], timeout: float = 5.0) -> dict[str, list[str] | str]:
    """Each host's addresses (as the bastion will connect to them), or why it does not resolve;
    all at once, each given `timeout` seconds."""

    def one(host: str) -> list[str] | str:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            return str(exc.strerror or exc)
        return sorted({str(info[4][0]) for info in infos})

    result: dict[str, list[str] | str] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    futures = {host: pool.submit(one, host) for host in set(hosts)}
    for host, future in futures.items():
        try:
            result[host] = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            result[host] = f"no answer within {timeout:.0f} s"
    pool.shutdown(wait=False)  # a resolver that hangs is not waited for
    return result
