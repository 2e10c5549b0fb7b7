"""`bastion instances ...`: the instances sharing the state database, and announcing a reload."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bastion.cli.common import failure
from bastion.config import BastionConfig
from bastion.state.db import StateDatabase, StateError
from bastion.state.instances import CHANNEL_RELOAD, Instances


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.group()
    def instances() -> None:
        """The bastion instances sharing the state database: who holds a lease, and reloads."""

    @instances.command("list")
    @config_option
    def instances_list(config_path: Path) -> None:
        """Each instance with a row: id, host, pid, started, and whether its lease is live."""
        config = load(config_path)
        try:
            rows = Instances(config.state, "bastion-cli").listing()
        except StateError as exc:
            raise failure(exc) from None
        if not rows:
            click.echo("no instance has registered (none has served from this state database)")
            return
        now = time.time()
        for instance, host, pid, started, expires in rows:
            lease = (f"lease {expires - now:.0f} s left" if expires > now
                     else f"lease ran out {now - expires:.0f} s ago")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            click.echo(f"{instance}  {host}  pid {pid}  started {when}  {lease}")

    @instances.command("reload")
    @config_option
    def instances_reload(config_path: Path) -> None:
        """Ask every instance to reload (as SIGHUP does: the rules file, and what else may change
        without a restart). PostgreSQL only: with SQLite, send the one bastion SIGHUP."""
        config = load(config_path)
        if config.state_url is None:
            raise click.ClickException("the state is an SQLite file (one instance): send that bastion SIGHUP")
        try:
            db = StateDatabase.open(config.state_url)
            db.notify(CHANNEL_RELOAD, "reload")
            live = Instances(config.state, "bastion-cli").alive()
        except StateError as exc:
            raise failure(exc) from None
        click.echo(f"reload announced to {len(live)} live instances: {', '.join(live) or 'none'}")
