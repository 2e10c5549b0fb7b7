"""`bastion login`, `bastion logout` (users' laptops) and `bastion users ...` (operators)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import click

from bastion.auth.directory import Directory, certificate_info, krl_path, write_krl
from bastion.auth.oidc import OIDCClient, OIDCError
from bastion.cli.common import failure, keys_for
from bastion.cli.machines import token_login
from bastion.config import BastionConfig, OIDCSettings
from bastion.state.live import LiveSessions

STATE_FILE = Path("~/.config/bastion/login.json")
TIMEOUT = aiohttp.ClientTimeout(total=30)


def _state_path() -> Path:
    return STATE_FILE.expanduser()


def _read_state() -> dict[str, Any]:
    try:
        data = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _default_key() -> Path:
    ssh = Path("~/.ssh").expanduser()
    for name in ("id_ed25519", "id_ecdsa"):
        if (ssh / name).exists() and (ssh / f"{name}.pub").exists():
            return ssh / name
    return ssh / "bastion_ed25519"


def _ensure_key(path: Path) -> str:
    """The public key line for `path`, making an ed25519 key there if there is none."""
    public = path.with_name(path.name + ".pub")
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = asyncssh.generate_private_key(
            "ssh-ed25519", comment=f"{os.environ.get('USER', 'user')}@bastion-login"
        )
        key.write_private_key(path)
        os.chmod(path, 0o600)
        key.write_public_key(public)
        click.echo(f"made a new key: {path}")
    try:
        return public.read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read {public} ({exc.strerror})") from None


async def _json(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
            http.request(method, url, **kwargs) as response,
        ):
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise click.ClickException(f"{url}: {exc or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{url}: unexpected answer")
    if response.status != 200:
        raise click.ClickException(f"the bastion refused: {data.get('error', f'HTTP {response.status}')}")
    return data


async def _login(url: str, key: Path) -> dict[str, Any]:
    settings = await _json("GET", f"{url}/sso/config")
    public_key = _ensure_key(key)
    client = OIDCClient(
        OIDCSettings(
            issuer=settings["issuer"], client_id=settings["client_id"], scopes=tuple(settings["scopes"])
        )
    )
    try:
        device = await client.start_device()
        click.echo(device.instructions(), err=True)
        if device.verification_uri_complete:
            click.echo(f"  (or open {device.verification_uri_complete})", err=True)
        tokens = await client.device_tokens(device)
    except OIDCError as exc:
        raise failure(exc) from None
    answer = await _json(
        "POST",
        f"{url}/sso/certificate",
        json={
            "id_token": tokens.get("id_token"),
            "access_token": tokens.get("access_token"),
            "public_key": public_key,
        },
    )
    return {**answer, "settings": settings}


def _ssh_snippet(user: str, host: str, port: int, key: Path, cert: Path, known_hosts: Path) -> str:
    return f"""\
Host bastion
    HostName {host}
    Port {port}
    User {user}
    IdentityFile {key}
    CertificateFile {cert}
    UserKnownHostsFile {known_hosts}

# then: ssh -J bastion LOGIN@TARGET   (or add 'ProxyJump bastion' to your targets' Host blocks)
Host *
    UserKnownHostsFile {known_hosts}
"""


async def _add_to_agent(key: Path, cert: Path, lifetime: int) -> None:
    """Key and certificate into the running ssh-agent, gone from it when the certificate is."""
    try:
        async with asyncssh.connect_agent() as agent:
            await agent.add_keys([(key, cert)], lifetime=max(1, lifetime))
    except (OSError, ValueError, asyncssh.Error) as exc:
        raise click.ClickException(f"cannot add the key to ssh-agent ({exc or 'no SSH_AUTH_SOCK'})") from None


def _login_command(url: str | None, key_path: Path | None, status: bool, agent: bool = False) -> None:
    state = _read_state()
    if status:
        _status(state)
        return
    url = (url or state.get("url") or "").rstrip("/")
    if not url:
        raise click.ClickException("which bastion? pass --url https://bastion.example.com (remembered after)")
    key = (key_path or (Path(state["key"]) if state.get("key") else None) or _default_key()).expanduser()
    answer = asyncio.run(_login(url, key))
    cert_path = key.with_name(key.name + "-cert.pub")
    cert_path.write_text(answer["certificate"] + "\n")
    os.chmod(cert_path, 0o644)
    settings = answer["settings"]
    known_hosts = key.parent / "bastion_known_hosts"
    known_hosts.write_text("\n".join(settings["known_hosts"]) + "\n")
    _state_path().parent.mkdir(parents=True, exist_ok=True)
    _state_path().write_text(
        json.dumps({"url": url, "key": str(key), "certificate": str(cert_path), "user": answer["user"]})
    )
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(answer["valid_before"]))
    click.echo(
        f"signed in as {answer['user']} ({', '.join(answer['groups']) or 'no groups'});"
        f" certificate {cert_path} valid until {until}"
    )
    if agent:
        asyncio.run(_add_to_agent(key, cert_path, int(answer["valid_before"] - time.time())))
        click.echo("key and certificate added to ssh-agent (until the certificate expires)")
    click.echo("\nssh config (~/.ssh/config):\n")
    bastion = settings["bastion"]
    click.echo(_ssh_snippet(answer["user"], bastion["host"], bastion["port"], key, cert_path, known_hosts))


def _status(state: dict[str, Any]) -> None:
    cert_file = state.get("certificate")
    if not cert_file or not Path(cert_file).exists():
        raise click.ClickException("not signed in (run: bastion login --url ...)")
    try:
        info = certificate_info(asyncssh.read_certificate(cert_file))
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        raise click.ClickException(f"{cert_file}: cannot read the certificate ({exc})") from None
    left = info["valid_before"] - time.time()
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["valid_before"]))
    when = f"expires {until} ({int(left // 60)} min left)" if left > 0 else f"EXPIRED at {until}"
    click.echo(
        f"{', '.join(info['principals'])} at {state.get('url')}: {when}\n"
        f"certificate {cert_file} (serial {info['serial']}, key id {info['key_id']})"
    )
    if left <= 0:
        raise SystemExit(1)


def _list_users(config: BastionConfig) -> None:
    directory = Directory(config.state)
    sessions: dict[str, list[str]] = {}
    for session in LiveSessions(config.state).list():
        sessions.setdefault(session.user, []).append(f"{session.login}@{session.target} ({session.session})")
    revoked = set(directory.revoked_users())
    sso = {u.user: u for u in directory.sso_users()}
    for name in sorted(set(config.users) | set(sso) | revoked):
        sources = []
        groups: set[str] = set()
        if name in config.users:
            configured = config.users[name]
            sources.append(f"config ({len(configured.keys)} keys)")
            groups |= configured.groups
        if name in sso:
            seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(sso[name].last_seen))
            sources.append(f"sso {sso[name].identity} (last {seen})")
            groups |= sso[name].groups
        flag = "  REVOKED" if name in revoked else ""
        live = f"  live: {', '.join(sessions[name])}" if name in sessions else ""
        click.echo(
            f"{name}{flag}  {'; '.join(sources) or '-'}  groups={','.join(sorted(groups)) or '-'}{live}"
        )


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.command()
    @click.option("--url", envvar="BASTION_URL", help="The bastion's web address (remembered; $BASTION_URL).")
    @click.option(
        "--key",
        "key_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Private key to certify (default ~/.ssh/id_ed25519, or a new ~/.ssh/bastion_ed25519).",
    )
    @click.option("--status", is_flag=True, help="Show who you are signed in as and when it expires.")
    @click.option("--agent", is_flag=True, help="Also add key and certificate to the running ssh-agent.")
    @click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="A machine: exchange the platform's OIDC token in FILE (- for stdin), no browser.")
    @click.option("--token-env", metavar="VAR", help="A machine: exchange the OIDC token in $VAR.")
    @click.option("--machine", help="With a token: which machine, when the token matches several.")
    @click.option("--ssh-config", type=click.Path(dir_okay=False, path_type=Path),
                  help="With a token: where to write the ssh config (default: beside the key).")
    def login(url: str | None, key_path: Path | None, status: bool, agent: bool, token_file: Path | None,
              token_env: str | None, machine: str | None, ssh_config: Path | None) -> None:
        """Sign in with single sign-on and get a short-lived SSH certificate for the bastion.

        CI jobs and agents pass their platform's token (--token-file or --token-env) instead:
        exit 0 signed in, 1 refused, 2 wrong usage, 3 try again later."""
        if token_file is not None or token_env is not None:
            token_login(url, token_file, token_env, key_path, machine, ssh_config)
            return
        _login_command(url, key_path, status, agent)

    @main.command()
    def logout() -> None:
        """Remove the certificate `bastion login` wrote (the key stays)."""
        state = _read_state()
        cert = state.get("certificate")
        if cert and Path(cert).exists():
            Path(cert).unlink()
            click.echo(f"removed {cert}")
        else:
            click.echo("no certificate to remove")
        _state_path().unlink(missing_ok=True)

    @main.group()
    def users() -> None:
        """Who is known (config and single sign-on), their live sessions, revocation."""

    @users.command("list")
    @config_option
    def users_list(config_path: Path) -> None:
        """Every user: where they come from, groups, revoked or not, live sessions."""
        _list_users(load(config_path))

    @users.command("revoke")
    @config_option
    @click.argument("name")
    @click.option(
        "--by", default=lambda: os.environ.get("USER", "operator"), help="Who revokes (for the log)."
    )
    def users_revoke(config_path: Path, name: str, by: str) -> None:
        """Refuse NAME's logins and certificates from now on, and end their live sessions."""
        config = load(config_path)
        directory = Directory(config.state)
        serials = directory.revoke(name, by)

        krl = krl_path(config.state_db)
        write_krl(krl, keys_for(config).login_ca.convert_to_public(), directory.revoked_serials())
        live = LiveSessions(config.state).list(user=name)
        click.echo(
            f"revoked {name}: {len(serials)} certificates on the revocation list ({krl});"
            f" {len(live)} live sessions end within seconds"
        )

    @users.command("restore")
    @config_option
    @click.argument("name")
    def users_restore(config_path: Path, name: str) -> None:
        """Undo `users revoke NAME` (certificates issued before stay revoked)."""
        config = load(config_path)
        if not Directory(config.state).restore(name):
            raise click.ClickException(f"{name} is not revoked")
        click.echo(f"{name} may log in again (with a new certificate or key)")
