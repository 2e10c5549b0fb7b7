"""What the command groups share."""

from __future__ import annotations

import click

from bastion.config import BastionConfig
from bastion.errors import BastionError
from bastion.state.keys import KeyStore


def keys_for(config: BastionConfig) -> KeyStore:
    try:
        return KeyStore(config.keys_dir).load()
    except BastionError as exc:
        raise click.ClickException(exc.reason) from None
