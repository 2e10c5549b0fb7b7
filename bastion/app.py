"""Build a running bastion's shared state from its config: the one place stages are wired."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable

from bastion import metrics
from bastion.auth.directory import CHANNEL_REVOKED, Directory
from bastion.auth.machines import Machines
from bastion.auth.oidc import OIDCClient
from bastion.auth.sso import SSO
from bastion.config import BastionConfig, MaskingSinks, TargetConfig, changed_settings, load_config
from bastion.core.policy import Identity
from bastion.core.rules import Action, CommandRequest, ModerationNeed
from bastion.core.stored import stored_command
from bastion.errors import BastionError, ConfigError
from bastion.rules_file import RulesHolder
from bastion.ssh.server import BastionState
from bastion.stages.decisions import Notify, ScreeningContext
from bastion.stages.machinegate import ShellGateStage
from bastion.stages.masking import MaskingStage
from bastion.stages.moderation import ModerationStage, NotifyModerators, need_from
from bastion.stages.pipeline import SessionInfo, SessionStage
from bastion.stages.recording import KeyframeBuilds, RecordingStage
from bastion.stages.screening import ScreeningStage
from bastion.stages.sftpgate import SftpGateStage
from bastion.state.approvals import CHANNEL as APPROVALS_CHANNEL
from bastion.state.approvals import ApprovalRequest, ApprovalStore
from bastion.state.audit import AuditLog
from bastion.state.db import Listener, StateDatabase, StateError, describe, is_url
from bastion.state.dbthread import DatabaseThread
from bastion.state.events import (
    CommandDecision,
    ConfigReloadFailed,
    InstanceKeysMismatch,
    InstanceLeaseLost,
    InstanceStarted,
    LiveSessionUpdateFailed,
    OrphansCleaned,
    ReloadNeedsRestart,
    RulesReloaded,
    RulesReloadFailed,
    StateUnavailableEvent,
)
from bastion.state.instances import CHANNEL_RELOAD, Instances, new_instance_id, secret_fingerprint
from bastion.state.keys import KeyStore
from bastion.state.live import Registry
from bastion.web.cookies import COOKIE_KEY, SignedCookies
from bastion.web.metrics import Check, MetricsService
from bastion.web.notify import ModeratorWanted, Notifier
from bastion.web.service import WebService
from recorder.index import RecordingIndex, index_location
from recorder.log import LogEvent
from recorder.reconcile import reconcile
from recorder.signing import RecordingKey
from recorder.storage import LocalDirectoryStore
from recorder.writer import Recorder

RECORDING_KEY = "recording_key"


def build_state(config: BastionConfig, keys: KeyStore, *, instance: str | None = None,
                worker: int = 0) -> BastionState:
    """Everything a running bastion shares. Opening the stores only reads the database (and
    migrates its schema); what this instance writes of its own starts once it listens.
    `worker`: which of the config's worker processes this is (each is an instance)."""
    instance = instance or new_instance_id()
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
        index = RecordingIndex(index_location(root, config.state_url))
        recorder = Recorder(
            store,
            index,
            RecordingKey.load_or_create(config.keys_dir / RECORDING_KEY),
            version=settings.version,
            flush_interval=settings.flush_interval,
            checkpoint_interval=settings.checkpoint_interval,
            process=True,
            log=audit.write,
            instance=instance,
        )
        record_only = masking if masking.enabled and masking.sinks is MaskingSinks.RECORDING else None
        keyframes = KeyframeBuilds(root, index.path)  # long sessions: the player's keyframes ahead
        recording_stage = lambda: [  # noqa: E731
            RecordingStage(recorder, settings, audit, text_masker=text_masker,
                           masker=record_only.make_masker() if record_only else None,
                           input_masker=masking.make_masker() if masking.enabled else None,
                           keyframes=keyframes)
        ]
        state.on_start.append(lambda loop: setattr(recorder, "loop", loop))
        state.on_start.append(keyframes.start)
        state.on_stop.append(keyframes.stop)
        state.on_stop.append(recorder.stop)
    else:
        index = None
        recorder = None
        recording_stage = list
    directory = Directory(config.state)
    state.sso = SSO(config, keys, directory, audit)
    state.machines = Machines(config, keys, directory, audit) if config.machines else None
    registry = Registry(
        config.state, instance,
        lambda session, reason: audit.write(LiveSessionUpdateFailed(session=session, reason=reason)),
    )
    state.registry = registry
    # Always: a reload may bring a rules file (and the SSO directory opens this database anyway).
    approvals = ApprovalStore(config.state, masker=text_masker, instance=instance)
    state.approvals = approvals
    notify, notify_moderators = _web(config, state, approvals)
    if config.metrics is not None:
        _metrics(config, state, approvals, recorder, worker)
    holder = RulesHolder(path=config.rules_file)
    screening = _screening(config, state, approvals, notify, holder)
    state.services.append(InstanceService(
        config, state, Instances(config.state, instance, lease=config.state_lease),
        approvals=approvals, registry=registry, index=index))
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
    # Moderation next: its gate waits for a moderator before anything reaches the target.
    registry = state.registry
    assert registry is not None
    # Always there: a rules file (re)loaded later may bring [[moderation]] scopes.
    need = need_from(config.targets, lambda: holder.rules.moderations)

    def moderation() -> list[SessionStage]:
        return [ModerationStage(registry.moderators, need, require=registry.require_moderators,
                                notify=notify_moderators, audit=audit)]
    state.stages = lambda: [ShellGateStage(), *moderation(), *masking_stage(), *recording_stage(),
                            *screening()]
    return state


# The recorder's failures, counted from the events that report them.
RECORDER_FAILURES = {"recording_failed": "recording", "index_failed": "index",
                     "recorder_worker_exited": "worker"}


def _metrics(config: BastionConfig, state: BastionState, approvals: ApprovalStore,
             recorder: Recorder | None, worker: int) -> None:
    """The figures the metrics read from the running bastion, the readiness checks, and the
    metrics listener."""
    live = metrics.LIVE
    live.connections = lambda: len(state.connections)

    def by_kind() -> dict[str, int]:
        return dict(Counter(relay.info.kind.value for relay in state.relays))

    def bytes_total() -> tuple[int, int]:
        ended_in, ended_out = state.ended_bytes
        return (ended_in + sum(r.bytes_in for r in state.relays),
                ended_out + sum(r.bytes_out for r in state.relays))

    live.sessions_by_kind, live.bytes_total = by_kind, bytes_total
    pending = [0]
    live.approvals_pending = lambda: pending[0]

    async def count_pending() -> None:
        pending[0] = len(await approvals.thread.run(approvals.pending))

    def failure(event: LogEvent) -> None:
        if (what := RECORDER_FAILURES.get(event.name)) is not None:
            metrics.RECORDER_FAILURES.labels(what=what).inc()

    state.audit.observers.append(failure)
    if recorder is not None:
        live.recorder = recorder.figures
    checks = readiness(config, state, recorder)
    state.services.append(MetricsService(config, checks, refresh=[count_pending], worker=worker))


def readiness(config: BastionConfig, state: BastionState, recorder: Recorder | None) -> dict[str, Check]:
    """What /readyz asks: each check is None when well, else what is wrong."""

    async def keys() -> str | None:
        try:
            state.keys.bastion_host_key  # noqa: B018 - loads them if they are not yet
        except BastionError as exc:
            return exc.reason
        return None

    async def state_db() -> str | None:
        location = config.state

        def probe() -> None:
            if is_url(location):
                db = StateDatabase.open(location)
                try:
                    db.execute("SELECT 1").fetchone()
                finally:
                    db.close()
                return
            # Never SqliteDatabase here: it would create a file that went missing.
            file = sqlite3.connect(f"file:{location}?mode=rw", uri=True, timeout=2)
            try:
                file.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                file.close()

        try:
            await asyncio.to_thread(probe)
        except (sqlite3.Error, BastionError) as exc:
            return f"{describe(location)}: {getattr(exc, 'reason', exc)}"
        return None

    async def recorder_worker() -> str | None:
        lost = recorder.worker_lost if recorder is not None else None
        return f"the recorder process exited ({lost}); the next session starts a new one" if lost else None

    async def recordings() -> str | None:
        def probe() -> None:
            with tempfile.NamedTemporaryFile(dir=config.recordings_dir, prefix=".readyz-"):
                pass

        try:
            await asyncio.to_thread(probe)
        except OSError as exc:
            return f"{config.recordings_dir} is not writable: {exc.strerror or exc}"
        return None

    async def listening() -> str | None:
        return None if state.serving else "the SSH listener is not accepting (starting or draining)"

    checks: dict[str, Check] = {"keys": keys, "state_db": state_db, "listening": listening}
    if config.recording.enabled:
        checks |= {"recorder": recorder_worker, "recordings_dir": recordings}
    return checks


def _web(config: BastionConfig, state: BastionState,
         approvals: ApprovalStore) -> tuple[Notify | None, NotifyModerators | None]:
    """The approval pages (when [web] is set) and the chat notifier: approvers get a link to
    them, moderators the command that joins a session."""
    if config.web is None:
        return None, None
    service = WebService(config, approvals, state.audit,
                         SignedCookies.load_or_create(config.keys_dir / COOKIE_KEY),
                         OIDCClient(config.oidc) if config.oidc else None, masker=state.text_masker,
                         sso=state.sso, machines=state.machines)
    state.services.append(service)
    if not config.notify:
        return None, None
    notifier = Notifier(config.notify, masker=state.text_masker)

    async def notify(request: ApprovalRequest) -> list[str]:
        failures = await notifier.notify(request, service.link(request))
        return [f"{f.destination}: {f.reason}" for f in failures]

    async def notify_moderators(info: SessionInfo, need: ModerationNeed) -> list[str]:
        failures = await notifier.notify_moderators(ModeratorWanted(
            session=info.session_id, user=info.user, target=info.target, login=info.login,
            moderated_by=tuple(sorted(need.moderated_by)), timeout=need.timeout))
        return [f"{f.destination}: {f.reason}" for f in failures]

    return notify, notify_moderators


def _screening(config: BastionConfig, state: BastionState, approvals: ApprovalStore,
               notify: Notify | None, holder: RulesHolder) -> Callable[[], list[SessionStage]]:
    """The screening stage for sessions while a rules file is set; SIGHUP reloads it."""
    holder.reload()  # a bad rules file stops the start, naming file, line and reason
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
        metrics.SCREENING_DECISIONS.labels(action=verdict.action.value, rule=verdict.rule or "").inc()
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


# -- one instance among several ----------------------------------------------------------------------

SHARED_KEYS = ("bastion_host", "host_ca", "user_ca", "login_ca")


def key_fingerprints(config: BastionConfig, keys: KeyStore) -> dict[str, str]:
    """What every instance behind one address must hold alike: the host key users pinned, the
    CAs, the recording key and the web cookie key (those two when present)."""
    fingerprints = {name: keys.key(name).get_fingerprint() for name in SHARED_KEYS}
    recording = config.keys_dir / RECORDING_KEY
    if recording.exists():
        fingerprints[RECORDING_KEY] = RecordingKey.load_or_create(recording).fingerprint
    cookie = config.keys_dir / COOKIE_KEY
    if cookie.exists():
        fingerprints[COOKIE_KEY] = secret_fingerprint(COOKIE_KEY, cookie.read_bytes())
    return fingerprints


class InstanceService:
    """This instance's lease and its share of cleaning up after instances that died.

    Before the listener: refuse keys that differ from the other instances' (reading only).
    Once listening (a second instance started by mistake fails on the port first and writes
    nothing): register the lease, record the keys if first, then every lease/3 s renew it and
    clean up the work of instances whose lease ran out: their pending approvals are cancelled,
    their live-session rows removed, their recordings still "live" marked incomplete. On
    PostgreSQL a LISTEN connection wakes held commands, revocation checks and reloads at once.
    """

    def __init__(self, config: BastionConfig, state: BastionState, instances: Instances, *,
                 approvals: ApprovalStore, registry: Registry, index: RecordingIndex | None) -> None:
        self.config, self.state, self.instances = config, state, instances
        self.approvals, self.registry, self.index = approvals, registry, index
        self.thread = DatabaseThread("instance-db")
        self._index_thread = DatabaseThread("index-db")
        self._task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        state.on_listening.append(self.listening)

    async def start(self) -> None:
        fingerprints = key_fingerprints(self.config, self.state.keys)
        mismatches = await self.thread.run(self.instances.key_mismatches, fingerprints)
        if mismatches:
            self.state.audit.write(InstanceKeysMismatch(instance=self.instances.id,
                                                        keys=[str(m) for m in mismatches]))
            raise StateError(f"this instance's keys differ from the other instances' ({mismatches[0]});"
                             " every instance must use the same keys_dir (docs: Running several instances)")

    async def listening(self) -> None:
        await self.thread.run(self.instances.register)
        mismatches = await self.thread.run(self.instances.record_keys,
                                           key_fingerprints(self.config, self.state.keys))
        if mismatches:  # another instance recorded different keys a moment before us
            await self.thread.run(self.instances.stopped)
            raise StateError(f"this instance's keys differ from the other instances' ({mismatches[0]})")
        self.state.audit.write(InstanceStarted(instance=self.instances.id, lease=self.config.state_lease,
                                               state=self.instances.db.backend.value))
        loop = asyncio.get_running_loop()
        if self.config.state_url is not None:
            channels = (APPROVALS_CHANNEL, CHANNEL_REVOKED, CHANNEL_RELOAD)
            self._listener = Listener(self.config.state_url, channels,
                                      lambda channel, payload: self._from_thread(loop, channel, payload))
            self._listener.start()
        await self.sweep()
        self._task = loop.create_task(self._beat())

    def _from_thread(self, loop: asyncio.AbstractEventLoop, channel: str, payload: str) -> None:
        loop.call_soon_threadsafe(self._heard, channel, payload)

    def _heard(self, channel: str, payload: str) -> None:
        if channel == APPROVALS_CHANNEL:
            self.approvals.heard(payload)
        elif channel == CHANNEL_REVOKED and self.state.sso is not None:
            sso = self.state.sso
            sso.poke()
            # This host's copy of the revocation list follows a revocation made anywhere.
            sso.directory.thread.later(self._krl_failed, sso.publish_krl)
        elif channel == CHANNEL_RELOAD:
            for hook in self.state.reload_hooks:
                hook()

    def _krl_failed(self, exc: BaseException) -> None:
        self.state.audit.write(StateUnavailableEvent(reason=f"revocation list not rewritten: {exc}"))

    async def _beat(self) -> None:
        interval = self.config.state_lease / 3
        lost = False
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self.thread.run(self.instances.heartbeat)
                if not renewed:
                    self.state.audit.write(InstanceLeaseLost(instance=self.instances.id))
                await self.sweep()
                if lost:
                    self.state.audit.write(StateUnavailableEvent(reason="", recovered=True))
                lost = False
            except StateError as exc:
                if not lost:
                    self.state.audit.write(StateUnavailableEvent(reason=exc.reason))
                lost = True

    async def sweep(self) -> None:
        """Clean up after instances whose lease ran out; never touches a live instance's rows."""
        approvals, registry = self.approvals, self.registry
        await self.thread.run(self.instances.end_gone_here)
        cancelled = await approvals.thread.run(approvals.cancel_orphans)
        sessions = await registry.thread.run(registry.store.clear_orphans)
        recordings = 0
        if self.index is not None:
            alive = await self.thread.run(self.instances.alive)
            recordings = await self._index_thread.run(reconcile, self.index, self.state.audit.write, alive)
        await self.thread.run(self.instances.forget_expired)
        if cancelled or sessions or recordings:
            self.state.audit.write(OrphansCleaned(instance=self.instances.id, approvals_cancelled=cancelled,
                                                  live_sessions=sessions, recordings=recordings))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            self._listener.stop()
        with contextlib.suppress(StateError):
            await self.registry.thread.run(self.registry.store.clear_instance, self.instances.id)
            await self.thread.run(self.instances.stopped)
