"""`bastion demo`: a working bastion and a local target in one command."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import click

from bastion.demo.sandbox import Sandbox

DEMO_RULES = """\
# Command rules for the demo (see docs/screening.md).
[[rule]]
name = "no-rm-rf-root"
action = "deny"
message = "recursive deletes of / are not allowed"
program = "rm"
args = ["-*[rR]*", "/"]

[[rule]]
name = "drops-need-approval"
action = "approve"
command = "(?i)drop\\\\s+table"
approvers = ["dba"]
timeout = "5m"
"""


def bastion_command() -> str:
    """How the person who started the demo runs this same `bastion`: its name when that is what
    their PATH finds, else its path (`.venv/bin/bastion` after `scripts/demo`)."""
    installed = Path(sys.executable).parent / "bastion"
    if not installed.exists():
        return f"{shlex.quote(sys.executable)} -m bastion"
    found = shutil.which("bastion")
    if found is not None and Path(found).resolve() == installed.resolve():
        return "bastion"
    try:
        shown = installed.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(installed))
    return shlex.quote(str(shown)) if os.sep in str(shown) else shlex.quote(f".{os.sep}{shown}")


def run_demo(state_dir: Path, *, port: int, login: str) -> None:
    # SIGTERM must clean up like Ctrl-C: the bastion and sshd are our children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "rules.toml").write_text(DEMO_RULES)
    sandbox = Sandbox(state_dir, port=port, extra={"rules_file": "rules.toml"})
    sandbox.add_user("demo", ["ops"])
    sandbox.add_user("approver", ["dba"], with_key=False)
    sandbox.add_target("demo-target", logins=[login], groups=["ops"], aliases=["demo-target.local"])
    ssh_config = sandbox.write_ssh_config(user="demo")
    try:
        sandbox.start_bastion()
        cfg = shlex.quote(str(ssh_config))
        bastion = bastion_command()
        click.echo(
            f"""
bastion listening on 127.0.0.1:{port}
a throwaway sshd target runs on 127.0.0.1:{sandbox.servers['demo-target'].port}
state (config, keys, recordings, log): {state_dir}

Try it:
    ssh -F {cfg} -J bastion {login}@demo-target
    ssh -F {cfg} -J bastion {login}@demo-target 'uname -a'

Things to try: `rm -rf /` is denied; `echo DROP TABLE users` waits for approval
(approve it with: {bastion} approvals approve ID --as approver -c {shlex.quote(str(sandbox.config_path))});
`echo AKIAIOSFODNN7EXAMPLE` is masked. Replay what you did:
    {bastion} review -c {shlex.quote(str(sandbox.config_path))}
Audit log: tail -f {shlex.quote(str(sandbox.log_path))}
Ctrl-C stops the bastion and the target.
"""
        )
        assert sandbox.process is not None
        sandbox.process.wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        sandbox.stop()
