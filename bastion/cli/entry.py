"""The `bastion` command's entry point. `play` and `review`, a reviewer's commands, start
without importing the rest of the command line (the SSH, web, sign-in and screening stacks):
that import took half of the time to the first frame. Every other command is the full CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.config import BastionConfig

PLAYER_COMMANDS = ("play", "review")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in PLAYER_COMMANDS:
        player_main()
        return
    from bastion.cli.main import main as full

    full()


def _load(config_path: Path) -> BastionConfig:
    import click

    from bastion.config import load_config
    from bastion.errors import BastionError

    try:
        return load_config(config_path)
    except BastionError as exc:
        reason, code = exc.reason, exc.exit_code

        class Failure(click.ClickException):
            exit_code = code

        raise Failure(reason) from None


def player_main() -> None:
    import click

    from player import cli as player_cli

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def bastion() -> None:
        """An SSH access gateway (the reviewer's commands)."""

    def registry(config: object) -> player_cli.Registry:
        from bastion.cli.livereview import ReviewRegistry
        from bastion.config import BastionConfig  # with a config only: it brings asyncssh

        assert isinstance(config, BastionConfig)
        return ReviewRegistry(config)

    player_cli.register(bastion, _load, registry)
    bastion()
