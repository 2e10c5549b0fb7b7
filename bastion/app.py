"""Build a running bastion's shared state from its config: the one place stages are wired."""

from __future__ import annotations

from collections.abc import Callable

from bastion.auth.directory import Directory
from bastion.auth.machines import Machines
from bastion.auth.oidc import OIDCClient
from bastion.auth.sso import SSO
from bastion.config import BastionConfig, MaskingSinks, TargetConfig, changed_settings, load_config
from bastion.core.policy import Identity
from bastion.core.rules import Action, CommandRequest
from bastion.core.stored import stored_command
from bastion.errors import BastionError, ConfigError
from bastion.rules_file import RulesHolder
from bastion.ssh.server import BastionState
from bastion.stages.decisions import Notify, ScreeningContext
from bastion.stages.machinegate import ShellGateStage
from bastion.stages.masking import MaskingStage
from bastion.stages.pipeline import SessionStage
from bastion.stages.recording import RecordingStage
from bastion.stages.screening import ScreeningStage
from bastion.stages.sftpgate import SftpGateStage
from bastion.state.approvals import ApprovalRequest, ApprovalStore
from bastion.state.audit import AuditLog
from bastion.state.events import (
    ApprovalsCancelledAtStart,
    CommandDecision,
    ConfigReloadFailed,
    LiveSessionUpdateFailed,
    ReloadNeedsRestart,
    RulesReloaded,
    RulesReloadFailed,
)
from bastion.state.keys import KeyStore
from bastion.state.live import Registry
from bastion.web.cookies import COOKIE_KEY, SignedCookies
from bastion.web.notify import Notifier
from bastion.web.service import WebService
from recorder.index import RecordingIndex
from recorder.reconcile import reconcile
from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder

RECORDING_KEY = "recording_key"


def build_state(config: BastionConfig, keys: KeyStore) -> BastionState:
    masking = config.masking
    # What stored and shown commands are masked with: the configured detectors, even with the
    # streams' masking off (a stored secret would outlive the session).
    text_masker = masking.text_masker()
    audit = AuditLog(path=config.log_file, masker=text_masker)
    state = BastionState(config=config, keys=keys, audit=audit, text_masker=text_masker)
    recording_stage: Callable[[], list[SessionStage]]
    settings = config.recording
    if settings.enabled:
        root = config.recordings_dir
        store = LocalDirectoryStore(root)
        store.prepare()
        index = RecordingIndex(root / "index.db")
        reconcile(index, audit.write)  # recordings left live by a bastion that was stopped
        recorder = Recorder(
            store,
            index,
            RecordingKey.load_or_create(config.keys_dir / RECORDING_KEY),
            version=settings.version,
            flush_interval=settings.flush_interval,
            checkpoint_interval=settings.checkpoint_interval,
            process=True,
            log=audit.write,
        )
        record_only = masking if masking.enabled and masking.sinks is MaskingSinks.RECORDING else None
        recording_stage = lambda: [  # noqa: E731
            RecordingStage(recorder, settings, audit, text_masker=text_masker,
                           masker=record_only.make_masker() if record_only else None,
                           input_masker=masking.make_masker() if masking.enabled else None)
        ]
        state.on_start.append(lambda loop: setattr(recorder, "loop", loop))
        state.on_stop.append(recorder.stop)
    else:
        recording_stage = list
    directory = Directory(config.state_db)
    state.sso = SSO(config, keys, directory, audit)
    state.machines = Machines(config, keys, directory, audit) if config.machines else None
    state.registry = Registry(
        config.state_db,
        lambda session, reason: audit.write(LiveSessionUpdateFailed(session=session, reason=reason)),
    )
    # Always: a reload may bring a rules file (and the SSO directory opens this database anyway).
    approvals = ApprovalStore(config.state_db, masker=text_masker)
    state.approvals = approvals
    notify = _web(config, state, approvals)
    screening = _screening(config, state, approvals, notify)
    # Order matters. Output: the masker first, so the recorder only ever sees masked output
    # (the screener reads the real output too, through on_target_output, to see what was
    # typed; it stores only masked text). Input: the recorder records what was typed before
    # the screener holds or discards it. The sftp gate comes last: its own answers to denied
    # requests go straight to the client.
    masking_stage: Callable[[], list[SessionStage]] = (
        (lambda: [MaskingStage(masking, audit)])
        if masking.enabled and masking.sinks is MaskingSinks.BOTH else list
    )
    # The shell gate first: a machine's shell is refused before screening asks anyone.
    state.stages = lambda: [ShellGateStage(), *masking_stage(), *recording_stage(), *screening()]
    return state


def _web(config: BastionConfig, state: BastionState, approvals: ApprovalStore) -> Notify | None:
    """The approval pages (when [web] is set) and the chat notifier that links to them."""
    if config.web is None:
        return None
    service = WebService(config, approvals, state.audit,
                         SignedCookies.load_or_create(config.keys_dir / COOKIE_KEY),
                         OIDCClient(config.oidc) if config.oidc else None, masker=state.text_masker,
                         sso=state.sso, machines=state.machines)
    state.services.append(service)
    if not config.notify:
        return None
    notifier = Notifier(config.notify, masker=state.text_masker)

    async def notify(request: ApprovalRequest) -> list[str]:
        failures = await notifier.notify(request, service.link(request))
        return [f"{f.destination}: {f.reason}" for f in failures]

    return notify


def _screening(config: BastionConfig, state: BastionState, approvals: ApprovalStore,
               notify: Notify | None) -> Callable[[], list[SessionStage]]:
    """The screening stage for sessions while a rules file is set; SIGHUP reloads it."""
    holder = RulesHolder(path=config.rules_file)
    holder.reload()  # a bad rules file stops the start, naming file, line and reason
    if config.rules_file is not None:
        cancelled = approvals.cancel_all_pending()
        if cancelled:
            state.audit.write(ApprovalsCancelledAtStart(count=cancelled))
    context = ScreeningContext(rules=holder, approvals=approvals, audit=state.audit, masker=state.text_masker,
                               notify=notify)

    def reload() -> None:
        path = holder.path
        fresh = _reread(config, state)
        if fresh is not None:
            path = fresh.rules_file  # set, changed or removed: applies to sessions from now on
        try:
            rules = holder.use(path)
        except ConfigError as exc:
            state.audit.write(RulesReloadFailed(reason=exc.reason,
                                                kept=str(holder.path) if holder.path else None))
            return
        state.audit.write(RulesReloaded(rules=len(rules.rules), file=str(path) if path else None))

    def forward_gate(identity: Identity, target: TargetConfig, login: str, destination: str) -> str | None:
        if holder.path is None:
            return None
        verdict = holder.rules.decide(CommandRequest(identity.user, identity.groups, target.name, login,
                                                     "forward", destination, machine=identity.machine))
        stored = stored_command(destination, state.text_masker)
        state.audit.write(CommandDecision(user=identity.user, target=target.name, kind="forward",
                                          command=stored, action=verdict.action, rule=verdict.rule))
        if verdict.action in (Action.DENY, Action.APPROVE):
            return f"bastion: forwarding to {destination} {verdict.describe()}"
        return None

    state.reload_hooks.append(reload)
    state.forward_gate = forward_gate
    return lambda: [ScreeningStage(context), SftpGateStage(context)] if holder.path is not None else []


# What a reload applies; a change to any other setting is logged and waits for a restart.
RELOADABLE = ("rules_file",)


def _reread(config: BastionConfig, state: BastionState) -> BastionConfig | None:
    """The config file as it is now, or None if it does not load (both logged). Settings that
    differ from the running ones and are not RELOADABLE are named in `reload_needs_restart`."""
    if config.path is None:
        return None
    try:
        fresh = load_config(config.path)
    except BastionError as exc:
        state.audit.write(ConfigReloadFailed(reason=exc.reason))
        return None
    later = [name for name in changed_settings(config, fresh) if name not in RELOADABLE]
    if later:
        state.audit.write(ReloadNeedsRestart(settings=later))
    return fresh
