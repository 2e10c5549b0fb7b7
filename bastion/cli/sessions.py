"""`bastion sessions ...`: who is connected now, and ending one session."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bastion.config import BastionConfig
from bastion.state.live import LiveSessions, session_table

KILL_WAIT = 10.0  # how long `sessions kill` waits to see the session gone


def register(
    main: click.Group,
    config_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    load: Callable[[Path], BastionConfig],
) -> None:
    @main.group()
    def sessions() -> None:
        """Live sessions (every instance sharing the state database): list them, end one."""

    @sessions.command("list")
    @config_option
    @click.option("--user", help="Only this user's sessions.")
    @click.option("--target", help="Only sessions to this target.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per session, for scripts.")
    def sessions_list(config_path: Path, user: str | None, target: str | None, as_json: bool) -> None:
        """Id, user, login@target, kind, client, started, idle for, bytes each way, instance,
        recording and command of every live session."""
        config = load(config_path)
        live = LiveSessions(config.state).list(user=user, target=target)
        now = time.time()
        if as_json:
            for session in live:
                click.echo(json.dumps({**session.as_dict(), "idle": round(session.idle(now), 1)}))
            return
        for line in session_table(live, now):
            click.echo(line)

    @sessions.command("kill")
    @config_option
    @click.argument("session_id")
    @click.option("--reason", default="", help="Shown to the user, logged and marked in the recording.")
    @click.option("--by", default=lambda: os.environ.get("USER", "operator"),
                  help="Who ends it (shown to the user and logged).")
    def sessions_kill(config_path: Path, session_id: str, reason: str, by: str) -> None:
        """End SESSION_ID: the user reads `bastion: session ended by BY: REASON`."""
        config = load(config_path)
        registry = LiveSessions(config.state)
        live = registry.request_kill(session_id, by, reason or "no reason given")
        if live is None:
            raise click.ClickException(f"no live session {session_id!r} (see `bastion sessions list`)")
        deadline = time.monotonic() + KILL_WAIT
        while registry.get(session_id) is not None:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"asked instance {live.instance} to end {session_id}; it has not yet"
                    " (is that bastion running?)")
            time.sleep(0.1)
        click.echo(f"ended {session_id} ({live.user}, {live.login}@{live.target})")
