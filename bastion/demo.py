"""`bastion demo`: a working bastion and a local target in one command."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

import click

from bastion.sandbox import Sandbox


def run_demo(state_dir: Path, *, port: int, login: str) -> None:
    # SIGTERM must clean up like Ctrl-C: the bastion and sshd are our children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sandbox = Sandbox(state_dir, port=port)
    sandbox.add_user("demo", ["ops"])
    sandbox.add_target("demo-target", logins=[login], groups=["ops"], aliases=["demo-target.local"])
    ssh_config = sandbox.write_ssh_config(user="demo")
    try:
        sandbox.start_bastion()
        cfg = shlex.quote(str(ssh_config))
        click.echo(
            f"""
bastion listening on 127.0.0.1:{port}
a throwaway sshd target runs on 127.0.0.1:{sandbox.servers['demo-target'].port}
state (config, keys, recordings, log): {state_dir}

Try it:
    ssh -F {cfg} -J bastion {login}@demo-target
    ssh -F {cfg} -J bastion {login}@demo-target 'uname -a'

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
