"""Machines (CI jobs, agents): `bastion login --token-file/--token-env` exchanges the platform's
token for a login certificate without a browser; `bastion machines ...` lists and revokes them.

Exit codes of the exchange, for CI logs and retry logic: 0 signed in; 1 the bastion refused the
token (wrong audience or claims, expired, replayed, forged, revoked machine); 2 wrong usage or
an unreadable token; 3 try again later (bastion unreachable, rate limited, issuer unavailable).
Every failure is one line on stderr.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import asyncssh
import click

from bastion.auth.directory import Directory, krl_path, write_krl
from bastion.cli.common import keys_for
from bastion.config import BastionConfig
from bastion.state.live import LiveSessions

EXIT_REFUSED, EXIT_USAGE, EXIT_LATER = 1, 2, 3
TIMEOUT = aiohttp.ClientTimeout(total=30)


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"bastion login: {message}", err=True)
    sys.exit(code)


def read_token(token_file: Path | None, token_env: str | None) -> str:
    """The platform's token from a file (`-` is stdin) or an environment variable."""
    if token_file is not None:
        try:
            text = sys.stdin.read() if str(token_file) == "-" else token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(EXIT_USAGE, f"cannot read the token from {token_file} ({getattr(exc, 'strerror', exc)})")
        where = str(token_file)
    else:
        assert token_env is not None
        text = os.environ.get(token_env, "")
        where = f"${token_env}"
    token = text.strip()
    if not token:
        _fail(EXIT_USAGE, f"no token in {where}")
    return token


def _machine_key(path: Path, *, fresh: bool) -> str:
    """The public key to certify: a fresh ed25519 key at `path` for this job (never one copied
    into a repository), or, `fresh` False and a key there already, that one."""
    public = path.with_name(path.name + ".pub")
    if not fresh and path.exists():
        return public.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="bastion-machine")
    path.unlink(missing_ok=True)
    key.write_private_key(path)
    os.chmod(path, 0o600)
    key.write_public_key(public)
    return public.read_text().strip()


async def _exchange(url: str, body: dict[str, Any]) -> dict[str, Any]:
    endpoint = f"{url}/machines/token"
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
            http.post(endpoint, json=body) as response,
        ):
            status = response.status
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _fail(EXIT_LATER, f"cannot reach {endpoint}: {exc or type(exc).__name__}")
    except ValueError:
        _fail(EXIT_LATER, f"{endpoint}: not a JSON answer (is this the bastion's web address?)")
    if not isinstance(data, dict):
        _fail(EXIT_LATER, f"{endpoint}: unexpected answer")
    if status != 200:
        reason = " ".join(str(data.get("error", f"HTTP {status}")).split())
        code = EXIT_LATER if status == 429 or status >= 500 else EXIT_REFUSED
        _fail(code, f"refused ({status}): {reason}")
    return data


def ssh_config_text(user: str, host: str, port: int, key: Path, cert: Path, known_hosts: Path) -> str:
    return f"""\
# Written by `bastion login --token-...`: ssh -F THIS_FILE -J bastion LOGIN@TARGET COMMAND
Host bastion
    HostName {host}
    Port {port}
    User {user}

Host *
    IdentityFile {key}
    CertificateFile {cert}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
"""


def token_login(url: str | None, token_file: Path | None, token_env: str | None, key: Path | None,
                machine: str | None, ssh_config: Path | None) -> None:
    """Exchange a workload token for a certificate; write key, certificate, known_hosts and an
    ssh config; print one line."""
    if token_file is not None and token_env is not None:
        _fail(EXIT_USAGE, "give --token-file or --token-env, not both")
    url = (url or "").rstrip("/")
    if not url:
        _fail(EXIT_USAGE, "which bastion? pass --url https://bastion.example.com (or set $BASTION_URL)")
    token = read_token(token_file, token_env)
    fresh = key is None  # a key named with --key is used as it is, if it exists
    key = (key or Path("~/.ssh/bastion_machine_ed25519")).expanduser()
    try:
        public_key = _machine_key(key, fresh=fresh)
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot use the key {key} ({exc.strerror})")
    body: dict[str, Any] = {"token": token, "public_key": public_key}
    if machine:
        body["machine"] = machine
    answer = asyncio.run(_exchange(url, body))
    try:
        cert = key.with_name(key.name + "-cert.pub")
        cert.write_text(answer["certificate"] + "\n")
        known_hosts = key.with_name("bastion_known_hosts")
        known_hosts.write_text("\n".join(answer["known_hosts"]) + "\n")
        config = (ssh_config or key.with_name("bastion_config")).expanduser()
        bastion = answer["bastion"]
        config.write_text(ssh_config_text(answer["user"], bastion["host"], bastion["port"], key, cert,
                                          known_hosts))
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot write {exc.filename} ({exc.strerror})")
    except (KeyError, TypeError):
        _fail(EXIT_LATER, "the bastion's answer is incomplete")
    until = time.strftime("%H:%M:%S %Z", time.localtime(answer["valid_before"]))
    click.echo(f"signed in as machine {answer['user']} until {until};"
               f" run: ssh -F {config} -J bastion LOGIN@TARGET")


def _list(config: BastionConfig) -> None:
    directory = Directory(config.state)
    revoked = set(directory.revoked_users())
    live: dict[str, int] = {}
    for session in LiveSessions(config.state).list():
        live[session.user] = live.get(session.user, 0) + 1
    for machine in config.machines.values():
        claims = ", ".join(f"{k}={'|'.join(map(str, v))}" for k, v in machine.claims)
        flag = "  REVOKED" if machine.name in revoked else ""
        click.echo(f"{machine.name}{flag}  issuer={machine.issuer} audience={machine.audience} {claims}"
                   f"  groups={','.join(sorted(machine.groups)) or '-'}"
                   f"  shell={'yes' if machine.allow_shell else 'no'}  live={live.get(machine.name, 0)}")


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.group()
    def machines() -> None:
        """Workload identities: CI jobs and agents signing in with their platform's token."""

    @machines.command("list")
    @config_option
    def machines_list(config_path: Path) -> None:
        """Every configured machine: what its tokens must say, revoked or not, live sessions."""
        _list(load(config_path))

    @machines.command("revoke")
    @config_option
    @click.argument("name")
    @click.option("--by", default=lambda: os.environ.get("USER", "operator"),
                  help="Who revokes (for the log).")
    def machines_revoke(config_path: Path, name: str, by: str) -> None:
        """Refuse NAME's token exchanges and certificates from now on; end its live sessions."""
        config = load(config_path)
        if name not in config.machines:
            raise click.ClickException(f"no machine named {name!r} in {config_path}")
        directory = Directory(config.state)
        serials = directory.revoke(name, by)
        write_krl(krl_path(config.state_db), keys_for(config).login_ca.convert_to_public(),
                  directory.revoked_serials())
        live = LiveSessions(config.state).list(user=name)
        click.echo(f"revoked machine {name}: {len(serials)} certificates revoked;"
                   f" {len(live)} live sessions end within seconds")

    @machines.command("restore")
    @config_option
    @click.argument("name")
    def machines_restore(config_path: Path, name: str) -> None:
        """Undo `machines revoke NAME` (certificates issued before stay revoked)."""
        config = load(config_path)
        if not Directory(config.state).restore(name):
            raise click.ClickException(f"{name} is not revoked")
        click.echo(f"{name} may exchange tokens again")
