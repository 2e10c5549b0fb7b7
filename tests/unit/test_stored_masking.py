"""A bastion built from its config (`build_state`: no listener, no recorder process) stores
commands masked with the config's own detectors: in the approval store, the audit log and the
recording's markers, even with the streams' masking off."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import asyncssh

from bastion.app import build_state
from bastion.config import load_config
from bastion.core.masker import TextMasker
from bastion.stages.screening import ScreeningStage
from bastion.state.approvals import ApprovalStore
from bastion.state.events import SessionEnded
from bastion.state.keys import KeyStore
from recorder.transfers import SessionKind
from tests.support.lab import until
from tests.support.stages import SHELL, MarkedSession

KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
CONFIG = f"""
listen = "127.0.0.1:2200"
rules_file = "rules.toml"
log_file = "audit.log"

[users.alice]
keys = ["{KEY}"]

[targets.db-1]
address = "10.0.0.5"
logins = ["root"]

[recording]
enabled = false

[masking]
enabled = false
custom = [{{ name = "employee-id", regex = "EMP-([0-9]{{6}})", group = 1 }}]
"""
RULES = """
[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
"""


async def test_a_custom_detector_from_the_config_masks_a_stored_command(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(CONFIG)
    (tmp_path / "rules.toml").write_text(RULES)
    config = load_config(tmp_path / "bastion.toml")
    state = build_state(config, KeyStore(config.keys_dir))
    [stage] = [s for s in state.stages() if isinstance(s, ScreeningStage)]
    session = MarkedSession()
    held = replace(SHELL, kind=SessionKind.EXEC, command="needs-approval --employee EMP-123456", term_type=None)
    assert TextMasker().mask(held.command or "") == held.command  # the built-ins do not mask it
    stage.start(held, session)
    gate = asyncio.get_running_loop().create_task(stage.gate(held, session))
    store = ApprovalStore(config.state_db, masker=TextMasker())  # another process reading it
    await until(store.pending, "the approval request")
    stage.on_end(None, None)
    assert "cancelled" in str(await gate)
    # The log masks a command it is given as it is (as the session's end logs an exec command).
    state.audit.write(SessionEnded(session=held.session_id, user=held.user, target=held.target, login=held.login,
                                   kind=held.kind, command=held.command, key_id=held.key_id, bytes_in=0,
                                   bytes_out=0, duration=0.0))

    masked = "needs-approval --employee EMP-******"
    [request] = store.recent(10)
    assert (request.command, request.screen) == (masked, f"$ {masked}")
    log = (tmp_path / "audit.log").read_text()
    events = [(e["event"], e["command"]) for e in map(json.loads, log.splitlines()) if "command" in e]
    assert events == [("command_decision", masked), ("approval_requested", masked), ("session_ended", masked)]
    assert "123456" not in log
    assert session.markers and not any("123456" in marker for marker in session.markers)
