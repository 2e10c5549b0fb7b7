"""The SSH edges: the outer server users jump through and the inner server per jump.

These classes only ask: the config who a key belongs to, the policy whether a jump or login is
allowed, `connect_upstream` for a logged-in target connection. The session's bytes are
`SessionRelay`'s business.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, cast, runtime_checkable

import asyncssh

from bastion import metrics
from bastion.auth.certificates import login_certificate_refusal
from bastion.auth.directory import SSOError, certificate_info
from bastion.auth.machines import Machines
from bastion.auth.oidc import DeviceAuthorization, OIDCError
from bastion.auth.sso import SSO
from bastion.config import BastionConfig, TargetConfig
from bastion.core.certs import new_session_id
from bastion.core.limits import WaitingCounts, session_limit_refusal
from bastion.core.masker import TextMasker
from bastion.core.policy import Identity, decide_login, decide_target, printable_name
from bastion.core.stored import stored_command
from bastion.core.words import counted
from bastion.errors import BastionError, UpstreamAuthError
from bastion.ssh.commands import Caller, OwnCommandSession, caller_role
from bastion.ssh.forward import CountingForwarder, ForwardTunnel
from bastion.ssh.limits import StartupGuard
from bastion.ssh.relay import InnerSession, SessionRelay
from bastion.ssh.system import SystemdNotifier, raise_open_files_limit
from bastion.ssh.transport import InnerServerConnection, OuterServerConnection
from bastion.ssh.upstream import PRINCIPALS_HINT, UpstreamConnection, connect_upstream
from bastion.stages.pipeline import SessionInfo, SessionPipeline, SessionStage
from bastion.state.approvals import ApprovalStore
from bastion.state.audit import AuditLog
from bastion.state.db import StateError
from bastion.state.events import (
    AuthFailed,
    AuthSucceeded,
    BastionStarted,
    BastionStopped,
    BastionStopping,
    ConnectionClosed,
    ConnectionOpened,
    ForwardRefused,
    JumpAllowed,
    JumpRefused,
    LiveSessionUpdateFailed,
    LoginRefused,
    LogReopenFailed,
    SessionEnded,
    SessionKilled,
    SessionLimitReached,
    SessionRevoked,
    SessionStarted,
    SSOLoginAbandoned,
    SSOLoginStarted,
    UpstreamConnected,
    UpstreamFailed,
)
from bastion.state.keys import KeyStore
from bastion.state.live import KillRequest, LiveSession, Registry
from recorder.printable import printable
from recorder.transfers import SessionKind

MAX_HOST_NAME = 255  # longest destination a refusal repeats (to the client and in the audit log)
SUBSYSTEMS = frozenset({"sftp"})
# Upstream retries stop this long before the inner login times out: the user still reads why.
LOGIN_MARGIN = 5.0
LIVE_POLL = 0.5  # how often activity is written to the registry and kill requests are read
KILL_REASON_MAX = 200  # characters of a kill's reason shown to the user
StageFactory = Callable[[], list[SessionStage]]


class Service(Protocol):
    """Something else the bastion runs on its loop (the web service): started before the SSH
    listener, stopped after the sessions."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class Listener(Protocol):
    """A service with a listener of its own (web, metrics): named in the listening line."""

    name: str

    @property
    def address(self) -> str: ...


@dataclass
class BastionState:
    """What every connection shares: config, keys, log, the stage factory, live sessions."""

    config: BastionConfig
    keys: KeyStore
    audit: AuditLog
    text_masker: TextMasker  # the config's, for commands that are stored or shown (markers)
    stages: StageFactory = list
    forward_gate: Callable[[Identity, TargetConfig, str, str], str | None] | None = None
    reload_hooks: list[Callable[[], None]] = field(default_factory=list)
    on_start: list[Callable[[asyncio.AbstractEventLoop], None]] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    # Once the listener is bound (what a start writes to shared state waits for that).
    on_listening: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    sso: SSO | None = None
    machines: Machines | None = None
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    identities: dict[asyncssh.SSHServerConnection, Identity] = field(default_factory=dict)
    relays: set[SessionRelay] = field(default_factory=set)
    jumps: set[Jump] = field(default_factory=set)  # through jump_started and jump_ended
    _jumps_by_user: Counter[str] = field(default_factory=Counter)
    registry: Registry | None = None  # the live-session registry in the state database
    approvals: ApprovalStore | None = None  # for the bastion's own `approvals` commands
    live: dict[str, tuple[SessionRelay, InnerServer]] = field(default_factory=dict)  # by session id
    forwards: dict[str, tuple[ForwardTunnel, InnerServer]] = field(default_factory=dict)  # by session id
    ended_bytes: tuple[int, int] = (0, 0)  # (in, out) of the sessions that ended, for the metrics
    serving: bool = False  # the SSH listener accepts (for /readyz)

    def service_addresses(self) -> list[tuple[str, str]]:
        """(name, address) of the other listeners (web, metrics), once started."""
        return [(service.name, service.address) for service in self.services if isinstance(service, Listener)]

    def sessions_of(self, user: str) -> int:
        """The jumps `user` holds open (what `limits.sessions_per_user` bounds)."""
        return self._jumps_by_user[user]

    def jump_started(self, jump: Jump) -> None:
        if jump not in self.jumps:
            self.jumps.add(jump)
            self._jumps_by_user[jump.identity.user] += 1

    def jump_ended(self, jump: Jump) -> None:
        if jump in self.jumps:
            self.jumps.discard(jump)
            user = jump.identity.user
            self._jumps_by_user[user] -= 1
            if not self._jumps_by_user[user]:
                del self._jumps_by_user[user]


def _peer(conn: asyncssh.SSHServerConnection) -> str:
    peer = conn.get_extra_info("peername") or ("?", 0)
    return f"{peer[0]}:{peer[1]}"


class OuterServer(asyncssh.SSHServer):
    """The hop users authenticate to. It serves ProxyJump's direct-tcpip and nothing else."""

    def __init__(self, state: BastionState) -> None:
        self._state = state
        self._conn: asyncssh.SSHServerConnection | None = None
        self._identity: Identity | None = None  # set once authentication has succeeded
        self._candidate: Identity | None = None  # who the credential being checked would be
        self._client = "?"
        self._client_version = ""
        self._device: DeviceAuthorization | None = None  # shown to the client, its answer not yet taken
        self._device_user = ""
        self._jumps: set[Jump] = set()  # this connection's live jumps
        self._names_refused: set[str] = set()
        self._certificate: Any = None  # the login certificate accepted, for `whoami`

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._client = _peer(conn)
        self._state.connections.add(conn)
        self._state.audit.write(ConnectionOpened(client=self._client))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._device is not None:
            # The client left with a device code on screen before its answer was taken (it
            # never sent one, or asyncssh cancelled the task that would have taken it before
            # that task ran): nobody waits for that sign-in, and the log says so. A wait that
            # did start reports its own end (SSO.finish_device).
            self._state.audit.write(SSOLoginAbandoned(user=self._device_user, client=self._client,
                                                      user_code=self._device.user_code))
            self._device = None
        if self._conn is not None:
            self._state.connections.discard(self._conn)
            self._state.identities.pop(self._conn, None)
        for jump in list(self._jumps):  # their inner connections end with this one
            jump.ended()
        self._state.audit.write(ConnectionClosed(
            client=self._client,
            user=self._identity.user if self._identity else None,
            reason=str(exc) if exc else None,
        ))

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        self._client_version = str(self._conn.get_extra_info("client_version", ""))
        self._candidate = None
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    # The checks that read the state database are coroutines (asyncssh awaits them): the
    # database is read on its own thread while the loop serves everyone else.

    async def _revoked(self, username: str, method: str) -> bool:
        """Whether `username` may not sign in now: revoked, or the state database cannot say
        (fail closed: the user reads why, and tries again once it answers)."""
        sso = self._state.sso
        try:
            revoked = sso is not None and await sso.revoked(username)
        except StateError as exc:
            self._state_unavailable(username, method, exc)
            return True
        if revoked:
            self._auth_failed(username, method, "user revoked")
            return True
        return False

    def _state_unavailable(self, username: str, method: str, exc: StateError) -> None:
        self._auth_failed(username, method, exc.reason)
        if self._conn is not None:
            self._conn.send_auth_banner("bastion: cannot check your access right now (the state database"
                                        " does not answer); try again in a moment\r\n")

    # Each check names who the credential would sign in (`_candidate`); the identity is
    # recorded only in auth_completed, once asyncssh has also verified the signature.

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._candidate = None
        user = self._state.config.users.get(username)
        ok = user is not None and any(
            key.public_data == known.public_data for known in user.keys
        )
        if ok and user is not None and not await self._revoked(username, "publickey"):
            self._candidate = Identity(user=username, groups=user.groups, method="publickey")
            return True
        if not ok:
            self._auth_failed(username, "publickey", "unknown key")
        return False

    async def certificate_accepted(self, username: str, cert: Any) -> bool:
        """A login certificate, whole: its form (signer, type, principal, validity, source
        address), then the SSO directory's records (issued to this user for this key, not
        revoked). Every refusal is audited with its reason."""
        self._candidate = None
        assert self._conn is not None
        peer = self._conn.get_extra_info("peername") or (None, 0)
        refusal = login_certificate_refusal(cert, username, self._state.keys.login_ca,
                                            now=time.time(), peer_address=peer[0])
        sso = self._state.sso
        try:
            if refusal is None and sso is not None:
                refusal = await sso.certificate_refusal(username, cert)
            if refusal is not None:
                self._auth_failed(username, "certificate", refusal)
                return False
            machines = self._state.machines
            if machines is not None:
                machine = await machines.identity(username, cert)
                if isinstance(machine, str):
                    self._auth_failed(username, "machine", machine)
                    return False
                if machine is not None:
                    self._candidate = machine
                    return True
            user = self._state.config.users.get(username)
            groups = await sso.groups(username) if sso is not None else user.groups if user else frozenset()
        except StateError as exc:
            self._state_unavailable(username, "certificate", exc)
            return False
        self._candidate = Identity(user=username, groups=groups, method="certificate")
        self._certificate = cert
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Asked by asyncssh after certificate_accepted has decided on the whole certificate.
        return key.public_data == self._state.keys.login_ca.public_data

    # -- single sign-on inside ssh: keyboard-interactive carrying a device code -------------------

    def kbdint_auth_supported(self) -> bool:
        sso = self._state.sso
        return sso is not None and sso.device is not None

    async def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        sso = self._state.sso
        assert sso is not None
        self._candidate = None
        if await self._revoked(username, "sso"):
            return False
        try:
            self._device = await sso.start_device()
        except OIDCError as exc:
            self._auth_failed(username, "sso", f"identity provider: {exc}")
            return False
        self._device_user = username
        self._state.audit.write(SSOLoginStarted(client=self._client, user=username,
                                                user_code=self._device.user_code))
        # No prompts: OpenSSH shows the instruction and waits while the bastion polls.
        return "bastion sign-in", self._device.instructions() + "\n", "", []

    async def validate_kbdint_response(  # type: ignore[override]
        self, username: str, responses: list[str]
    ) -> bool:
        sso, device = self._state.sso, self._device
        if sso is None or device is None:
            return False
        self._device = None  # one code, one use
        try:
            user, groups = await sso.finish_device(device, username, self._client)
        except SSOError as exc:
            self._auth_failed(username, "sso", str(exc))
            if self._conn is not None:
                self._conn.send_auth_banner(f"bastion: sign-in failed: {exc}\n")
            return False
        self._candidate = Identity(user=user, groups=groups, method="sso")
        return True

    def name_refused(self, raw: bytes, problem: str) -> None:
        """A user name asyncssh never starts a login for: audited once per name."""
        name = printable_name(raw)
        if name not in self._names_refused:
            self._names_refused.add(name)
            self._auth_failed(name, "none", problem)

    def _auth_failed(self, username: str, method: str, reason: str) -> None:
        metrics.AUTHENTICATIONS.labels(method=method, result="failure").inc()
        self._state.audit.write(AuthFailed(client=self._client, user=username, method=method, reason=reason))

    def auth_completed(self) -> None:
        assert self._conn is not None
        username = self._conn.get_extra_info("username")
        identity, self._candidate = self._candidate, None
        if identity is None or identity.user != username:  # never expected: fail closed
            self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                  "bastion: authentication state is inconsistent")
            return
        self._identity = identity
        if isinstance(self._conn, OuterServerConnection):
            self._conn.signed_in()
        if self._conn is not None:
            self._state.identities[self._conn] = self._identity
        metrics.AUTHENTICATIONS.labels(method=self._identity.method, result="success").inc()
        self._state.audit.write(AuthSucceeded(
            client=self._client,
            user=self._identity.user,
            method=self._identity.method,
            client_version=self._client_version,
            workload=dict(self._identity.workload) if self._identity.machine else None,
        ))

    def session_requested(self) -> OwnCommandSession:
        # No shell on the bastion itself: its own commands, served in-process, for this user.
        assert self._identity is not None
        certified = self._identity.method == "certificate"
        cert = self._certificate if certified else None
        info = certificate_info(cert) if cert is not None else None
        caller = Caller(identity=self._identity, client=self._client,
                        role=caller_role(self._state, self._identity),
                        certificate_expires=info["valid_before"] if info else None,
                        certificate_key_id=info["key_id"] if info else None)
        return OwnCommandSession(self._state, caller)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    # The inner SSH server runs on the channel, as its session: asyncssh types a session as
    # SSHTCPSession, a protocol class a connection does not derive from.
    def connection_requested(  # type: ignore[override]
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> asyncssh.SSHServerConnection:
        assert self._identity is not None
        state, identity = self._state, self._identity
        target = state.config.find_target(dest_host, dest_port)
        if len(dest_host) > MAX_HOST_NAME:  # DNS names end at 253: repeat no flood back, nor log it
            dest_host = f"{dest_host[:MAX_HOST_NAME]}... ({len(dest_host)} characters)"
        if target is None:
            reason = f"{dest_host}:{dest_port} is not a configured target"
        else:
            decision = decide_target(identity, target)
            reason = "" if decision else decision.reason
        if target is None or reason:
            state.audit.write(JumpRefused(
                client=self._client, user=identity.user,
                destination=f"{dest_host}:{dest_port}", reason=reason,
            ))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}"
            )
        destination = f"{dest_host}:{dest_port}"
        live, limit = state.sessions_of(identity.user), state.config.limits.sessions_per_user
        if session_limit_refusal(identity.user, live, limit) is not None:
            self._limit_reached(identity, destination, live, limit)
        session_id = new_session_id()
        if limit and state.registry is not None:
            # The user's jumps on every instance count: asyncssh awaits the claim in the state
            # database (its own thread) while the loop serves everyone else.
            return self._claimed(target, session_id, destination, limit)  # type: ignore[return-value]
        return self._jump_to(target, session_id, slot=False)

    def _limit_reached(self, identity: Identity, destination: str, live: int, limit: int) -> NoReturn:
        self._state.audit.write(SessionLimitReached(
            client=self._client, user=identity.user, destination=destination, sessions=live, limit=limit,
        ))
        refusal = session_limit_refusal(identity.user, live, limit)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, f"bastion: {refusal}")

    async def _claimed(self, target: TargetConfig, session_id: str, destination: str,
                       limit: int) -> asyncssh.SSHServerConnection:
        """The jump, once the state database counted it among its user's open jumps on every
        instance; refused over the limit, or when the database cannot count (fail closed)."""
        state, identity = self._state, self._identity
        assert state.registry is not None
        assert identity is not None
        try:
            held = await state.registry.claim_slot(session_id, identity.user, limit)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the count is unknown: refuse
            reason = f"cannot count {identity.user}'s open sessions (state database: {exc}); try again"
            state.audit.write(JumpRefused(client=self._client, user=identity.user, destination=destination,
                                          reason=reason))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, f"bastion: {reason}") from None
        if held is not None:
            self._limit_reached(identity, destination, held, limit)
        if self._conn is None or self._conn not in state.connections:  # the client left meanwhile
            state.registry.release_slot(session_id)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "bastion: connection closed")
        return self._jump_to(target, session_id, slot=True)

    def _jump_to(self, target: TargetConfig, session_id: str, *, slot: bool) -> asyncssh.SSHServerConnection:
        state, identity = self._state, self._identity
        assert identity is not None
        state.audit.write(JumpAllowed(
            client=self._client, user=identity.user, target=target.name, session=session_id,
        ))
        jump = Jump(
            state=state, identity=identity, target=target, session_id=session_id,
            client=self._client, client_version=self._client_version, outer=self._jumps,
            reads_as=self._conn, slot=slot,
        )
        jump.started()
        options = asyncssh.SSHServerConnectionOptions(
            server_factory=lambda: InnerServer(jump),
            server_host_keys=[(state.keys.inner_host_key, state.keys.target_host_certificate(target))],
            line_editor=False,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            login_timeout=state.config.login_timeout,
            keepalive_interval=0,
            config=None,
            **state.config.algorithms.server_options(),
        )
        return InnerServerConnection(asyncio.get_running_loop(), options)


@dataclass(eq=False)
class Jump:
    """One direct-tcpip channel: who, to where, under which session id. Live from the channel's
    open until its inner connection or the outer connection ends."""

    state: BastionState
    identity: Identity
    target: TargetConfig
    session_id: str
    client: str
    client_version: str
    outer: set[Jump] = field(default_factory=set)  # the live jumps of the same outer connection
    reads_as: object = None  # whose turns the target connection's reads count against (`Turns`)
    channels: int = 0
    opened: float = field(default_factory=time.monotonic)
    slot: bool = False  # counted in the registry's session slots until it ends

    def started(self) -> None:
        self.state.jump_started(self)
        self.outer.add(self)

    def ended(self) -> None:
        self.state.jump_ended(self)
        self.outer.discard(self)
        if self.slot and self.state.registry is not None:
            self.slot = False
            self.state.registry.release_slot(self.session_id)


class InnerServer(asyncssh.SSHServer):
    """The SSH server the user's inner connection reaches, speaking for the target."""

    def __init__(self, jump: Jump) -> None:
        self._jump = jump
        self._conn: asyncssh.SSHServerConnection | None = None
        self._upstream: UpstreamConnection | None = None
        self._login_deadline = 0.0
        self._relays: set[SessionRelay] = set()
        self._killed = False
        self._names_refused: set[str] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._login_deadline = asyncio.get_running_loop().time() + self._jump.state.config.login_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._jump.ended()
        if self._upstream is not None:
            self._upstream.close()

    def name_refused(self, raw: bytes, problem: str) -> None:
        """A login asyncssh never starts (an empty name) or drops the connection for (control
        characters, ...): no certificate is made, and the refusal is audited once per name."""
        jump, name = self._jump, printable_name(raw)
        if name not in self._names_refused:
            self._names_refused.add(name)
            jump.state.audit.write(LoginRefused(reason=problem, user=jump.identity.user,
                                                target=jump.target.name, login=name, session=jump.session_id))

    async def begin_auth(self, username: str) -> bool:
        """Decide the login and log in upstream *now*, so a refusal is a plain auth failure."""
        jump, audit = self._jump, self._jump.state.audit
        user, target, session = jump.identity.user, jump.target.name, jump.session_id
        decision = decide_login(jump.identity, jump.target, username)
        if not decision:
            audit.write(LoginRefused(reason=decision.reason, user=user, target=target, login=username,
                                     session=session))
            self._banner(f"bastion: {decision.reason}")
            return True
        try:
            self._upstream = await connect_upstream(
                target=jump.target, login=username, user=jump.identity.user,
                session_id=jump.session_id, keys=jump.state.keys,
                settings=jump.state.config.certificates,
                port_forwarding=jump.state.config.session.allow_port_forwarding,
                algorithms=jump.state.config.algorithms,
                retry_for=self._login_deadline - asyncio.get_running_loop().time() - LOGIN_MARGIN,
                reads_as=jump.reads_as,
            )
        except BastionError as exc:
            hint = PRINCIPALS_HINT if isinstance(exc, UpstreamAuthError) else None
            audit.write(UpstreamFailed(error=exc.code, reason=exc.reason, hint=hint, user=user, target=target,
                                       login=username, session=session))
            self._banner(f"bastion: {exc.reason}")
            return True
        spec, attempts = self._upstream.spec, self._upstream.attempts
        metrics.CERTIFICATES_ISSUED.labels(kind="session").inc()
        metrics.SESSION_SETUP.observe(time.monotonic() - jump.opened)
        audit.write(UpstreamConnected(key_id=spec.key_id, serial=spec.serial, user=user, target=target,
                                      login=username, session=session,
                                      attempts=attempts if attempts > 1 else None))
        return False

    def _banner(self, line: str) -> None:
        if self._conn is not None:
            self._conn.send_auth_banner(line + "\r\n")

    # After a refusal every method fails: the client sees an ordinary "Permission denied".
    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False

    def session_requested(self) -> SessionRelay | bool:  # type: ignore[override]
        if self._upstream is None:
            return False
        jump, upstream = self._jump, self._upstream
        state = jump.state
        jump.channels += 1
        info = SessionInfo(
            session_id=jump.session_id if jump.channels == 1 else f"{jump.session_id}.{jump.channels}",
            channel=jump.channels,
            user=jump.identity.user,
            target=jump.target.name,
            login=upstream.login,
            client_address=jump.client,
            client_version=jump.client_version,
            kind=SessionKind.SHELL,
            key_id=upstream.spec.key_id,
            serial=upstream.spec.serial,
            groups=jump.identity.groups,
            machine=jump.identity.machine,
            workload=jump.identity.workload,
            allow_shell=jump.identity.allow_shell,
        )
        relay = SessionRelay(
            info=info,
            upstream=upstream.conn,
            pipeline=SessionPipeline(state.stages()),
            env_allow=state.config.session.env_allow,
            on_end=self._session_ended,
            masker=state.text_masker,
            on_start=self._session_began,
        )
        state.relays.add(relay)
        self._relays.add(relay)
        state.audit.write(SessionStarted(
            session=info.session_id, user=info.user, target=info.target,
            login=info.login, client=info.client_address, key_id=info.key_id,
            workload=dict(info.workload) if info.machine else None,
        ))
        return InnerSession(relay, allow_subsystems=SUBSYSTEMS)  # type: ignore[return-value]

    def _session_began(self, relay: SessionRelay) -> None:
        """The client said what the session is: it is live, in the registry, from now on."""
        state, info = self._jump.state, relay.info
        state.live[info.session_id] = (relay, self)
        if state.registry is None:
            return
        transfer = info.transfer
        command = stored_command(info.command, state.text_masker).text if info.command else None
        now = time.time()
        state.registry.started(LiveSession(
            session=info.session_id, user=info.user, target=info.target, login=info.login,
            kind=transfer.value if transfer is not None else info.kind.value, command=command,
            client=info.client_address, started=now, last_activity=now, bytes_in=0, bytes_out=0,
            instance=state.registry.instance,
            recording=info.session_id if state.config.recording.enabled else None,
        ))

    def kill(self, relay: SessionRelay, by: str, reason: str) -> None:
        """End one session on request: a marker in its recording, one line to the user; the
        inner and upstream connections close once this jump carries no other session."""
        self._killed = True
        relay.marker("killed", f"by {by}: {reason}")
        relay.end(f"bastion: session ended by {by}: {reason}")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._upstream is not None:
            self._upstream.close()

    def _session_ended(self, relay: SessionRelay) -> None:
        state, info = self._jump.state, relay.info
        state.relays.discard(relay)
        self._relays.discard(relay)
        if state.live.pop(info.session_id, None) is not None and state.registry is not None:
            state.registry.ended(info.session_id)
        if self._killed and not self._relays:
            # A moment for the line to reach the client, then the connections go.
            asyncio.get_running_loop().call_later(1.0, self._close)
        state.ended_bytes = (state.ended_bytes[0] + relay.bytes_in, state.ended_bytes[1] + relay.bytes_out)
        state.audit.write(SessionEnded(
            session=info.session_id, user=info.user, target=info.target,
            login=info.login, kind=info.kind, command=info.command, subsystem=info.subsystem,
            key_id=info.key_id, bytes_in=relay.bytes_in, bytes_out=relay.bytes_out,
            duration=round(time.monotonic() - relay.started, 3), exit_status=relay.exit_status,
            exit_signal=relay.exit_signal[0] if relay.exit_signal else None,
            markers=relay.markers or None, reason=relay.end_reason,
            workload=dict(info.workload) if info.machine else None,
        ))

    def connection_requested(  # type: ignore[override]
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[CountingForwarder]:
        """`ssh -L` inside the jump: refused unless the config allows port forwarding; allowed, the
        target's connection carries it: the channel there and this one are joined, and the
        forward is a live session (listed, killable) until either side closes."""
        jump = self._jump
        gate = jump.state.forward_gate
        refusal = None
        if gate is not None and self._upstream is not None:
            refusal = gate(jump.identity, jump.target, self._upstream.login, f"{dest_host}:{dest_port}")
        if refusal:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)
        if not jump.state.config.session.allow_port_forwarding or self._upstream is None:
            jump.state.audit.write(ForwardRefused(
                session=jump.session_id, user=jump.identity.user,
                target=jump.target.name, destination=f"{dest_host}:{dest_port}",
            ))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "bastion: port forwarding is disabled"
            )
        return self._forward(self._upstream, dest_host, dest_port)

    async def _forward(self, upstream: UpstreamConnection, host: str, port: int) -> CountingForwarder:
        jump = self._jump
        state = jump.state
        jump.channels += 1
        session_id = jump.session_id if jump.channels == 1 else f"{jump.session_id}.{jump.channels}"
        destination = f"{host}:{port}"
        tunnel = ForwardTunnel(session_id=session_id, user=jump.identity.user, target=jump.target.name,
                               login=upstream.login, destination=destination, on_closed=self._forward_ended)
        try:
            _, target_side = await upstream.conn.create_connection(
                lambda: CountingForwarder(tunnel, from_user=False), host, port)  # type: ignore[arg-type, return-value]
        except asyncssh.ChannelOpenError:
            raise
        except (asyncssh.Error, OSError) as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            f"bastion: {jump.target.name} cannot forward: {exc}") from None
        user_side = CountingForwarder(tunnel, from_user=True, peer=cast(CountingForwarder, target_side))
        tunnel.client_side = user_side
        state.forwards[session_id] = (tunnel, self)
        if state.registry is not None:
            now = time.time()
            state.registry.started(LiveSession(
                session=session_id, user=tunnel.user, target=tunnel.target, login=tunnel.login,
                kind="forward", command=printable(destination)[:300], client=jump.client, started=now,
                last_activity=now,
                bytes_in=0, bytes_out=0, instance=state.registry.instance, recording=None))
        return user_side

    def _forward_ended(self, tunnel: ForwardTunnel) -> None:
        state = self._jump.state
        if state.forwards.pop(tunnel.session_id, None) is not None and state.registry is not None:
            state.registry.ended(tunnel.session_id)
        state.ended_bytes = (state.ended_bytes[0] + tunnel.bytes_in, state.ended_bytes[1] + tunnel.bytes_out)

    def kill_forward(self, tunnel: ForwardTunnel, by: str, reason: str) -> None:
        """End one forward on request. With nothing else on this connection, the connection goes
        with it, its disconnect message saying who and why (ssh prints it); otherwise only the
        forward's channels close."""
        others = [t for t, inner in self._jump.state.forwards.values() if inner is self and t is not tunnel]
        if not self._relays and not others and self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"bastion: session ended by {by}: {reason}")
        tunnel.close()

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class Bastion:
    """The running service: listen, serve, and stop gracefully."""

    def __init__(self, state: BastionState, *, waiting: WaitingCounts | None = None) -> None:
        """`waiting`: where the pre-authentication limits count (shared by workers on one port)."""
        self.state = state
        self._server: asyncio.Server | None = None
        self._startup = StartupGuard(state.config.limits, state.audit, counts=waiting)
        self._watcher: asyncio.Task[None] | None = None
        self._live_watcher: asyncio.Task[None] | None = None
        self._ending: set[asyncssh.SSHServerConnection] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        config = self.state.config
        loop = asyncio.get_running_loop()
        for hook in self.state.on_start:
            hook(loop)
        for service in self.state.services:
            await service.start()
        if self.state.sso is not None:
            await self.state.sso.prepare()
            self._watcher = loop.create_task(self.state.sso.watch_revocations(self.end_user))
        if self.state.registry is not None:
            self._live_watcher = loop.create_task(self._watch_live(self.state.registry))
        # asyncssh.listen() would build plain SSHServerConnections; ours skip per-packet
        # IGNORE padding (see bastion.ssh.transport), so the listener is made here.
        options = asyncssh.SSHServerConnectionOptions(
            server_factory=lambda: OuterServer(self.state),
            server_host_keys=[self.state.keys.bastion_host_key],
            allow_pty=True,  # for the bastion's own terminal UI; there is no shell behind it
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=config.login_timeout,
            encoding=None,
            config=None,
            **config.algorithms.server_options(),
        )
        self._server = await loop.create_server(
            lambda: OuterServerConnection(loop, options, self._startup.admit),
            config.listen_host,
            config.listen_port,
            reuse_address=True,
            reuse_port=config.workers > 1,  # the kernel spreads connections over the workers
        )
        for listening in self.state.on_listening:
            await listening()
        self.state.serving = True
        self.state.audit.write(BastionStarted(
            listen=f"{config.listen_host}:{self.port}", targets=sorted(config.targets),
        ))

    async def stop(self, grace: float) -> None:
        """Stop accepting; let sessions finish for `grace` seconds; then close what is left."""
        self.state.serving = False
        if self._server is not None:
            self._server.close()
        self._startup.close()
        self.state.audit.write(BastionStopping(live_sessions=len(self.state.relays), grace=grace))
        deadline = time.monotonic() + grace
        while self.state.relays and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded wait; sessions end in many ways
            await asyncio.sleep(0.1)
        for relay in list(self.state.relays):
            relay.end("bastion: the bastion is shutting down")
        # Let the clients read that line and close by themselves before we cut them off.
        deadline = time.monotonic() + 2
        while self.state.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - as above, for clients
            await asyncio.sleep(0.05)
        for conn in list(self.state.connections):
            conn.disconnect(asyncssh.DISC_BY_APPLICATION, "bastion shutting down")
        await asyncio.sleep(0)
        for watcher in (self._watcher, self._live_watcher):
            if watcher is not None:
                watcher.cancel()
        for service in self.state.services:
            await service.stop()
        for hook in self.state.on_stop:
            hook()
        self.state.audit.write(BastionStopped())

    def end_user(self, user: str) -> None:
        """A revoked user: end their sessions with a message, then drop their connections."""
        for relay in [r for r in self.state.relays if r.info.user == user]:
            self.state.audit.write(SessionRevoked(session=relay.info.session_id, user=user))
            relay.end("bastion: your access has been revoked")
        loop = asyncio.get_running_loop()
        for conn, identity in list(self.state.identities.items()):
            if identity.user == user and conn not in self._ending:
                self._ending.add(conn)
                # A moment for the session's message to reach the client, then the connection goes.
                loop.call_later(1.0, self._disconnect, conn)

    async def _watch_live(self, registry: Registry) -> None:
        """Keep the registry's activity figures current and carry out kill requests made by any
        process with the state database (as revocations are)."""
        seen: dict[str, tuple[int, int]] = {}
        while True:
            now = time.time()
            updates = []
            moving: list[tuple[str, int, int]] = [
                *((session, relay.bytes_in, relay.bytes_out)
                  for session, (relay, _) in self.state.live.items()),
                *((session, tunnel.bytes_in, tunnel.bytes_out)
                  for session, (tunnel, _) in self.state.forwards.items())]
            for session, sent, received in moving:
                if seen.get(session, (0, 0)) != (sent, received):
                    updates.append((session, now, sent, received))
                seen[session] = (sent, received)
            for gone in seen.keys() - {session for session, _, _ in moving}:
                del seen[gone]
            registry.activity(updates)
            try:
                kills = await registry.kills()
            except Exception as exc:  # noqa: BLE001 - the database failed: say so, try again
                reason = str(exc) or type(exc).__name__
                self.state.audit.write(LiveSessionUpdateFailed(session="*", reason=reason))
                kills = []
            for kill in kills:
                self.kill(kill)
                registry.kill_done(kill.session)
            await asyncio.sleep(LIVE_POLL)

    def kill(self, request: KillRequest) -> bool:
        """End a live session this instance serves; False if it is not here (any more)."""
        entry = self.state.live.get(request.session)
        by = printable(request.by)[:64]
        reason = printable(request.reason)[:KILL_REASON_MAX] or "no reason given"
        if entry is None:
            forward = self.state.forwards.get(request.session)
            if forward is None:
                return False
            tunnel, owner = forward
            self.state.audit.write(SessionKilled(session=tunnel.session_id, user=tunnel.user,
                                                 target=tunnel.target, by=by, reason=reason))
            owner.kill_forward(tunnel, by, reason)
            return True
        relay, inner = entry
        info = relay.info
        self.state.audit.write(SessionKilled(session=info.session_id, user=info.user, target=info.target,
                                             by=by, reason=reason))
        inner.kill(relay, by, reason)
        return True

    def _disconnect(self, conn: asyncssh.SSHServerConnection) -> None:
        self._ending.discard(conn)
        conn.disconnect(asyncssh.DISC_BY_APPLICATION, "access revoked")

    def reload(self) -> None:
        """SIGHUP: re-read what can change without dropping sessions (the rules file and its
        rules); the hooks log what else changed and needs a restart."""
        for hook in self.state.reload_hooks:
            hook()

    def reopen_log(self) -> None:
        """SIGUSR1 (and SIGHUP): the log file again at its path, for logrotate."""
        problem = self.state.audit.reopen()
        if problem is not None:
            self.state.audit.write(LogReopenFailed(reason=problem))

    def _hangup(self) -> None:
        self.reopen_log()
        self.reload()

    def listening_line(self) -> str:
        """One line for the operator: where it listens, what it serves, where it records."""
        config = self.state.config
        host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
        parts = [f"listening on {host}:{self.port}"]
        parts += [f"{name} on {address}" for name, address in self.state.service_addresses()]
        parts.append(counted(len(config.targets), "target"))
        parts.append(f"recording to {config.recordings_dir}" if config.recording.enabled else "not recording")
        parts.append(f"log to {config.log_file}" if config.log_file else "log to stderr")
        return ", ".join(parts)

    async def serve_forever(self, announce: Callable[[str], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop with the configured grace period. Under
        systemd (Type=notify) it reports READY=1 once listening and STOPPING=1 as the drain
        starts; `announce` gets the one line saying where it listens."""
        notifier = SystemdNotifier()
        self.state.audit.write(raise_open_files_limit())
        await self.start()
        line = self.listening_line()
        if announce is not None:
            announce(line)
        notifier.notify(f"READY=1\nSTATUS={line}\nMAINPID={os.getpid()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_log)
        await stop.wait()
        notifier.notify(f"STOPPING=1\nSTATUS=draining {counted(len(self.state.relays), 'session')}")
        await self.stop(self.state.config.grace_period)
