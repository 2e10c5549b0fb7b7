"""`bastion`: serve, try it out, and manage keys and targets."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from bastion import __version__
from bastion.cli import instances as instances_cli
from bastion.cli import login as login_cli
from bastion.cli import machines as machines_cli
from bastion.cli import recordings as recordings_cli
from bastion.cli import screening as screening_cli
from bastion.cli import sessions as sessions_cli
from bastion.cli.common import failure, keys_for
from bastion.config import MAX_WORKERS, BastionConfig, load_config, workers_for
from bastion.core.durations import parse_duration
from bastion.core.limits import WaitingCounts
from bastion.core.words import counted
from bastion.errors import BastionError
from bastion.state.keys import KeyStore, known_hosts_lines, public_line
from player import cli as player_cli

DEFAULT_CONFIG = "bastion.toml"
config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("BASTION_CONFIG", DEFAULT_CONFIG),
    show_default="$BASTION_CONFIG or ./bastion.toml",
    help="The bastion's TOML config file.",
)


def _load(config_path: Path) -> BastionConfig:
    try:
        config = load_config(config_path)
    except BastionError as exc:
        raise failure(exc) from None
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bastion")
def main() -> None:
    """An SSH access gateway: users keep `ssh -J`, the bastion logs into targets with
    per-session certificates and sees every session."""


@main.command()
@config_option
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
              help="Worker processes sharing the ports (default: the config's `workers`, else 1).")
@click.option("--worker", "worker", type=int, default=None, hidden=True)  # set by the supervisor
@click.option("--waiting-board", "board", type=int, default=None, hidden=True)  # ditto: a shared fd
def serve(config_path: Path, workers: int | None, worker: int | None, board: int | None) -> None:
    """Run the bastion in the foreground until SIGTERM or Ctrl-C."""
    from bastion.app import build_state
    from bastion.ssh.server import Bastion

    config = _load(config_path)
    if workers is not None and workers != config.workers:
        try:
            config = replace(config, workers=workers_for(config, workers))
        except BastionError as exc:
            raise failure(exc) from None
    if config.workers > 1 and worker is None:
        from bastion.cli.workers import Supervisor
        from bastion.state.audit import AuditLog

        audit = AuditLog(path=config.log_file, masker=config.masking.text_masker())
        sys.exit(asyncio.run(Supervisor(config, config_path, audit).run()))
    try:
        state = build_state(config, keys_for(config), worker=worker or 0)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{config_path}: recordings_dir = {str(config.recordings_dir)!r}: "
                                   f"cannot set up recordings: {exc}") from None
    try:
        # The one line goes to stdout even when the log goes to a file: it says where to connect.
        asyncio.run(Bastion(state, waiting=_waiting_board(board, config, worker))
                    .serve_forever(announce=click.echo))
    except BastionError as exc:
        raise failure(exc) from None
    except OSError as exc:
        raise click.ClickException(
            f"{config_path}: listen = \"{config.listen_host}:{config.listen_port}\": cannot listen there: "
            f"{exc.strerror or exc}"
        ) from None


def _waiting_board(fd: int | None, config: BastionConfig, worker: int | None) -> WaitingCounts | None:
    """A worker's view of the pre-authentication counts that all the workers share."""
    if fd is None:
        return None
    from bastion.ssh.limits import SharedCounts

    return SharedCounts(fd, config.workers, worker or 0)


@main.command()
@config_option
def check(config_path: Path) -> None:
    """Validate the config file, the rules and the key folder, then say what serving it will do:
    where it listens, each target and what its name resolves to, and warnings (targets without
    a pinned host key, approver groups without members, rules that can never match)."""
    from bastion.cli.check import findings, resolve
    from bastion.rules_file import load_rules

    config = _load(config_path)
    keys = keys_for(config)
    rules = None
    if config.rules_file is not None:
        try:
            rules = load_rules(config.rules_file)
        except BastionError as exc:
            raise failure(exc) from None
    counts = f"{counted(len(config.users), 'user')}, {counted(len(config.targets), 'target')}"
    if rules is not None:
        counts += f", {len(rules.rules)} rules"
    if config.oidc is not None:
        counts += f", sign-in at {config.oidc.issuer}"
    if config.notify:
        counts += f", notifying {', '.join(d.name for d in config.notify)}"
    lines = findings(config, rules, pinned=lambda target: any(keys.trusted_target_keys(target)),
                     resolved=resolve([target.host for target in config.targets.values()]))
    warnings = sum(1 for line in lines if line.warning)
    shared = _shared_keys(config, keys)
    found = f", {counted(warnings, 'warning')}" if warnings else ""
    click.echo(f"{config_path}: ok ({counts}){found}")
    for line in lines:
        click.echo(f"  {line}")
    click.echo(f"  {shared}")


def _shared_keys(config: BastionConfig, keys: KeyStore) -> str:
    """Whether this instance's keys are the ones the other instances use (their fingerprints
    are recorded in the state database by the first instance). A mismatch fails the check."""
    from bastion.app import key_fingerprints
    from bastion.state.db import StateError
    from bastion.state.instances import Instances

    if config.state_url is None and not config.state_db.exists():
        return "keys: no state database yet (the first instance records the keys' fingerprints)"
    try:
        instances = Instances(config.state, "bastion-check")
        recorded = instances.recorded_keys()
        mismatches = instances.key_mismatches(key_fingerprints(config, keys))
    except StateError as exc:
        raise failure(exc) from None
    if mismatches:
        raise click.ClickException(
            "this instance's keys differ from the ones the other instances use: "
            + "; ".join(str(m) for m in mismatches)
            + f" (share {config.keys_dir} between instances: docs/instances.md)")
    if not recorded:
        return "keys: none recorded yet (the first instance to serve records their fingerprints)"
    return f"keys: match the {len(recorded)} fingerprints recorded in the state database"


STARTER_CONFIG = """\
# The bastion's config. Relative paths resolve against this file's folder.
# Check it with: bastion check -c {name}

listen = "127.0.0.1:2200"          # where users' `ssh -J` connects
keys_dir = "hostkeys"              # CAs and host keys, generated on first start (0600)
recordings_dir = "recordings"      # session recordings
# log_file = "bastion.log"         # JSON lines; stderr when unset
# names = ["bastion.example.com"]  # names users reach the bastion by (for known_hosts)
grace_period = "30s"               # on SIGTERM, how long live sessions may finish

[certificates]
ttl = "2m"                         # lifetime of each per-session target certificate
backdate = "30s"                   # tolerance for clocks behind ours
# source_address = "10.0.0.2"      # the bastion's outbound address, pinned in certificates

[limits]                           # what one client or user may hold at once; 0 is no limit
unauthenticated = 200              # connections not signed in yet, in total (sshd: MaxStartups)
unauthenticated_per_source = 20    # of them from one client address
sessions_per_user = 100            # jumps to targets one user holds open at once

[session]
env_allow = ["TERM", "LANG", "LC_*"]
allow_port_forwarding = false     # `ssh -L`/`-W` inside the jump, to what the target reaches

# Prometheus metrics, /healthz and /readyz on a listener of their own (docs/operations.md):
# [metrics]
# listen = "127.0.0.1:9122"

# Approval pages, chat notifications and single sign-on (docs/approvals.md, docs/sign-in.md):
# [web]
# listen = "127.0.0.1:8080"
# public_url = "https://bastion.example.com"
#
# [oidc]
# issuer = "https://idp.example.com"
# client_id = "bastion"
# client_secret_file = "oidc-client-secret"
# cli_client_id = "bastion-cli"    # `bastion login` (a public client with the device grant)
#
# [[notify]]
# kind = "slack"                   # or "mattermost", "webhook"
# url_file = "slack-webhook-url"
#
# CI jobs and agents sign in with their platform's OIDC token (docs/machines.md):
# [[machines]]
# name = "deploy-web"
# issuer = "https://token.actions.githubusercontent.com"
# audience = "bastion"
# claims = {{ repository = "acme/web", ref = "refs/heads/main" }}
# groups = ["deployers"]

# One table per user; keys are OpenSSH public key lines.
[users.alice]
keys = ["ssh-ed25519 AAAA... alice@laptop"]
groups = ["ops"]

# One table per target. Users reach it as `ssh -J bastion root@db-1`.
[targets.db-1]
address = "10.0.0.5:22"
aliases = ["db-1.internal"]
logins = ["root", "deploy"]
groups = ["ops"]
# Pin the target's host key (or trust its host CA with host_ca = "..."), or run
# `bastion targets scan db-1` to pin the key it presents now.
# host_key = "ssh-ed25519 AAAA..."
"""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter config to PATH (default ./bastion.toml)."""
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; use --force to overwrite it")
    path.write_text(STARTER_CONFIG.format(name=path.name))
    click.echo(f"wrote {path}; edit users and targets, then run: bastion serve -c {path}")


# -- ca -------------------------------------------------------------------------------------


@main.group()
def ca() -> None:
    """The bastion's certificate authorities (created on first use)."""


@ca.command("known-hosts")
@config_option
def ca_known_hosts(config_path: Path) -> None:
    """Print the known_hosts lines users need: the bastion's key and the targets' CA."""
    config = _load(config_path)
    hosts = [f"[{config.listen_host}]:{config.listen_port}" if config.listen_port != 22
             else config.listen_host, *config.names]
    for line in known_hosts_lines(keys_for(config), list(config.targets.values()), hosts):
        click.echo(line)


@ca.command("user-ca")
@config_option
def ca_user_ca(config_path: Path) -> None:
    """Print the user CA public key for targets' `TrustedUserCAKeys` file."""
    click.echo(public_line(keys_for(_load(config_path)).user_ca.convert_to_public()))


@ca.command("login-ca")
@config_option
def ca_login_ca(config_path: Path) -> None:
    """Print the CA that signs certificates users present to the bastion itself."""
    click.echo(public_line(keys_for(_load(config_path)).login_ca.convert_to_public()))


@ca.command("sign-login")
@config_option
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--user", required=True, help="Bastion user name (the certificate's principal).")
@click.option("--ttl", default="8h", show_default=True, help="Lifetime, e.g. 30m, 8h, 7d.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the certificate (default: KEY-cert.pub next to the key).")
def ca_sign_login(config_path: Path, public_key: Path, user: str, ttl: str, output: Path | None) -> None:
    """Issue a certificate that lets PUBLIC_KEY log into the bastion as --user."""
    from bastion.auth.directory import Directory

    config = _load(config_path)
    try:
        lifetime = parse_duration(ttl, where="--ttl")
        # Recorded like the certificates `bastion login` gets, so revocation covers it too.
        issued = Directory(config.state).issue(
            keys_for(config).login_ca, public_key.read_text(), user=user,
            identity=f"operator:{getpass.getuser()}", ttl=lifetime)
    except BastionError as exc:
        raise failure(exc) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    name = public_key.name.removesuffix(".pub")
    target = output or public_key.with_name(f"{name}-cert.pub")
    issued.certificate.write_certificate(target)
    click.echo(f"wrote {target} (user {user}, valid {ttl})")


# -- targets --------------------------------------------------------------------------------


@main.group()
def targets() -> None:
    """Configured targets and their pinned host keys."""


@targets.command("list")
@config_option
def targets_list(config_path: Path) -> None:
    """List targets with their address, logins and host key trust."""
    config = _load(config_path)
    keys = keys_for(config)
    for target in config.targets.values():
        host_keys, cas = keys.trusted_target_keys(target)
        trust = "host CA" if cas else "pinned key" if host_keys else "NOT PINNED (run targets scan)"
        click.echo(
            f"{target.name:<20} {target.host}:{target.port:<6} logins={','.join(target.logins) or '-'} "
            f"names={','.join(target.names)} trust={trust}"
        )


@targets.command("scan")
@config_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Pin without asking.")
def targets_scan(config_path: Path, name: str, yes: bool) -> None:
    """Fetch NAME's current host key and pin it (an explicit operator step)."""
    from bastion.ssh.upstream import fetch_host_key

    config = _load(config_path)
    target = config.targets.get(name)
    if target is None:
        raise click.ClickException(f"no target named {name!r} in {config_path}")
    if target.host_key or target.host_ca:
        raise click.ClickException(f"{name} already has host_key/host_ca in {config_path}; edit it there")
    try:
        key = asyncio.run(fetch_host_key(target))
    except BastionError as exc:
        raise failure(exc) from None
    click.echo(f"{name} ({target.host}:{target.port}) presents {key.get_fingerprint()}")
    keys = keys_for(config)
    old = keys.pinned_host_key(name)
    if old is not None and old.public_data != key.public_data:
        click.echo(f"WARNING: this replaces the pinned key {old.get_fingerprint()}", err=True)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(f"{name}: not pinned: there is no terminal to confirm on; check the "
                                       "fingerprint above and run again with --yes")
        if not click.confirm("Pin this key?", default=False):
            raise click.ClickException("not pinned")
    keys.pin_host_key(name, key)
    click.echo(f"pinned in {keys.pinned_path}")


# -- demo -----------------------------------------------------------------------------------


@main.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("bastion-demo"), show_default=True,
              help="Where the demo keeps keys, config, recordings and logs.")
@click.option("--port", default=2200, show_default=True, help="Port the bastion listens on.")
def demo(state_dir: Path, port: int) -> None:
    """Start a bastion and a throwaway local sshd target, and print the `ssh -J` to try."""
    from bastion.demo.command import run_demo

    try:
        run_demo(state_dir.resolve(), port=port, login=getpass.getuser())
    except BastionError as exc:
        raise failure(exc) from None
    except (RuntimeError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


recordings_cli.register(main, config_option, _load)
screening_cli.register(main, config_option, _load)
login_cli.register(main, config_option, _load)
sessions_cli.register(main, config_option, _load)
instances_cli.register(main, config_option, _load)
machines_cli.register(main, config_option, _load)
player_cli.register(main, _load)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
