"""The `bastion` command as operators run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, need
from tests.support.stores import live_store


def bastion(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, text=True,
                          input=input, timeout=60, check=False)


@pytest.mark.parametrize("command", [[], ["serve"], ["check"], ["init"], ["demo"], ["ca"],
                                     ["ca", "known-hosts"], ["ca", "user-ca"], ["ca", "login-ca"],
                                     ["ca", "sign-login"], ["targets"], ["targets", "scan"],
                                     ["targets", "list"], ["play"], ["review"], ["rules", "check"],
                                     ["approvals", "approve"], ["recordings", "verify"], ["recordings", "prune"]])
def test_help_everywhere(command: list[str]) -> None:
    result = bastion(*command, "--help")
    assert result.returncode == 0
    assert "Usage: python -m bastion" in result.stdout


def test_config_errors_are_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text('listen = "127.0.0.1:2200"\n[targets.db-1]\nadress = "x"\n')
    result = bastion("check", "-c", str(config))
    assert result.returncode == 1
    expected = f'Error: {config}: [targets.db-1].address: missing (e.g. address = "10.0.0.5:22")'
    assert result.stderr.strip() == expected


def test_ca_commands_print_what_targets_and_users_need(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, port=2200)
    box.targets["db-1"] = {"address": "10.0.0.5", "aliases": ["db-1.internal"], "logins": ["root"]}
    config = str(box.write_config())
    user_ca = bastion("ca", "user-ca", "-c", config)
    assert user_ca.returncode == 0
    assert user_ca.stdout.strip() == (tmp_path / "hostkeys" / "user_ca.pub").read_text().strip()
    lines = bastion("ca", "known-hosts", "-c", config).stdout.splitlines()
    host_ca = (tmp_path / "hostkeys" / "host_ca.pub").read_text().split()[:2]
    assert lines[0].startswith("[127.0.0.1]:2200 ssh-ed25519 ")
    assert lines[1].split()[:2] == ["@cert-authority", "db-1,db-1.internal"]
    assert lines[1].split()[2:4] == host_ca
    assert "hostkeys" not in user_ca.stdout + "".join(lines)  # public lines only


def test_targets_scan_pins_the_key_then_the_jump_works(tmp_path: Path) -> None:
    need("ssh", "sshd")
    box = Sandbox(tmp_path)
    box.add_user("alice", ["ops"])
    server = box.add_target("db-1", logins=[LOGIN], groups=["ops"], pin=False)
    ssh_config = box.write_ssh_config("alice")
    config = str(box.config_path)
    try:
        assert "NOT PINNED" in bastion("targets", "list", "-c", config).stdout
        without_tty = bastion("targets", "scan", "db-1", "-c", config, input="y\n")
        assert without_tty.returncode == 1
        assert without_tty.stderr.strip() == ("Error: db-1: not pinned: there is no terminal to confirm on; "
                                              "check the fingerprint above and run again with --yes")
        assert "NOT PINNED" in bastion("targets", "list", "-c", config).stdout
        scan = bastion("targets", "scan", "db-1", "-c", config, "--yes")
        assert scan.returncode == 0, scan.stderr
        fingerprint = subprocess.run(["ssh-keygen", "-lf", str(server.host_key_path)],
                                     capture_output=True, text=True, check=True).stdout.split()[1]
        assert fingerprint in scan.stdout
        assert "pinned key" in bastion("targets", "list", "-c", config).stdout
        box.start_bastion()
        result = subprocess.run(["ssh", "-F", str(ssh_config), "-J", "bastion", f"{LOGIN}@db-1", "echo ok"],
                                capture_output=True, timeout=60, check=False)
        assert result.stdout == b"ok\n", result.stderr
    finally:
        box.stop()
    assert bastion("targets", "scan", "nope", "-c", config).returncode == 1


def test_login_certificate_opens_the_bastion(tmp_path: Path) -> None:
    need("ssh", "sshd")
    box = Sandbox(tmp_path)
    key = box.add_user("carol", ["ops"], with_key=False)  # no key in the config at all
    from bastion.demo.sandbox import make_user_key

    make_user_key(key, "carol@laptop")
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    ssh_config = box.write_ssh_config("carol")
    config = str(box.config_path)
    try:
        box.start_bastion()
        command = ["ssh", "-F", str(ssh_config), "-J", "bastion", f"{LOGIN}@db-1", "echo ok"]
        denied = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert denied.returncode == 255
        signed = bastion("ca", "sign-login", "-c", config, "--user", "carol", "--ttl", "5m", f"{key}.pub")
        assert signed.returncode == 0, signed.stderr
        assert Path(f"{key}-cert.pub").exists()
        allowed = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert allowed.stdout == b"ok\n", allowed.stderr
        # A certificate for another name does not open carol's account.
        bastion("ca", "sign-login", "-c", config, "--user", "dave", f"{key}.pub")
        wrong = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert wrong.returncode == 255
    finally:
        box.stop()
    methods = [e.get("method") for e in box.events() if e["event"] == "auth_succeeded"]
    assert methods == ["certificate"]


def test_approvals_show_escapes_what_the_session_put_in_the_request(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.cli.screening import show_request
    from bastion.core.masker import TextMasker
    from recorder.printable import UNSAFE

    command = "echo \x1b]0;owned title\x07 \u009b2J \u202e/ fr- mr"
    store = live_store(tmp_path / "state.db", masker=TextMasker())
    made = store.create(session="s1", requester="alice", target="db-1", login="root", command=command,
                        rule="r", approvers=("dba",), approvals=1, timeout=60,
                        screen=f"$ {command}\n\x1b[2J\u2028after")
    show_request(store, made.id, TextMasker())
    shown = capsys.readouterr().out
    assert not UNSAFE.search(shown.replace("\n", ""))
    assert "command   echo \\x1b]0;owned title\\x07 \\x9b2J \\u202e/ fr- mr\n" in shown
    assert "  | \\x1b[2J\\u2028after\n" in shown


def test_the_commands_the_demo_prints_run_as_printed(tmp_path: Path) -> None:
    """`scripts/demo` installs into .venv, which is not on the user's PATH: what the demo tells
    them to run must run from where they are, with the PATH they have."""
    root = Path(sys.executable).parents[2]
    plain_path = "/usr/bin:/bin"
    shown = subprocess.run([sys.executable, "-c", "from bastion.demo.command import bastion_command; "
                            "print(bastion_command())"], cwd=root, env={"PATH": plain_path},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown != "bastion"
    (tmp_path / "b.toml").write_text("")
    ran = subprocess.run(["sh", "-c", f"{shown} approvals list -c {tmp_path / 'b.toml'}"], cwd=root,
                         env={"PATH": plain_path}, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("no approval requests pending")


def test_check_prints_what_serving_will_do(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, port=2200)
    box.add_user("alice", ["ops"])
    box.targets["db-1"] = {"address": "localhost:2222", "logins": ["root"], "groups": ["ops"]}
    result = bastion("check", "-c", str(box.write_config()))
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()
    assert said[0].endswith("ok (1 user, 1 target), 1 warning")
    assert "  listen: ssh -J connects to 127.0.0.1:2200 (this machine only, port 2200)" in said
    assert any(line.startswith("  target db-1 -> localhost:2222 (") and "127.0.0.1" in line for line in said)
    assert "  warning: target db-1: no pinned host key (host_key, host_ca or `bastion targets scan db-1`); " \
           "sessions to it will fail" in said


def test_the_reviewers_commands_start_without_the_rest_of_the_cli(tmp_path: Path) -> None:
    """`play` and `review` skip the SSH, web and sign-in stacks (half the time to a first frame)."""
    probe = ("import sys\nsys.argv = ['bastion', 'play', '--help']\nfrom bastion.cli.entry import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('aiohttp', 'asyncssh', 'bastion.cli.main') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "Replay REF" in result.stdout and result.stdout.strip().endswith("[]")
    config = tmp_path / "bastion.toml"
    config.write_text('[targets.db-1]\nadress = "x"\n')
    for command in ("play", "review"):
        broken = bastion(command, "-c", str(config), *(["some-id"] if command == "play" else []))
        assert broken.returncode == 1 and broken.stderr.startswith(f"Error: {config}: "), broken.stderr
    cast = tmp_path / "x.cast"
    cast.write_bytes(b"not a recording\n")
    bad = bastion("play", str(cast))
    assert bad.returncode == 1 and "x.cast: line 1: not JSON" in bad.stderr, bad.stderr
