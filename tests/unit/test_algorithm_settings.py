"""[algorithms]: defaults, replacement lists, and names asyncssh does not implement."""

from __future__ import annotations

import pytest

from bastion.config import DEFAULT_KEX, UPSTREAM_CIPHERS, AlgorithmSettings, parse_config
from bastion.errors import ConfigError


def test_defaults_are_modern_and_reach_asyncssh() -> None:
    settings = parse_config({}).algorithms
    assert settings == AlgorithmSettings()
    assert settings.kex[0] == "mlkem768x25519-sha256"
    server, client = settings.server_options(), settings.client_options()
    for offered in (server["kex_algs"], client["kex_algs"]):
        assert not [a for a in offered if "sha1" in a or "nistp" in a or "group14" in a or "exchange" in a]
    assert all(m.endswith("-etm@openssh.com") for m in server["mac_algs"] + client["mac_algs"])
    assert "ssh-rsa" not in server["signature_algs"] and "ssh-dss" not in server["signature_algs"]
    assert client["encryption_algs"] == list(UPSTREAM_CIPHERS)
    assert server["compression_algs"] == client["compression_algs"] == ["none"]
    assert "signature_algs" not in client  # the bastion's own session keys are ed25519


def test_a_list_replaces_the_default_in_order() -> None:
    legacy = ["curve25519-sha256", "diffie-hellman-group14-sha256"]
    settings = parse_config({"algorithms": {"kex": legacy, "upstream_macs": ["hmac-sha2-256"]}}).algorithms
    assert settings.kex == tuple(legacy) and settings.upstream_kex == DEFAULT_KEX
    assert settings.upstream_macs == ("hmac-sha2-256",)


@pytest.mark.parametrize(("table", "message"), [
    ({"ciphers": ["aes128-gcm"]}, r"\[algorithms\] ciphers: not supported: aes128-gcm \(supported: .*aes128-gcm@openssh.com"),
    ({"kex": []}, r"\[algorithms\] kex: must list at least one algorithm"),
    ({"macs": "hmac-sha2-256"}, r"\[algorithms\].macs: expected list"),
    ({"cipher": ["aes128-ctr"]}, r"\[algorithms\]: unknown key 'cipher'"),
    ({"upstream_kex": ["sntrup761x25519-sha512"]}, r"upstream_kex: not supported: sntrup761x25519-sha512"),
])
def test_bad_lists_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"algorithms": table})
