"""Durations as the config and rules files write them."""

from __future__ import annotations

import re

from bastion.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object, *, where: str = "duration") -> int:
    """Seconds from `90`, `"30s"`, `"2m"`, `"8h"`, `"90d"` or `"1w"`."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like '2m', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: a duration cannot be negative")
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _UNITS[match.group(2)]
    raise ConfigError(f"{where}: expected a duration like '30s', '2m', '8h' or '90d', got {value!r}")
