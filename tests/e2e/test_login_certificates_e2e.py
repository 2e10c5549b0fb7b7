"""Login certificates and user names at the bastion, end to end with the real OpenSSH client:
every refusal is audited with its reason, a certificate is the one that was issued (serial and
key), and who a connection belongs to is recorded only once authentication has succeeded."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.auth.directory import Directory
from tests.support.lab import LOGIN, Lab, eventually, need

pytestmark = pytest.mark.e2e
TARGET = f"{LOGIN}@db-1"


def _key(lab: Lab, name: str, passphrase: str | None = None) -> tuple[Path, asyncssh.SSHKey]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    path = lab.sandbox.directory / f"certkey-{name}"
    key.write_private_key(path)
    os.chmod(path, 0o600)
    if passphrase is not None:
        subprocess.run(["ssh-keygen", "-q", "-p", "-N", passphrase, "-f", str(path)], check=True,
                       capture_output=True, timeout=30)
    key.write_public_key(path.with_name(path.name + ".pub"))
    return path, key


def _directory(lab: Lab) -> Directory:
    return Directory(lab.sandbox.directory / "bastion.db")


def _ssh_with_cert(lab: Lab, user: str, key: Path, cert: Path, command: str = "echo cert-ok",
                   target: str = TARGET) -> subprocess.CompletedProcess[bytes]:
    """`ssh -J user@bastion` offering only `key` and its certificate `cert`."""
    config = lab.sandbox.directory / f"ssh_config-cert-{key.name}"
    config.write_text(lab.ssh_config.read_text().replace(
        f"IdentityFile {lab.sandbox.key_path('alice')}", f"IdentityFile {key}\n    CertificateFile {cert}"))
    return subprocess.run(["ssh", "-v", "-F", str(config), "-J", f"{user}@bastion", target, command],
                          capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


def _refusals(lab: Lab, user: str) -> list[dict[str, Any]]:
    return [e for e in lab.events("auth_failed") if e.get("user") == user and e["method"] == "certificate"]


def _user() -> str:
    return f"cert-{secrets.token_hex(4)}"  # a name of its own: the audit lines found are this test's


def test_an_issued_certificate_logs_in(lab: Lab) -> None:
    key, _ = _key(lab, "issued")
    issued = _directory(lab).issue(lab.sandbox.keys.login_ca, key.with_name(key.name + ".pub").read_text(),
                                   user="alice", identity="test:issued", ttl=600)
    cert = key.with_name(key.name + "-cert.pub")
    issued.certificate.write_certificate(cert)
    result = _ssh_with_cert(lab, "alice", key, cert)
    assert result.stdout == b"cert-ok\n", result.stderr
    assert any(e["method"] == "certificate" for e in lab.events("auth_succeeded") if e["user"] == "alice")


def test_a_certificate_reusing_an_issued_serial_for_another_key_is_refused(lab: Lab) -> None:
    user = _user()
    first, _ = _key(lab, "serial-first")
    issued = _directory(lab).issue(lab.sandbox.keys.login_ca, first.with_name(first.name + ".pub").read_text(),
                                   user=user, identity="test:serial", ttl=600)
    # The login CA's signature, the issued serial, the right principal and validity: another key.
    other, other_key = _key(lab, "serial-other")
    now = int(time.time())
    forged = lab.sandbox.keys.login_ca.generate_user_certificate(
        other_key, issued.key_id, serial=issued.serial, principals=[user],
        valid_after=now - 60, valid_before=now + 600)
    cert = other.with_name(other.name + "-cert.pub")
    forged.write_certificate(cert)
    result = _ssh_with_cert(lab, user, other, cert)
    assert result.returncode == 255 and b"cert-ok" not in result.stdout
    assert not [e for e in lab.events("auth_succeeded") if e["user"] == user]
    reasons = {e["reason"] for e in _refusals(lab, user)}
    assert reasons == {f"certificate serial {issued.serial} was issued for another key"}, reasons


@pytest.mark.parametrize(("case", "offset", "reason"), [
    ("expired", -3600, "certificate expired (at "),
    ("not-yet-valid", 3600, "certificate not yet valid (valid from "),
])
def test_a_certificate_outside_its_validity_is_refused_and_audited(lab: Lab, case: str, offset: int,
                                                                   reason: str) -> None:
    user = _user()
    key, _ = _key(lab, case)
    issued = _directory(lab).issue(lab.sandbox.keys.login_ca, key.with_name(key.name + ".pub").read_text(),
                                   user=user, identity=f"test:{case}", ttl=600, now=time.time() + offset)
    cert = key.with_name(key.name + "-cert.pub")
    issued.certificate.write_certificate(cert)
    result = _ssh_with_cert(lab, user, key, cert)
    assert result.returncode == 255 and b"cert-ok" not in result.stdout
    refusals = eventually(lambda: _refusals(lab, user), f"auth_failed for the {case} certificate")
    assert all(e["reason"].startswith(reason) for e in refusals), refusals


def test_a_host_certificate_is_refused_and_audited(lab: Lab) -> None:
    """OpenSSH skips a host certificate named by CertificateFile, but offers one from its agent."""
    need("ssh-agent", "ssh-add")
    user = _user()
    key, public = _key(lab, "host-type")
    now = int(time.time())
    host_cert = lab.sandbox.keys.login_ca.generate_host_certificate(
        public, "a host certificate", principals=[user], valid_after=now - 60, valid_before=now + 600)
    host_cert.write_certificate(key.with_name(key.name + "-cert.pub"))
    socket = lab.sandbox.directory / f"agent-{user}.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        eventually(socket.exists, "ssh-agent's socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}
        subprocess.run(["ssh-add", str(key)], env=env, capture_output=True, check=True, timeout=30)
        listed = subprocess.run(["ssh-add", "-L"], env=env, capture_output=True, text=True, check=True).stdout
        assert "ssh-ed25519-cert-v01@openssh.com" in listed
        config = lab.sandbox.directory / f"ssh_config-{user}"
        config.write_text(lab.ssh_config.read_text().replace(
            f"IdentityFile {lab.sandbox.key_path('alice')}\n    IdentitiesOnly yes",
            f"IdentityFile none\n    IdentitiesOnly no\n    IdentityAgent {socket}"))
        result = subprocess.run(["ssh", "-F", str(config), "-J", f"{user}@bastion", TARGET, "echo cert-ok"],
                                capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    finally:
        agent.terminate()
        agent.wait(10)
    assert result.returncode == 255 and b"cert-ok" not in result.stdout
    refusals = eventually(lambda: _refusals(lab, user), "auth_failed for the host certificate")
    assert {e["reason"] for e in refusals} == {"a host certificate cannot log in a user"}


def test_a_certificate_accepted_but_never_signed_with_does_not_name_the_connection(lab: Lab) -> None:
    """The client offers a valid certificate (the bastion answers that it would accept it),
    then cannot sign: its key needs a passphrase and ssh runs in batch mode. The connection
    never authenticated, so its audit lines must not say it was this user's."""
    user = _user()
    key, _ = _key(lab, "passphrase", passphrase="not typed")
    issued = _directory(lab).issue(lab.sandbox.keys.login_ca, key.with_name(key.name + ".pub").read_text(),
                                   user=user, identity="test:passphrase", ttl=600)
    cert = key.with_name(key.name + "-cert.pub")
    issued.certificate.write_certificate(cert)
    before = len(lab.sandbox.events())
    result = _ssh_with_cert(lab, user, key, cert)
    assert result.returncode == 255 and b"cert-ok" not in result.stdout
    assert b"Server accepts key" in result.stderr
    closed = eventually(lambda: len(lab.events("connection_closed")) and lab.sandbox.events()[before:],
                        "the connection's end in the audit log")
    assert not [e for e in lab.sandbox.events() if e.get("user") == user and e["event"] != "auth_failed"], closed


def _ssh_as(lab: Lab, name: str, host: str, login: str) -> subprocess.CompletedProcess[bytes]:
    """ssh with `User` for `host` set in its config file: OpenSSH refuses control characters in a
    user name given on its command line, not in one from a config file."""
    config = lab.sandbox.directory / f"ssh_config-name-{name}"
    config.write_text(f"Host {host}\n    User {login}\n\n" + lab.ssh_config.read_text())
    return subprocess.run(["ssh", "-F", str(config), "-J", "bastion", "db-1", "echo no"],
                          capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_inner_logins_dropped_before_any_certificate_are_audited(lab: Lab) -> None:
    """An empty login never starts a login (asyncssh skips begin_auth), a login with control
    characters makes asyncssh drop the connection: neither reaches a certificate, both are
    refused with an audit line naming why."""
    before = len(lab.events("login_refused"))
    result = _ssh_as(lab, "control", "db-1", "ro\x01ot")
    assert result.returncode == 255 and b"no" not in result.stdout
    empty = lab.ssh("-l", "", "db-1", "echo no")
    assert empty.returncode == 255 and b"no" not in empty.stdout
    refused = eventually(lambda: lab.events("login_refused")[before:] if len(
        lab.events("login_refused")) >= before + 2 else None, "two login_refused lines")
    by_login = {e["login"]: e["reason"] for e in refused if e["user"] == "alice"}
    assert by_login.get("ro\\x01ot") == "name contains control characters", refused
    assert by_login.get("") == "an empty login is never allowed", refused
    assert not [e for e in lab.events("upstream_connected") if e["login"] in {"", "ro\x01ot"}]


def test_a_bastion_user_name_with_control_characters_is_audited(lab: Lab) -> None:
    result = _ssh_as(lab, "outer-control", "bastion", "al\x01ice")
    assert result.returncode == 255 and b"no" not in result.stdout
    refused = eventually(lambda: [e for e in lab.events("auth_failed") if e["user"] == "al\\x01ice"],
                         "auth_failed for the name")
    assert refused[0]["method"] == "none" and refused[0]["reason"] == "name contains control characters"
