"""The audit log's events: each defined once, with its fields (see `recorder.log.LogEvent`).

A field that is None is left out of the line. A `StoredCommand` field becomes the command's
text under the field's name, plus `NAME_length` and `NAME_sha256` when only its head is kept.
The recorder's own events (`recording_failed`, `index_failed`, `recorder_worker_exited`) are
defined in `recorder.log`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.core.rules import Action
from bastion.core.stored import StoredCommand
from bastion.state.approvals import ApprovalState, Decision
from recorder.log import LogEvent
from recorder.transfers import SessionKind

# -- connections and sign-in over ssh -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConnectionOpened(LogEvent):
    name = "connection_opened"
    client: str


@dataclass(frozen=True, kw_only=True)
class ConnectionClosed(LogEvent):
    name = "connection_closed"
    client: str
    user: str | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectionsRefused(LogEvent):
    """Connections closed before any SSH was spoken, over a `[limits]` setting: the first at once,
    then one line per interval while refusals go on, with their counts."""

    name = "connections_refused"
    count: int
    limits: Mapping[str, int]  # refusals by the setting that bit
    clients: Mapping[str, int]  # the addresses refused most, with their counts
    unauthenticated: int  # connections waiting for sign-in when the line was written


@dataclass(frozen=True, kw_only=True)
class AuthFailed(LogEvent):
    name = "auth_failed"
    client: str
    user: str
    method: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AuthSucceeded(LogEvent):
    name = "auth_succeeded"
    client: str
    user: str
    method: str
    client_version: str
    workload: Mapping[str, str] | None = None  # a machine's job: repository, ref, run id, ...


@dataclass(frozen=True, kw_only=True)
class SSOLoginStarted(LogEvent):
    name = "sso_login_started"
    client: str
    user: str
    user_code: str


@dataclass(frozen=True, kw_only=True)
class SSOLogin(LogEvent):
    name = "sso_login"
    user: str
    client: str
    identity: str
    groups: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class SSOLoginFailed(LogEvent):
    name = "sso_login_failed"
    user: str
    client: str
    reason: str
    identity: str | None = None


@dataclass(frozen=True, kw_only=True)
class SSOLoginAbandoned(LogEvent):
    """The client went away with the device code still open."""

    name = "sso_login_abandoned"
    user: str
    client: str
    user_code: str


@dataclass(frozen=True, kw_only=True)
class CertificateIssued(LogEvent):
    name = "certificate_issued"
    user: str
    identity: str
    serial: int
    key_id: str
    expires: int
    client: str
    groups: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class CertificateRefused(LogEvent):
    name = "certificate_refused"
    client: str
    identity: str | None = None
    reason: str


@dataclass(frozen=True, kw_only=True)
class MachineCertificateIssued(LogEvent):
    """A machine's platform token exchanged for a login certificate."""

    name = "machine_certificate_issued"
    machine: str
    identity: str
    serial: int
    key_id: str
    expires: int
    client: str
    groups: Sequence[str]
    workload: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class MachineTokenRefused(LogEvent):
    """A token exchange refused: a forged, foreign, expired, replayed or unmatched token."""

    name = "machine_token_refused"
    client: str
    reason: str
    machine: str | None = None
    identity: str | None = None
    workload: Mapping[str, str] | None = None


# -- jumps and sessions -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JumpAllowed(LogEvent):
    name = "jump_allowed"
    client: str
    user: str
    target: str
    session: str


@dataclass(frozen=True, kw_only=True)
class JumpRefused(LogEvent):
    name = "jump_refused"
    client: str
    user: str
    destination: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SessionLimitReached(LogEvent):
    """A jump refused because its user already holds `limit` sessions (`limits.sessions_per_user`)."""

    name = "session_limit_reached"
    client: str
    user: str
    destination: str
    sessions: int
    limit: int


@dataclass(frozen=True, kw_only=True)
class LoginRefused(LogEvent):
    name = "login_refused"
    reason: str
    user: str
    target: str
    login: str
    session: str


@dataclass(frozen=True, kw_only=True)
class UpstreamFailed(LogEvent):
    name = "upstream_failed"
    error: str  # the BastionError's code
    reason: str
    hint: str | None = None
    user: str
    target: str
    login: str
    session: str


@dataclass(frozen=True, kw_only=True)
class UpstreamConnected(LogEvent):
    name = "upstream_connected"
    key_id: str
    serial: int
    user: str
    target: str
    login: str
    session: str
    attempts: int | None = None  # when the target dropped earlier attempts (its MaxStartups)


@dataclass(frozen=True, kw_only=True)
class SessionStarted(LogEvent):
    name = "session_started"
    session: str
    user: str
    target: str
    login: str
    client: str
    key_id: str
    workload: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class SessionEnded(LogEvent):
    name = "session_ended"
    session: str
    user: str
    target: str
    login: str
    kind: SessionKind
    command: str | None = None  # masked as it is logged
    subsystem: str | None = None
    key_id: str
    bytes_in: int
    bytes_out: int
    duration: float
    exit_status: int | None = None
    exit_signal: str | None = None
    markers: Mapping[str, int] | None = None
    reason: str | None = None
    workload: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class DataStream(LogEvent):
    """A stream of a session without a pty was data: passed unmasked, recorded as its hash."""

    name = "data_stream"
    session: str
    stream: str  # stdout, stderr or stdin
    direction: str  # download (to the user) or upload (to the target)
    reason: str  # what made it data, e.g. "NUL at byte 0"
    size: int  # bytes
    sha256: str
    seconds: float
    complete: bool  # its end (EOF) was seen before the session ended


@dataclass(frozen=True, kw_only=True)
class SecretDrawn(LogEvent):
    """A secret assembled on a pty session's screen that masking could not draw over (its
    characters sit where the cursor cannot go back: see docs/masking.md). Never the value."""

    name = "secret_drawn"
    session: str
    detector: str
    where: str  # the row, relative to the cursor's


@dataclass(frozen=True, kw_only=True)
class LiveSessionUpdateFailed(LogEvent):
    """The state database's list of live sessions could not be updated (the session goes on)."""

    name = "live_session_update_failed"
    session: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SessionRevoked(LogEvent):
    name = "session_revoked"
    session: str
    user: str


@dataclass(frozen=True, kw_only=True)
class SessionKilled(LogEvent):
    """A live session ended on request (`bastion sessions kill`, or over ssh to the bastion)."""

    name = "session_killed"
    session: str
    user: str
    target: str
    by: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SessionKillRequested(LogEvent):
    """Someone asked for a live session to end; the instance serving it ends it."""

    name = "session_kill_requested"
    session: str
    by: str
    reason: str
    via: str  # "cli" or "ssh"


@dataclass(frozen=True, kw_only=True)
class OwnCommand(LogEvent):
    """One of the bastion's own commands, run over ssh to the bastion itself."""

    name = "own_command"
    user: str
    client: str
    command: str  # "sessions list", "approvals approve"...
    about: str | None = None  # the session or request it is about


@dataclass(frozen=True, kw_only=True)
class SessionViewed(LogEvent):
    """Someone watched or replayed a session (who watched whom), or opened the session browser."""

    name = "session_viewed"
    by: str
    session: str | None  # None: the browser was opened
    owner: str | None  # whose session; for the browser, whose sessions it lists (None: everyone's)
    how: str  # "follow", "play" or "review"
    live: bool | None = None  # the session was still going on


@dataclass(frozen=True, kw_only=True)
class ModeratorJoined(LogEvent):
    name = "moderator_joined"
    session: str
    by: str


@dataclass(frozen=True, kw_only=True)
class ModeratorLeft(LogEvent):
    name = "moderator_left"
    session: str
    by: str


@dataclass(frozen=True, kw_only=True)
class ModeratorAwaited(LogEvent):
    """A moderated session waits for a moderator (the chat was told, unless `notify_failed`)."""

    name = "moderator_awaited"
    session: str
    user: str
    target: str
    login: str
    moderated_by: tuple[str, ...]
    scopes: tuple[str, ...]  # "target" (the config) and the rules file's [[moderation]] names
    notify_failed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ModerationCancelled(LogEvent):
    """The user gave up waiting for a moderator (Ctrl-C); nothing reached the target."""

    name = "moderation_cancelled"
    session: str
    user: str
    target: str
    login: str


@dataclass(frozen=True, kw_only=True)
class OwnCommandRefused(LogEvent):
    """A shell, an unknown command, a subsystem or a command the user's role does not allow."""

    name = "own_command_refused"
    user: str
    client: str
    command: str  # as asked, escaped and bounded
    reason: str


@dataclass(frozen=True, kw_only=True)
class ForwardRefused(LogEvent):
    name = "forward_refused"
    session: str
    user: str
    target: str
    destination: str


# -- screening and approvals ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommandDecision(LogEvent):
    """A command, sftp operation or forward, decided by the rules."""

    name = "command_decision"
    session: str | None = None
    user: str
    target: str
    login: str | None = None
    kind: str
    command: StoredCommand
    operation: str | None = None
    action: Action
    rule: str | None
    part: StoredCommand | None = None  # the part of the command that decided, when not all of it
    unsure: bool | None = None
    why: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalRequested(LogEvent):
    name = "approval_requested"
    request: str
    session: str
    user: str
    target: str
    command: StoredCommand
    rule: str | None


@dataclass(frozen=True, kw_only=True)
class ApprovalNotified(LogEvent):
    name = "approval_notified"
    request: str
    session: str
    failed: Sequence[str] | None = None  # the destinations that could not be told, and why


@dataclass(frozen=True, kw_only=True)
class ApprovalEnded(LogEvent):
    """The events a wait for approval ends with; `by`: the approvers whose decision ended it."""

    request: str
    session: str
    by: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalApproved(ApprovalEnded):
    name = "approval_approved"


@dataclass(frozen=True, kw_only=True)
class ApprovalDenied(ApprovalEnded):
    name = "approval_denied"


@dataclass(frozen=True, kw_only=True)
class ApprovalExpired(ApprovalEnded):
    name = "approval_expired"


@dataclass(frozen=True, kw_only=True)
class ApprovalCancelled(ApprovalEnded):
    """Cancelled by the requester's side (`user`, `reason`), or found cancelled while waiting."""

    name = "approval_cancelled"
    user: str | None = None
    reason: str | None = None


# How a wait for approval ended, by the request's state then.
APPROVAL_ENDED: Mapping[ApprovalState, type[ApprovalEnded]] = {
    ApprovalState.APPROVED: ApprovalApproved,
    ApprovalState.DENIED: ApprovalDenied,
    ApprovalState.EXPIRED: ApprovalExpired,
    ApprovalState.CANCELLED: ApprovalCancelled,
}


# -- instances sharing the state ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InstanceStarted(LogEvent):
    """This instance listens and holds its lease in the state database."""

    name = "instance_started"
    instance: str
    lease: int
    state: str  # "sqlite" or "postgresql"


@dataclass(frozen=True, kw_only=True)
class InstanceKeysMismatch(LogEvent):
    name = "instance_keys_mismatch"
    instance: str
    keys: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class InstanceLeaseLost(LogEvent):
    """The lease had run out (the database was out of reach for longer than it): another
    instance may have cancelled this one's pending approvals. It holds a new lease now."""

    name = "instance_lease_lost"
    instance: str


@dataclass(frozen=True, kw_only=True)
class OrphansCleaned(LogEvent):
    """Work of instances whose lease ran out, cleaned up by this one."""

    name = "orphans_cleaned"
    instance: str
    approvals_cancelled: Sequence[str]
    live_sessions: int
    recordings: int  # left "live" by a killed instance, now incomplete (each a recording_incomplete)


@dataclass(frozen=True, kw_only=True)
class StateUnavailableEvent(LogEvent):
    """The state database stopped answering (or answers again, `recovered`)."""

    name = "state_unavailable"
    reason: str
    recovered: bool | None = None


@dataclass(frozen=True, kw_only=True)
class RulesReloaded(LogEvent):
    name = "rules_reloaded"
    rules: int
    file: str | None = None


@dataclass(frozen=True, kw_only=True)
class RulesReloadFailed(LogEvent):
    name = "rules_reload_failed"
    reason: str
    kept: str | None = None  # the rules file still in force


@dataclass(frozen=True, kw_only=True)
class WorkerExited(LogEvent):
    """A worker process of `serve` (see `workers`) ended on its own; it is started again."""

    name = "worker_exited"
    worker: int
    pid: int
    status: int  # its exit status, or minus the signal that ended it
    lived: float  # seconds
    restart_in: float  # seconds


@dataclass(frozen=True, kw_only=True)
class ConfigReloadFailed(LogEvent):
    name = "config_reload_failed"
    reason: str


@dataclass(frozen=True, kw_only=True)
class ReloadNeedsRestart(LogEvent):
    name = "reload_needs_restart"
    settings: Sequence[str]


# -- the web service ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WebStarted(LogEvent):
    name = "web_started"
    listen: str
    url: str
    sign_in: str | None = None  # the OpenID provider


@dataclass(frozen=True, kw_only=True)
class WebRequestRefused(LogEvent):
    name = "web_request_refused"
    method: str
    path: str
    reason: str
    client: str | None = None
    request_id: str | None = None
    by: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalViewed(LogEvent):
    name = "approval_viewed"
    request: str
    by: str
    identity: str
    state: ApprovalState


@dataclass(frozen=True, kw_only=True)
class ApprovalDecision(LogEvent):
    name = "approval_decision"
    request: str
    by: str
    identity: str
    decision: Decision
    state: ApprovalState
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalDecisionRefused(LogEvent):
    name = "approval_decision_refused"
    request: str
    by: str
    identity: str
    decision: Decision
    reason: str
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class WebSignedIn(LogEvent):
    name = "web_signed_in"
    user: str
    identity: str
    groups: Sequence[str]
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class WebSignInFailed(LogEvent):
    name = "web_sign_in_failed"
    reason: str
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class WebSignedOut(LogEvent):
    name = "web_signed_out"
    user: str
    identity: str


# -- the bastion ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BastionStarted(LogEvent):
    name = "bastion_started"
    listen: str
    targets: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class BastionStopping(LogEvent):
    name = "bastion_stopping"
    live_sessions: int
    grace: float


@dataclass(frozen=True, kw_only=True)
class BastionStopped(LogEvent):
    name = "bastion_stopped"


@dataclass(frozen=True, kw_only=True)
class OpenFilesLimit(LogEvent):
    """RLIMIT_NOFILE at start: the soft limit raised to the hard one. Each session holds about
    FDS_PER_SESSION descriptors, so `sessions` is roughly how many the process can hold."""

    name = "open_files_limit"
    soft: int
    hard: int
    was: int
    sessions: int
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class LogReopenFailed(LogEvent):
    """SIGUSR1/SIGHUP could not open the log file again; lines go on to the old one."""

    name = "log_reopen_failed"
    reason: str
