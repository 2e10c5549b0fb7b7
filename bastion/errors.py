"""One error base class; each failure a user or operator can meet is a subclass with a code.

A subclass says what it maps to where it surfaces: `exit_code`, the `bastion` command's exit
status; `http_status`, the web service's answer. The classes live beside the code that raises
them (sign-in in `bastion.auth`, approvals in `bastion.state`, ...); the ones here belong to no
single part.
"""

from __future__ import annotations


class BastionError(Exception):
    """Base class: `reason` is one line saying what happened and, where it helps, what to do."""

    code = "bastion_error"
    exit_code = 1
    http_status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(BastionError):
    """The config file (or a file it names) is malformed; the reason names the file and key."""

    code = "config_error"


class KeyStoreError(BastionError):
    """Key material is missing, unreadable or has unsafe permissions."""

    code = "key_store_error"


class TargetUnreachable(BastionError):
    """The upstream TCP connection could not be made."""

    code = "target_unreachable"


class TargetHostKeyError(BastionError):
    """The target's host key is unknown or does not match the pinned one."""

    code = "target_host_key"


class UpstreamAuthError(BastionError):
    """The target refused the per-session certificate."""

    code = "upstream_auth"
