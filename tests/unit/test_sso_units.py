"""The SSO directory on its own: identity binding, what may be certified, rate limits, sessions
(revocation read back by the real ssh-keygen is in tests/e2e/test_sso_e2e.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import asyncssh
import pytest

from bastion.auth.directory import CERT_RATE, Directory, SSOError, certificate_info, check_public_key
from bastion.config import UserConfig
from tests.support.certs import ident, public


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path / "state.db")


@pytest.fixture(scope="module")
def ca() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def test_first_sign_in_binds_the_name_to_the_identity(directory: Directory) -> None:
    assert directory.sign_in(ident("s-1", "alice"), {}) == ("alice", frozenset({"ops"}))
    # Groups follow the provider at each sign-in.
    assert directory.sign_in(ident("s-1", "alice", ("ops", "dba")), {})[1] == {"ops", "dba"}
    assert directory.sso_user("alice").groups == {"ops", "dba"}  # type: ignore[union-attr]
    with pytest.raises(SSOError, match="bound to a different identity"):
        directory.sign_in(ident("s-2", "alice"), {})  # someone renamed themselves alice
    with pytest.raises(SSOError, match="signed in before as alice"):
        directory.sign_in(ident("s-1", "alice2"), {})  # alice renamed at the provider
    users = {"bob": UserConfig("bob", groups=frozenset({"dev"}), oidc_subject="s-bob")}
    assert directory.sign_in(ident("s-bob", "robert", ()), users) == ("bob", frozenset({"dev"}))


def test_only_fit_public_keys_are_certified(ca: asyncssh.SSHKey) -> None:
    assert check_public_key(public(), ca).get_algorithm() == "ssh-ed25519"
    assert check_public_key(public("ecdsa-sha2-nistp256"), ca)
    assert check_public_key(public("ssh-rsa", key_size=3072), ca)
    with pytest.raises(SSOError, match="at least 3072 bits"):
        check_public_key(public("ssh-rsa", key_size=2048), ca)
    with pytest.raises(SSOError, match="certificate authority"):
        check_public_key(ca.export_public_key().decode(), ca)
    cert = ca.generate_user_certificate(asyncssh.generate_private_key("ssh-ed25519"), "x", principals=["a"])
    with pytest.raises(SSOError, match="certificate, not a public key"):
        check_public_key(cert.export_certificate().decode(), ca)
    for bad in ("", "ssh-ed25519 AAAA", "not a key at all", "x" * 20000):
        with pytest.raises(SSOError):
            check_public_key(bad, ca)


def test_certificates_say_who_and_how_long(directory: Directory, ca: asyncssh.SSHKey) -> None:
    issued = directory.issue(ca, public(), user="alice", identity="idp#s-1", ttl=3600, now=1_800_000_000)
    info = certificate_info(issued.certificate)
    assert info["principals"] == ["alice"] and info["serial"] == issued.serial
    assert info["valid_before"] == 1_800_003_600 and info["valid_after"] == 1_800_000_000 - 60
    assert info["key_id"] == f"bastion-login user=alice identity=idp#s-1 serial={issued.serial}"
    fingerprint = issued.certificate.key.get_fingerprint()
    assert directory.certificate_allowed("alice", issued.serial, fingerprint) is None
    assert directory.certificate_allowed("bob", issued.serial, fingerprint) == "certificate was issued to another user"
    assert directory.certificate_allowed("alice", 12345, fingerprint) == "certificate not issued by this bastion's records"
    # The same serial on a certificate for another key is not the certificate that was issued.
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint()
    assert directory.certificate_allowed("alice", issued.serial, other) == (
        f"certificate serial {issued.serial} was issued for another key")
    with pytest.raises(SSOError, match="no user name"):
        directory.issue(ca, public(), user="", identity="idp#x", ttl=60)


def test_certificates_are_rate_limited_per_identity(directory: Directory, ca: asyncssh.SSHKey,
                                                    tmp_path: Path) -> None:
    key = public()
    for _ in range(CERT_RATE[0]):
        directory.issue(ca, key, user="alice", identity="idp#s-1", ttl=60)
    with pytest.raises(SSOError, match="too many certificates"):
        directory.issue(ca, key, user="alice", identity="idp#s-1", ttl=60)
    directory.issue(ca, key, user="bob", identity="idp#s-2", ttl=60)  # others are not affected
    other_process = Directory(tmp_path / "state.db")
    with pytest.raises(SSOError, match="too many certificates"):  # the count is in the database
        other_process.issue(ca, key, user="alice", identity="idp#s-1", ttl=60)


def test_the_certificate_rate_holds_for_processes_issuing_at_once(ca: asyncssh.SSHKey, tmp_path: Path) -> None:
    """Workers (or instances) issuing for one identity at the same moment share one count: the
    count and the row it adds are one transaction, so no race issues more than CERT_RATE."""
    Directory(tmp_path / "state.db")
    workers = [Directory(tmp_path / "state.db") for _ in range(4 * CERT_RATE[0])]
    issued: list[bool] = []
    lock = threading.Lock()

    def issue(directory: Directory) -> None:
        try:
            directory.issue(ca, public(), user="alice", identity="idp#s-1", ttl=60)
            ok = True
        except SSOError:
            ok = False
        with lock:
            issued.append(ok)

    threads = [threading.Thread(target=issue, args=(d,)) for d in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(issued) == len(workers)
    assert issued.count(True) == CERT_RATE[0]
