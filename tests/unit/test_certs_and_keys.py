from __future__ import annotations

import stat
from pathlib import Path

import asyncssh
import pytest

from bastion.config import TargetConfig
from bastion.errors import KeyStoreError
from bastion.state.keys import KeyStore, known_hosts_lines
from tests.support.certs import spec


def test_spec_fields() -> None:
    s = spec(source_address="10.0.0.2")
    assert s.principal == "root"
    assert s.key_id == "bastion user=alice target=db-1 login=root session=abc"
    assert (s.valid_after, s.valid_before) == (1_000_000 - 30, 1_000_000 + 120)
    assert s.source_address == ("10.0.0.2",)
    assert s.permit_pty and not s.permit_port_forwarding and not s.permit_agent_forwarding
    assert s.serial > 0 and s.serial != spec().serial


@pytest.mark.parametrize("bad", [{"login": ""}, {"ttl": 0}])
def test_spec_refuses_empty_principal_or_lifetime(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        spec(**bad)


def test_keystore_creates_private_keys_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys").load()
    first = store.user_ca.public_data
    for name in ("bastion_host", "inner_host", "host_ca", "user_ca", "login_ca"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert KeyStore(tmp_path / "keys").load().user_ca.public_data == first


def test_keystore_refuses_keys_others_can_read(tmp_path: Path) -> None:
    KeyStore(tmp_path).load()
    (tmp_path / "user_ca").chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        KeyStore(tmp_path).load()


def test_keystore_refuses_garbage(tmp_path: Path) -> None:
    KeyStore(tmp_path).load()
    (tmp_path / "host_ca").write_text("not a key")
    with pytest.raises(KeyStoreError, match="host_ca: not a readable private key"):
        KeyStore(tmp_path).load()


def test_host_certificate_names_every_alias(tmp_path: Path) -> None:
    store = KeyStore(tmp_path).load()
    target = TargetConfig(name="db-1", host="h", port=22, aliases=("db-1.internal",))
    cert = store.target_host_certificate(target)
    assert cert.principals == ["db-1", "db-1.internal"]
    assert cert.signing_key.public_data == store.host_ca.public_data
    assert store.target_host_certificate(target) is cert  # cached
    lines = known_hosts_lines(store, [target], ["[127.0.0.1]:2200"])
    assert lines[0].startswith("[127.0.0.1]:2200 ssh-ed25519 ")
    assert lines[1].startswith("@cert-authority db-1,db-1.internal ssh-ed25519 ")


def test_pinned_host_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path).load()
    target = TargetConfig(name="db-1", host="h", port=22)
    assert store.trusted_target_keys(target) == ([], [])
    one, two = (asyncssh.generate_private_key("ssh-ed25519").convert_to_public() for _ in range(2))
    store.pin_host_key("db-1", one)
    store.pin_host_key("db-2", two)
    store.pin_host_key("db-1", two)
    assert store.pinned_host_key("db-1").public_data == two.public_data  # type: ignore[union-attr]
    assert store.pinned_host_key("db-2").public_data == two.public_data  # type: ignore[union-attr]
    assert stat.S_IMODE(store.pinned_path.stat().st_mode) == 0o600
