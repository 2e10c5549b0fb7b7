"""`bastion rules check` and `bastion approvals ...`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bastion.cli.common import failure
from bastion.config import BastionConfig
from bastion.core.masker import TextMasker
from bastion.core.rules import KINDS, Action, CommandRequest, Verdict
from bastion.errors import BastionError, ConfigError
from bastion.rules_file import load_rules
from bastion.stages.sftpgate import normal_path
from bastion.state.approvals import ApprovalError, ApprovalState, ApprovalStore, Decision
from recorder.printable import printable
from recorder.sftp import OPERATIONS as SFTP_OPERATIONS


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.group()
    def rules() -> None:
        """Command rules: test them without a session."""

    @rules.command("check", epilog="Exit status: 0 allow or log, 1 deny, 3 approve or unsure (the line "
                   "could not be read with certainty), 2 the config or the rules could not be loaded.")
    @config_option
    @click.option("--user", required=True, help="Bastion user (their groups come from the config).")
    @click.option("--target", required=True)
    @click.option("--login", required=True)
    @click.option("--kind", type=click.Choice(KINDS), default="exec", show_default=True)
    @click.option("--group", "groups", multiple=True, help="Extra group memberships (e.g. from SSO).")
    @click.argument("command", nargs=-1, required=True)
    def rules_check(config_path: Path, user: str, target: str, login: str, kind: str,
                    groups: tuple[str, ...], command: tuple[str, ...]) -> None:
        """Say which rule decides COMMAND and why (after `--`); the exit status says it too. With
        --kind sftp, COMMAND is `sftp` (the subsystem) or an operation and its paths:
        `remove /etc/hosts`."""
        try:
            config = load(config_path)
        except click.ClickException as exc:
            raise failure(CannotCheck(exc.message)) from None
        is_operation = kind == "sftp" and command[0] in SFTP_OPERATIONS
        request = CommandRequest(user, frozenset(groups), target, login, kind, " ".join(command),
                                 operation=command[0] if is_operation else "",
                                 paths=tuple(normal_path(p) for p in command[1:]) if is_operation else (),
                                 machine=user in config.machines)
        try:
            verdict = check_rules(config, request)
        except CannotCheck as exc:
            raise failure(exc) from None
        click.get_current_context().exit(check_status(verdict))

    @main.group()
    def approvals() -> None:
        """Approval requests of held commands."""

    def opened(config_path: Path) -> tuple[ApprovalStore, TextMasker]:
        """The approval store, and the masker its commands are stored and shown with."""
        config = load(config_path)
        masker = text_masker(config)
        return ApprovalStore(config.state, masker=masker), masker

    @approvals.command("list")
    @config_option
    @click.option("--all", "everything", is_flag=True, help="Any state (the last 100).")
    def approvals_list(config_path: Path, everything: bool) -> None:
        """Pending requests (or, with --all, the most recent ones in any state)."""
        approvals, masker = opened(config_path)
        requests = approvals.recent(100) if everything else approvals.pending()
        if not requests:
            click.echo("no approval requests yet" if everything else
                       "no approval requests pending (--all lists recent ones in any state)")
        for request in requests:
            left = max(0, int(request.expires - time.time()))
            status = f"{left}s left" if request.state is ApprovalState.PENDING else request.state
            click.echo(f"{request.id}  {request.requester} -> {request.login}@{request.target}  "
                       f"rule={request.rule}  needs {request.approvals_needed} of "
                       f"{','.join(request.approvers)}  {status}  {masker.mask(request.command)!r}")

    @approvals.command("show")
    @config_option
    @click.argument("request_id")
    def approvals_show(config_path: Path, request_id: str) -> None:
        """Everything about REQUEST_ID: who, where, the command, the screen, each decision."""
        approvals, masker = opened(config_path)
        show_request(approvals, request_id, masker)

    def decide(config_path: Path, request_id: str, approver: str, decision: Decision) -> None:
        config = load(config_path)
        groups = approver_groups(config, approver)
        approvals = ApprovalStore(config.state, masker=text_masker(config))
        try:
            state = approvals.decide(request_id, approver, decision, groups=groups)
        except ApprovalError as exc:
            raise failure(exc) from None
        click.echo(f"{request_id}: {decision} recorded by {approver}; request is {state}")

    @approvals.command("approve")
    @config_option
    @click.argument("request_id")
    @click.option("--as", "approver", required=True, help="The approver's bastion user name.")
    def approvals_approve(config_path: Path, request_id: str, approver: str) -> None:
        """Approve REQUEST_ID as a member of one of its approver groups."""
        decide(config_path, request_id, approver, Decision.APPROVE)

    @approvals.command("deny")
    @config_option
    @click.argument("request_id")
    @click.option("--as", "approver", required=True, help="The approver's bastion user name.")
    def approvals_deny(config_path: Path, request_id: str, approver: str) -> None:
        """Deny REQUEST_ID."""
        decide(config_path, request_id, approver, Decision.DENY)


def approver_groups(config: BastionConfig, approver: str) -> frozenset[str]:
    """The config groups `approver` approves with; a machine never approves."""
    if approver in config.machines:
        raise click.ClickException(f"{approver} is a machine: machines never approve")
    user = config.users.get(approver)
    return user.groups if user else frozenset()


class CannotCheck(BastionError):
    """`rules check` could not decide at all: its own exit status, apart from a denial's."""

    code = "cannot_check"
    exit_code = 2


def check_rules(config: BastionConfig, request: CommandRequest) -> Verdict:
    """Decide `request` with the config's rules (the user's or machine's groups from the config
    added) and say which rule decided it and why."""
    if config.rules_file is None:
        raise CannotCheck(f"{config.path} sets no rules_file")
    try:
        ruleset = load_rules(config.rules_file)
    except ConfigError as exc:
        raise CannotCheck(exc.reason) from None
    known = config.users.get(request.user) or config.machines.get(request.user)
    if known is not None:
        request = replace(request, groups=request.groups | known.groups)
    verdict = ruleset.decide(request)
    click.echo(f"{verdict.action.upper()}: {verdict.describe()}")
    if verdict.message:
        click.echo(f"  message: {verdict.message}")
    if verdict.action is Action.APPROVE:
        click.echo(f"  approvers: {', '.join(verdict.approvers)} ({verdict.approvals} needed, "
                   f"waits {verdict.timeout}s)")
    click.echo(f"  why: {verdict.why}")
    return verdict


def check_status(verdict: Verdict) -> int:
    """`rules check`'s exit status, for scripts: 0 runs, 1 denied, 3 needs a person."""
    if verdict.action is Action.DENY:
        return 1
    if verdict.action is Action.APPROVE or verdict.unsure:
        return 3
    return 0


def text_masker(config: BastionConfig) -> TextMasker:
    """What commands are shown with: the config's masking detectors (even with the streams'
    masking off)."""
    return config.masking.text_masker()


def show_request(approvals: ApprovalStore, request_id: str, masker: TextMasker) -> None:
    """The request on the approver's terminal: what the session put in it (the command, the
    screen, an identity) is shown escaped, never written raw."""
    request = approvals.get(request_id)
    if request is None:
        raise click.ClickException(f"no approval request {request_id!r}")
    state, decisions = approvals.state(request.id)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(request.created))
    click.echo(f"request   {request.id} ({state})\nuser      {request.requester}\n"
               f"target    {request.login}@{request.target}\nrule      {request.rule}\n"
               f"approvers {request.approvals_needed} of {', '.join(request.approvers)}\n"
               f"created   {when}\ncommand   {printable(masker.mask(request.command))}")
    for approver, decision, identity in decisions:
        click.echo(f"decision  {decision} by {approver}" + (f" ({printable(identity)})" if identity else ""))
    if request.screen:
        click.echo("screen when submitted:")
        for line in request.screen.split("\n"):
            click.echo(f"  | {printable(line)}")
