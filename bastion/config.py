"""The bastion's TOML config: parsed once into frozen dataclasses, every mistake named.

Unknown keys are errors rather than warnings: a misspelt `logins` must not silently widen or
narrow access.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, overload

import asyncssh

from bastion.core.durations import parse_duration
from bastion.core.masker import DETECTOR_NAMES, Detector, SecretMasker, TextMasker, chosen_detectors
from bastion.core.rules import moderator_names
from bastion.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LOGIN = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def parse_host_port(value: str, *, default_port: int, where: str, any_port: bool = False) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port`, `v6` -> (host, port), strictly: the host is an IPv4
    address, an IPv6 address or a DNS name, and the port 1-65535 (0 too with `any_port`, for a
    listener that takes any free port). Anything else is an error naming `where` and the value,
    never a guess (`"2201"` is not the host 0.0.8.153)."""
    text = value.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{where}: unbalanced '[' in address {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{where}: expected ':port' after ']' in {value!r}")
            port_text = rest[1:]
        if not _is_ip(host, 6):
            raise ConfigError(f"{where}: {host!r} in {value!r} is not an IPv6 address")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        if not _is_ip(text, 6):
            raise ConfigError(f"{where}: {value!r} is not an address (an IPv6 address with a port is "
                              f"written [::1]:22)")
        return text, default_port
    if not host:
        raise ConfigError(f"{where}: address {value!r} has no host")
    if not text.startswith("["):
        _check_host(host, value, where)
    if port_text is None:
        return host, default_port
    low = 0 if any_port else 1
    if not port_text.isascii() or not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: bad port {port_text!r} in address {value!r} (expected {low}-65535)")
    return host, int(port_text)


def _is_ip(text: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == version


def _check_host(host: str, value: str, where: str) -> None:
    shown = repr(host) if host == value.strip() else f"{host!r} in {value!r}"
    if all(c.isdigit() or c == "." for c in host) and host.isascii():
        if host.isdigit():
            raise ConfigError(f"{where}: {value!r} has no host ({host} looks like a port: write "
                              f'"127.0.0.1:{host}" for this machine only, '
                              f'"0.0.0.0:{host}" for every address)')
        if not _is_ip(host, 4):
            raise ConfigError(f"{where}: {shown} is not an IPv4 address")
        return
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        bad = sorted({c for c in host if not (c.isascii() and (c.isalnum() or c in "._-"))})
        why = f" ({' '.join(repr(c) for c in bad)} cannot be in a host name)" if bad else ""
        raise ConfigError(f"{where}: {shown} is not a host name or address{why}")


@dataclass(frozen=True)
class UserConfig:
    name: str
    keys: tuple[asyncssh.SSHKey, ...] = ()
    groups: frozenset[str] = frozenset()
    oidc_subject: str | None = None  # binds this user to one identity at the provider


@dataclass(frozen=True)
class MachineConfig:
    """A workload identity (`[[machines]]`): a CI job or an agent signing in with its platform's
    OIDC token, matched on the token's verified issuer, audience and claims."""

    name: str
    issuer: str
    audience: str
    claims: tuple[tuple[str, tuple[str | int | bool, ...]], ...]
    groups: frozenset[str] = frozenset()
    certificate_ttl: int = 900
    max_token_age: int = 600
    allow_shell: bool = False


@dataclass(frozen=True)
class TargetConfig:
    name: str
    host: str
    port: int
    aliases: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    host_key: asyncssh.SSHKey | None = None
    host_ca: asyncssh.SSHKey | None = None
    # A session here waits until a member of one of these groups (or a user named) watches it as
    # its moderator (`ssh -t bastion join ID`); its input pauses while none does.
    moderated_by: frozenset[str] = frozenset()
    moderator_timeout: int = 300  # seconds a session may wait for a moderator (at start or later)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a client may use for this target (the host certificate's principals)."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class SessionSettings:
    env_allow: tuple[str, ...] = ("TERM", "LANG", "LC_*")
    allow_port_forwarding: bool = False


class OnFailure(StrEnum):
    """What a session does when its recording cannot be written."""

    REFUSE = "refuse"  # no recording, no session
    CONTINUE = "continue"  # the session goes on unrecorded: an explicit opt-out


@dataclass(frozen=True)
class RecordingSettings:
    enabled: bool = True
    version: int = 2
    on_failure: OnFailure = OnFailure.REFUSE
    flush_interval: float = 0.5
    checkpoint_interval: float = 2.0


class MaskingSinks(StrEnum):
    """Where output is masked."""

    BOTH = "both"  # the user's screen and the recording
    RECORDING = "recording"  # only the recording: the user still sees the secret


@dataclass(frozen=True)
class MaskingSettings:
    enabled: bool = True
    sinks: MaskingSinks = MaskingSinks.BOTH
    disable: tuple[str, ...] = ()  # built-in detectors switched off
    hold_ms: int = 30  # longest a possible secret's tail is held when output pauses
    custom: tuple[tuple[str, str, int], ...] = ()  # (name, regex, group)

    @property
    def hold_seconds(self) -> float:
        return self.hold_ms / 1000

    @property
    def pem(self) -> bool:
        return "private-key" not in self.disable

    def detectors(self) -> tuple[Detector, ...]:
        return chosen_detectors(self.disable, self.custom)

    def make_masker(self) -> SecretMasker:
        return SecretMasker(self.detectors(), pem=self.pem)

    def text_masker(self) -> TextMasker:
        """What commands stored in headers, the index, the log and chat are masked with: these
        detectors too, even with the streams' masking off (a stored secret would outlive the
        session)."""
        return TextMasker(self.detectors(), pem=self.pem)


@dataclass(frozen=True)
class LimitSettings:
    """What one client or user may hold at once; 0 is no limit."""

    unauthenticated: int = 200  # connections not signed in yet, in total (sshd's MaxStartups)
    unauthenticated_per_source: int = 20  # of them from one address (sshd's PerSourceMaxStartups)
    sessions_per_user: int = 100  # jumps to targets one user holds open at once


@dataclass(frozen=True)
class AccessSettings:
    """Who may use the bastion's own commands (`ssh bastion ...`) beyond their own sessions: groups
    (a user's config and single sign-on groups), or user names."""

    reviewers: frozenset[str] = frozenset()  # list, watch and replay every session
    admins: frozenset[str] = frozenset()  # and kill any session (admins are reviewers too)


# What the bastion offers by default: OpenSSH 9.x's set minus its legacy fallbacks (NIST-curve
# and 1024/2048-bit exchanges, SHA-1, encrypt-and-MAC MACs, ssh-rsa/ssh-dss signatures).
# Post-quantum hybrid exchange first; curve25519 and the 4096/8192-bit groups stay as classical
# fallbacks for clients without it (PuTTY, Dropbear, paramiko, OpenSSH before 9.9).
# sntrup761x25519-sha512 is not offered: asyncssh does not implement it.
DEFAULT_KEX = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
# The client's order decides on the hops where users' clients connect; the bastion's on the hop
# to targets (see UPSTREAM_CIPHERS and docs/performance.md for the figures behind the order).
DEFAULT_CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
UPSTREAM_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
DEFAULT_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "umac-128-etm@openssh.com")
# server-sig-algs: what the bastion says it verifies for users' keys.
DEFAULT_SIGNATURES = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class AlgorithmSettings:
    """[algorithms]: the lists offered where users' clients connect (the bastion's port and the
    inner connection inside each jump) and on the hop to targets (`upstream_*`), in order."""

    kex: tuple[str, ...] = DEFAULT_KEX
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    macs: tuple[str, ...] = DEFAULT_MACS
    signatures: tuple[str, ...] = DEFAULT_SIGNATURES
    upstream_kex: tuple[str, ...] = DEFAULT_KEX
    upstream_ciphers: tuple[str, ...] = UPSTREAM_CIPHERS
    upstream_macs: tuple[str, ...] = DEFAULT_MACS

    def server_options(self) -> dict[str, list[str]]:
        """asyncssh's connection options for the bastion as a server."""
        return {"kex_algs": list(self.kex), "encryption_algs": list(self.ciphers),
                "mac_algs": list(self.macs), "signature_algs": list(self.signatures),
                "compression_algs": ["none"]}

    def client_options(self) -> dict[str, list[str]]:
        """asyncssh's connection options for the bastion as the client of a target."""
        return {"kex_algs": list(self.upstream_kex), "encryption_algs": list(self.upstream_ciphers),
                "mac_algs": list(self.upstream_macs), "compression_algs": ["none"]}


@dataclass(frozen=True)
class CertificateSettings:
    ttl: int = 120
    backdate: int = 30
    source_address: str | None = None


@dataclass(frozen=True)
class OIDCSettings:
    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    # Provider group -> bastion groups. When set, provider groups not listed give nothing.
    groups_map: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    # SSH users: the device-code prompt inside ssh, and `bastion login` (a public client).
    device_login: bool = True
    cli_client_id: str | None = None
    certificate_ttl: int = 8 * 3600


@dataclass(frozen=True)
class WebSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_ttl: int = 900


@dataclass(frozen=True)
class MetricsSettings:
    """`[metrics]`: Prometheus metrics, /healthz and /readyz on a listener of their own."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 9122


NOTIFY_KINDS = ("slack", "mattermost", "webhook")


@dataclass(frozen=True)
class NotifyDestination:
    kind: str
    url: str
    name: str


@dataclass(frozen=True)
class BastionConfig:
    path: Path | None
    listen_host: str = "127.0.0.1"
    listen_port: int = 2200
    keys_dir: Path = Path("hostkeys")
    recordings_dir: Path = Path("recordings")
    log_file: Path | None = None
    rules_file: Path | None = None
    state_db: Path = Path("bastion.db")  # the SQLite file; with a URL, where the KRL is written
    state_url: str | None = None  # postgresql://...: the state shared by every instance
    state_lease: int = 15  # seconds an instance's work stays its own after its last heartbeat
    names: tuple[str, ...] = ()
    grace_period: int = 30
    login_timeout: int = 60
    workers: int = 1  # processes serving the same ports (SO_REUSEPORT), each an instance
    certificates: CertificateSettings = field(default_factory=CertificateSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    algorithms: AlgorithmSettings = field(default_factory=AlgorithmSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    masking: MaskingSettings = field(default_factory=MaskingSettings)
    web: WebSettings | None = None
    metrics: MetricsSettings | None = None
    oidc: OIDCSettings | None = None
    notify: tuple[NotifyDestination, ...] = ()
    users: Mapping[str, UserConfig] = field(default_factory=dict)
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    machines: Mapping[str, MachineConfig] = field(default_factory=dict)

    @property
    def state(self) -> Path | str:
        """Where the state lives: the PostgreSQL URL, or else the SQLite file."""
        return self.state_url if self.state_url is not None else self.state_db

    def find_target(self, host: str, port: int) -> TargetConfig | None:
        """The target a jump request names, by name or alias; port 22 or the target's own."""
        wanted = host.lower().rstrip(".")
        for target in self.targets.values():
            if wanted in (n.lower() for n in target.names) and port in (22, target.port):
                return target
        return None


def changed_settings(old: BastionConfig, new: BastionConfig) -> list[str]:
    """The top-level settings (as the file names them) that differ between two configs."""
    names = [f.name for f in fields(BastionConfig)
             if f.name != "path" and getattr(old, f.name) != getattr(new, f.name)]
    # One key in the file, two settings here.
    listen = [name for name in names if name in ("listen_host", "listen_port")]
    return [name for name in names if name not in listen] + (["listen"] if listen else [])


_T = TypeVar("_T")


class _Table:
    """A TOML table being read: remembers where it is and refuses keys nobody asked for."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table")
        self.data, self.where, self.seen = data, where, set[str]()

    @overload
    def get(self, key: str, kind: type[_T]) -> _T | None: ...

    @overload
    def get(self, key: str, kind: type[_T], default: _T) -> _T: ...

    @overload
    def get(self, key: str, kind: tuple[type, ...], default: Any = None) -> Any: ...

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self.where}.{key}: expected {names}, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        for value in values:
            if not isinstance(value, str):
                raise ConfigError(f"{self.where}.{key}: expected a list of strings, got {value!r}")
        return tuple(values)

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ConfigError(f"{self.where}: unknown key {extra[0]!r}")


def _public_key(text: str, where: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ConfigError(f"{where}: not an OpenSSH public key ({exc})") from None


def _user(name: str, data: Mapping[str, Any], where: str) -> UserConfig:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid user name")
    table = _Table(data, where)
    keys = tuple(_public_key(k, f"{where}.keys") for k in table.strings("keys"))
    groups = frozenset(table.strings("groups"))
    subject = table.get("oidc_subject", str)
    table.finish()
    if subject == "":
        raise ConfigError(f"{where}.oidc_subject: cannot be empty")
    return UserConfig(name=name, keys=keys, groups=groups, oidc_subject=subject)


def _target(name: str, data: Mapping[str, Any], where: str) -> TargetConfig:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid target name")
    table = _Table(data, where)
    address = table.get("address", str)
    if address is None:
        raise ConfigError(f"{where}.address: missing (e.g. address = \"10.0.0.5:22\")")
    host, port = parse_host_port(address, default_port=22, where=f"{where}.address")
    aliases = table.strings("aliases")
    for alias in aliases:
        if not _NAME.match(alias):
            raise ConfigError(f"{where}.aliases: {alias!r} is not a valid host name")
    logins = table.strings("logins")
    for login in logins:
        if not _LOGIN.match(login):
            raise ConfigError(f"{where}.logins: {login!r} is not a valid login name")
    host_key = table.get("host_key", str)
    host_ca = table.get("host_ca", str)
    target = TargetConfig(
        name=name,
        host=host,
        port=port,
        aliases=aliases,
        logins=logins,
        groups=frozenset(table.strings("groups")),
        users=frozenset(table.strings("users")),
        host_key=_public_key(host_key, f"{where}.host_key") if host_key else None,
        host_ca=_public_key(host_ca, f"{where}.host_ca") if host_ca else None,
        moderated_by=(moderator_names(table.get("moderated_by", list), where)
                      if "moderated_by" in table.data else frozenset()),
        moderator_timeout=parse_duration(table.get("moderator_timeout", (int, str), 300),
                                         where=f"{where}.moderator_timeout"),
    )
    if target.moderator_timeout <= 0:
        raise ConfigError(f"{where}.moderator_timeout: must be more than 0")
    table.finish()
    return target


def _access(table: _Table) -> AccessSettings:
    access = AccessSettings(reviewers=frozenset(table.strings("reviewers")),
                            admins=frozenset(table.strings("admins")))
    table.finish()
    return access


def _claim_values(value: Any, where: str) -> tuple[str | int | bool, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, bool)) for v in values):
        raise ConfigError(f"{where}: expected a string, number or boolean, or a list of them")
    if any(v == "" for v in values):
        raise ConfigError(f"{where}: an empty value would match a claim that says nothing")
    return tuple(values)


def _machines(entries: list[Any], where: str, users: Mapping[str, UserConfig], *,
              has_web: bool) -> dict[str, MachineConfig]:
    if entries and not has_web:
        raise ConfigError(f"{where}: [[machines]] needs [web] (machines exchange their tokens there)")
    machines: dict[str, MachineConfig] = {}
    for index, entry in enumerate(entries):
        table = _Table(entry, f"{where}: [[machines]] #{index + 1}")
        name, issuer, audience = table.get("name", str), table.get("issuer", str), table.get("audience", str)
        if not name or not _NAME.match(name):
            raise ConfigError(f"{table.where} name: missing or not a valid name, got {name!r}")
        table.where = f"{where}: [[machines]] {name}"
        if name in users or name in machines:
            raise ConfigError(f"{table.where}: the name {name!r} is taken by another "
                              f"{'user' if name in users else 'machine'}")
        if not issuer or not re.match(r"^https?://[^/\s]+", issuer):
            raise ConfigError(f"{table.where} issuer: missing or not an http(s) URL")
        if not audience:
            raise ConfigError(f"{table.where} audience: missing (the audience the platform mints tokens for)")
        raw_claims = table.get("claims", dict, {})
        if not raw_claims:
            # Without one, any job anywhere that the issuer serves (every repository on GitHub)
            # would be this machine.
            raise ConfigError(f"{table.where} claims: name at least one claim to match "
                              '(e.g. claims = { repository = "acme/web" })')
        claims = tuple(sorted((key, _claim_values(value, f"{table.where} claims.{key}"))
                              for key, value in raw_claims.items()))
        for reserved in ("iss", "aud", "exp", "nbf", "iat", "jti"):
            if reserved in raw_claims:
                raise ConfigError(f"{table.where} claims.{reserved}: checked by the bastion itself;"
                                  " use issuer and audience")
        machine = MachineConfig(
            name=name, issuer=issuer, audience=audience, claims=claims,
            groups=frozenset(table.strings("groups")),
            certificate_ttl=parse_duration(table.get("certificate_ttl", (int, str), "15m"),
                                           where=f"{table.where} certificate_ttl"),
            max_token_age=parse_duration(table.get("max_token_age", (int, str), "10m"),
                                         where=f"{table.where} max_token_age"),
            allow_shell=table.get("allow_shell", bool, False),
        )
        table.finish()
        if not 60 <= machine.certificate_ttl <= 12 * 3600:
            raise ConfigError(f"{table.where} certificate_ttl: must be between 1m and 12h")
        if not 10 <= machine.max_token_age <= 24 * 3600:
            raise ConfigError(f"{table.where} max_token_age: must be between 10s and 24h")
        machines[name] = machine
    return machines


def _limits(table: _Table) -> LimitSettings:
    default = LimitSettings()
    settings = LimitSettings(
        unauthenticated=table.get("unauthenticated", int, default.unauthenticated),
        unauthenticated_per_source=table.get("unauthenticated_per_source", int,
                                             default.unauthenticated_per_source),
        sessions_per_user=table.get("sessions_per_user", int, default.sessions_per_user),
    )
    table.finish()
    for f in fields(LimitSettings):
        if getattr(settings, f.name) < 0:
            raise ConfigError(f"{table.where} {f.name}: must be 0 (no limit) or more")
    if settings.unauthenticated and settings.unauthenticated_per_source > settings.unauthenticated:
        raise ConfigError(f"{table.where} unauthenticated_per_source: must not be more than "
                          f"unauthenticated ({settings.unauthenticated})")
    return settings


def _algorithm_names(table: _Table, key: str, supported: list[bytes],
                     default: tuple[str, ...]) -> tuple[str, ...]:
    if key not in table.data:
        table.seen.add(key)
        return default
    names = table.strings(key)
    if not names:
        raise ConfigError(f"{table.where} {key}: must list at least one algorithm")
    known = {name.decode("ascii") for name in supported}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"{table.where} {key}: not supported: {', '.join(unknown)} "
                          f"(supported: {', '.join(sorted(known))})")
    return names


def _algorithms(table: _Table) -> AlgorithmSettings:
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs
    from asyncssh.public_key import get_public_key_algs

    d = AlgorithmSettings()
    kex, ciphers, macs = get_kex_algs(), get_encryption_algs(), get_mac_algs()
    settings = AlgorithmSettings(
        kex=_algorithm_names(table, "kex", kex, d.kex),
        ciphers=_algorithm_names(table, "ciphers", ciphers, d.ciphers),
        macs=_algorithm_names(table, "macs", macs, d.macs),
        signatures=_algorithm_names(table, "signatures", get_public_key_algs(), d.signatures),
        upstream_kex=_algorithm_names(table, "upstream_kex", kex, d.upstream_kex),
        upstream_ciphers=_algorithm_names(table, "upstream_ciphers", ciphers, d.upstream_ciphers),
        upstream_macs=_algorithm_names(table, "upstream_macs", macs, d.upstream_macs),
    )
    table.finish()
    return settings


def _masking(table: _Table) -> MaskingSettings:
    customs = []
    for index, entry in enumerate(table.get("custom", list, [])):
        rule = _Table(entry, f"{table.where}.custom[{index}]")
        name, regex = rule.get("name", str), rule.get("regex", str)
        if not name or not regex:
            raise ConfigError(f"{rule.where}: needs name and regex")
        group = rule.get("group", int, 0)
        rule.finish()
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"{rule.where}.regex: not a valid regular expression ({exc})") from None
        if group > re.compile(regex).groups:
            raise ConfigError(f"{rule.where}.group: the regex has no group {group}")
        customs.append((name, regex, group))
    disable = table.strings("disable")
    for name in disable:
        if name not in DETECTOR_NAMES:
            raise ConfigError(f"{table.where}.disable: unknown detector {name!r} "
                              f"(known: {', '.join(DETECTOR_NAMES)})")
    enabled, sinks = table.get("enabled", bool, True), table.get("sinks", str, MaskingSinks.BOTH)
    hold_ms = table.get("hold_ms", int, 30)
    table.finish()
    if sinks not in tuple(MaskingSinks):
        raise ConfigError(f'{table.where}.sinks: must be "both" or "recording"')
    config = MaskingSettings(enabled=enabled, sinks=MaskingSinks(sinks), disable=disable, hold_ms=hold_ms,
                             custom=tuple(customs))
    if not 0 <= config.hold_ms <= 1000:
        raise ConfigError(f"{table.where}.hold_ms: must be between 0 and 1000")
    return config


def _secret(table: _Table, key: str, base: Path) -> str | None:
    """`key = "..."` or `key_file = "path"` (the file's first line): secrets may live apart."""
    value, file = table.get(key, str), table.get(f"{key}_file", str)
    if value is not None and file is not None:
        raise ConfigError(f"{table.where}: set {key} or {key}_file, not both")
    if file is None:
        return value
    try:
        text = (base / file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{table.where}.{key}_file: cannot read {file} ({exc.strerror})") from None
    if not text:
        raise ConfigError(f"{table.where}.{key}_file: {file} is empty")
    return text


STATE_URL_SCHEMES = ("postgresql://", "postgres://")


def _state(top: _Table, base: Path, where: str) -> dict[str, Any]:
    """`state_db` (a path, or a postgresql:// URL) or `[state] url`, and `[state] lease`."""
    table = _Table(top.get("state", dict, {}), f"{where}: [state]")
    given = top.get("state_db", str)
    url = table.get("url", str)
    lease = parse_duration(table.get("lease", (int, str), 15), where=f"{table.where} lease")
    table.finish()
    if given is not None and url is not None:
        raise ConfigError(f"{where}: state_db and [state] url both name the state; keep one")
    if given is not None and given.startswith(STATE_URL_SCHEMES):
        url, given = given, None
    if url is not None and not url.startswith(STATE_URL_SCHEMES):
        raise ConfigError(f"{table.where} url: expected a postgresql:// URL, got {url.split(':')[0]!r}")
    if not 3 <= lease <= 600:
        raise ConfigError(f"{table.where} lease: must be between 3s and 10m")
    return {"state_db": (base / (given or "bastion.db")).resolve(), "state_url": url, "state_lease": lease}


def _web(table: _Table, base: Path) -> WebSettings:
    host, port = parse_host_port(table.get("listen", str, "127.0.0.1:8080"), default_port=8080,
                                 where=f"{table.where} listen", any_port=True)
    cert, key = table.get("tls_cert", str), table.get("tls_key", str)
    if (cert is None) != (key is None):
        raise ConfigError(f"{table.where}: tls_cert and tls_key go together")
    scheme = "https" if cert else "http"
    shown = f"[{host}]" if ":" in host else host
    public_url = table.get("public_url", str, f"{scheme}://{shown}:{port}").rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", public_url):
        raise ConfigError(f"{table.where} public_url: expected an http(s) URL, got {public_url!r}")
    web = WebSettings(
        listen_host=host, listen_port=port, public_url=public_url,
        tls_cert=(base / cert).resolve() if cert else None,
        tls_key=(base / key).resolve() if key else None,
        session_ttl=parse_duration(table.get("session_ttl", (int, str), "15m"),
                                   where=f"{table.where} session_ttl"),
    )
    table.finish()
    if not 60 <= web.session_ttl <= 86400:
        raise ConfigError(f"{table.where} session_ttl: must be between 1m and 24h")
    return web


def _metrics(table: _Table) -> MetricsSettings:
    default = MetricsSettings()
    listen = table.get("listen", str, f"{default.listen_host}:{default.listen_port}")
    host, port = parse_host_port(listen, default_port=default.listen_port, where=f"{table.where} listen",
                                 any_port=True)
    table.finish()
    return MetricsSettings(listen_host=host, listen_port=port)


def _groups_map(table: _Table) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """`[oidc.groups_map]`: "provider group" = "bastion group" or ["several", "groups"]."""
    raw = table.get("groups_map", dict)
    if raw is None:
        return None
    entries = []
    for name, value in raw.items():
        groups = [value] if isinstance(value, str) else value
        if not isinstance(groups, list) or not all(isinstance(g, str) and _NAME.match(g) for g in groups):
            raise ConfigError(f"{table.where} groups_map.{name}: expected a group name or a list of them")
        entries.append((name, tuple(groups)))
    return tuple(entries)


def _oidc(table: _Table, base: Path) -> OIDCSettings:
    issuer, client_id = table.get("issuer", str), table.get("client_id", str)
    if not issuer or not re.match(r"^https?://", issuer):
        raise ConfigError(f"{table.where} issuer: missing or not an http(s) URL")
    if not client_id:
        raise ConfigError(f"{table.where} client_id: missing")
    settings = OIDCSettings(
        issuer=issuer,
        client_id=client_id,
        client_secret=_secret(table, "client_secret", base),
        scopes=table.strings("scopes") or OIDCSettings.scopes,
        username_claim=table.get("username_claim", str, OIDCSettings.username_claim),
        groups_claim=table.get("groups_claim", str, OIDCSettings.groups_claim),
        groups_map=_groups_map(table),
        device_login=table.get("device_login", bool, True),
        cli_client_id=table.get("cli_client_id", str),
        certificate_ttl=parse_duration(table.get("certificate_ttl", (int, str), "8h"),
                                       where=f"{table.where} certificate_ttl"),
    )
    table.finish()
    if not 300 <= settings.certificate_ttl <= 7 * 86400:
        raise ConfigError(f"{table.where} certificate_ttl: must be between 5m and 7d")
    if "openid" not in settings.scopes:
        raise ConfigError(f"{table.where} scopes: must include \"openid\"")
    return settings


def _notify(entries: list[Any], where: str, base: Path) -> tuple[NotifyDestination, ...]:
    destinations = []
    for index, entry in enumerate(entries):
        table = _Table(entry, f"{where}: [[notify]] #{index + 1}")
        kind = table.get("kind", str)
        if kind not in NOTIFY_KINDS:
            raise ConfigError(f"{table.where} kind: must be one of {', '.join(NOTIFY_KINDS)}, got {kind!r}")
        url = _secret(table, "url", base)
        if not url or not re.match(r"^https?://", url):
            raise ConfigError(f"{table.where} url: missing or not an http(s) URL")
        name = table.get("name", str, kind)
        table.finish()
        destinations.append(NotifyDestination(kind=kind, url=url, name=name))
    return tuple(destinations)


def _web_sections(
    top: _Table, where: str, base: Path
) -> tuple[WebSettings | None, OIDCSettings | None, tuple[NotifyDestination, ...]]:
    web = _web(_Table(top.get("web", dict, {}), f"{where}: [web]"), base) if "web" in top.data else None
    oidc = _oidc(_Table(top.get("oidc", dict, {}), f"{where}: [oidc]"), base) if "oidc" in top.data else None
    notify = _notify(top.get("notify", list, []), where, base)
    if oidc is not None and web is None:
        raise ConfigError(f"{where}: [oidc] needs [web] (the sign-in callback is served there)")
    if notify and web is None:
        raise ConfigError(f"{where}: [[notify]] needs [web] (messages link to its pages)")
    return web, oidc, notify


MAX_WORKERS = 64


def _workers(value: int | str, where: str, listen_port: int, web: WebSettings | None) -> int:
    """`workers = N` or "auto" (one per core): processes sharing the listening ports."""
    if value == "auto":
        count = os.cpu_count() or 1
    elif isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        count = value
    else:
        raise ConfigError(f"{where}: workers = {value!r}: expected a number from 1 to {MAX_WORKERS}, "
                          "or \"auto\"")
    if (problem := _shared_port_problem(count, listen_port, web)) is not None:
        raise ConfigError(f"{where}: workers = {value!r}: {problem}")
    return count


def _shared_port_problem(count: int, listen_port: int, web: WebSettings | None) -> str | None:
    ports = (("listen", listen_port), ("[web] listen", web.listen_port if web else 1))
    shared = [name for name, port in ports if port == 0]
    if count > 1 and shared:
        return f"the workers share their ports, and {shared[0]} asks for any free port (0); name the port"
    return None


def workers_for(config: BastionConfig, count: int) -> int:
    """`count` workers for `config` (a command line's choice over the file's), or why not."""
    if (problem := _shared_port_problem(count, config.listen_port, config.web)) is not None:
        raise ConfigError(f"--workers {count}: {problem}")
    return count


def parse_config(data: Mapping[str, Any], *, path: Path | None = None) -> BastionConfig:
    """Build a config from parsed TOML; relative paths resolve against the file's folder."""
    where = str(path) if path else "config"
    base = path.parent if path else Path.cwd()
    top = _Table(data, where)

    listen_host, listen_port = parse_host_port(
        top.get("listen", str, "127.0.0.1:2200"), default_port=2200, where=f"{where}: listen",
        any_port=True,
    )

    def folder(key: str, default: str | None) -> Path | None:
        value = top.get(key, str, default)
        return None if value is None else (base / value).resolve()

    certs = _Table(top.get("certificates", dict, {}), f"{where}: [certificates]")
    certificates = CertificateSettings(
        ttl=parse_duration(certs.get("ttl", (int, str), 120), where=f"{certs.where} ttl"),
        backdate=parse_duration(certs.get("backdate", (int, str), 30), where=f"{certs.where} backdate"),
        source_address=certs.get("source_address", str),
    )
    certs.finish()
    if not 10 <= certificates.ttl <= 86400:
        raise ConfigError(f"{certs.where} ttl: must be between 10s and 24h")

    limits = _limits(_Table(top.get("limits", dict, {}), f"{where}: [limits]"))
    access = _access(_Table(top.get("access", dict, {}), f"{where}: [access]"))

    sess = _Table(top.get("session", dict, {}), f"{where}: [session]")
    session = SessionSettings(
        env_allow=sess.strings("env_allow") if "env_allow" in sess.data else SessionSettings.env_allow,
        allow_port_forwarding=sess.get("allow_port_forwarding", bool, False),
    )
    sess.finish()

    rec = _Table(top.get("recording", dict, {}), f"{where}: [recording]")
    enabled, version = rec.get("enabled", bool, True), rec.get("version", int, 2)
    on_failure = rec.get("on_failure", str, OnFailure.REFUSE)
    flush_interval = float(rec.get("flush_interval", (int, float), 0.5))
    checkpoint_interval = float(parse_duration(rec.get("checkpoint_interval", (int, str), 2),
                                               where=f"{rec.where} checkpoint_interval"))
    rec.finish()
    if version not in (2, 3):
        raise ConfigError(f"{rec.where} version: must be 2 or 3 (asciicast v2 or v3)")
    if on_failure not in tuple(OnFailure):
        raise ConfigError(f"{rec.where} on_failure: must be \"refuse\" or \"continue\"")
    recording = RecordingSettings(enabled=enabled, version=version, on_failure=OnFailure(on_failure),
                                  flush_interval=flush_interval, checkpoint_interval=checkpoint_interval)
    if not 0.01 <= recording.flush_interval <= 1.0:
        raise ConfigError(f"{rec.where} flush_interval: must be between 0.01 and 1 second")
    if not 1 <= recording.checkpoint_interval <= 300:
        raise ConfigError(f"{rec.where} checkpoint_interval: must be between 1s and 5m")

    masking = _masking(_Table(top.get("masking", dict, {}), f"{where}: [masking]"))
    metrics = None
    if "metrics" in top.data:
        metrics = _metrics(_Table(top.get("metrics", dict, {}), f"{where}: [metrics]"))
    web, oidc, notify = _web_sections(top, where, base)

    users = {
        name: _user(name, table, f"{where}: [users.{name}]")
        for name, table in top.get("users", dict, {}).items()
    }
    subjects: dict[str, str] = {}
    for user in users.values():
        if user.oidc_subject is not None:
            other = subjects.setdefault(user.oidc_subject, user.name)
            if other != user.name:
                raise ConfigError(f"{where}: users {other!r} and {user.name!r} have the same oidc_subject")
    targets = {
        name: _target(name, table, f"{where}: [targets.{name}]")
        for name, table in top.get("targets", dict, {}).items()
    }
    seen: dict[str, str] = {}
    for target in targets.values():
        for target_name in target.names:
            other = seen.setdefault(target_name.lower(), target.name)
            if other != target.name:
                raise ConfigError(
                    f"{where}: name {target_name!r} is used by targets {other!r} and {target.name!r}"
                )

    config = BastionConfig(
        path=path,
        listen_host=listen_host,
        listen_port=listen_port,
        keys_dir=folder("keys_dir", "hostkeys") or base,
        recordings_dir=folder("recordings_dir", "recordings") or base,
        log_file=folder("log_file", None),
        rules_file=folder("rules_file", None),
        **_state(top, base, where),
        names=top.strings("names"),
        grace_period=parse_duration(
            top.get("grace_period", (int, str), 30), where=f"{where}: grace_period"
        ),
        login_timeout=parse_duration(
            top.get("login_timeout", (int, str), 60), where=f"{where}: login_timeout"
        ),
        workers=_workers(top.get("workers", (int, str), 1), where, listen_port, web),
        certificates=certificates,
        limits=limits,
        algorithms=_algorithms(_Table(top.get("algorithms", dict, {}), f"{where}: [algorithms]")),
        access=access,
        session=session,
        recording=recording,
        masking=masking,
        web=web,
        metrics=metrics,
        oidc=oidc,
        notify=notify,
        users=users,
        targets=targets,
        machines=_machines(top.get("machines", list, []), where, users, has_web=web is not None),
    )
    top.finish()
    return config


def read_toml(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """(parsed TOML, its text); errors name the file and, for syntax, the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> BastionConfig:
    """Read and validate a TOML config file."""
    file = Path(path)
    data, _ = read_toml(file, "config")
    return parse_config(data, path=file.resolve())
