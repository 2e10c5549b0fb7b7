"""What the command groups share."""

from __future__ import annotations

import click

from bastion.config import BastionConfig
from bastion.errors import BastionError
from bastion.state.keys import KeyStore


def failure(exc: BastionError) -> click.ClickException:
    """What `bastion` ends with for `exc`: its reason as the error line, its exit status."""

    class Failure(click.ClickException):
        exit_code = exc.exit_code

    return Failure(exc.reason)


def keys_for(config: BastionConfig) -> KeyStore:
    try:
        return KeyStore(config.keys_dir).load()
    except BastionError as exc:
        exc.reason = f"{config.path or 'config'}: keys_dir = {str(config.keys_dir)!r}: {exc.reason}"
        raise failure(exc) from None
