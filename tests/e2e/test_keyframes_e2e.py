"""Keyframes built ahead by the operator's command, `bastion recordings keyframes`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from player.keyframes import KeyframeCache
from recorder.asciicast import load_cast
from tests.support.casts import SESSION, make_cast

pytestmark = pytest.mark.e2e


def test_recordings_keyframes_command_builds_ahead(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text('recordings_dir = "recordings"\n')
    cast = tmp_path / "recordings" / "one.cast"
    cast.parent.mkdir()
    cast.write_bytes(make_cast(SESSION))
    result = subprocess.run([sys.executable, "-m", "bastion", "recordings", "keyframes", str(cast), "-c",
                             str(tmp_path / "bastion.toml")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "built keyframes for 1 recordings" in result.stdout
    cache = KeyframeCache(tmp_path / "recordings" / "keyframes")
    assert cache.load(cast, len(load_cast(cast.read_bytes()).events)) is not None
