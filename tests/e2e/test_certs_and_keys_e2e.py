"""Session certificates as OpenSSH's own tools read them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from bastion.core.certs import mint_session_certificate
from tests.support.certs import spec

pytestmark = pytest.mark.e2e


def test_minted_certificate_says_what_the_spec_says(tmp_path: Path) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    s = spec(source_address="127.0.0.1")
    key, cert = mint_session_certificate(ca, s)
    assert cert.principals == ["root"]
    # OpenSSH's own parser reads what we signed.
    cert.write_certificate(tmp_path / "c.pub")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "c.pub")],
                             capture_output=True, text=True, check=True).stdout
    assert f'Key ID: "{s.key_id}"' in listing
    assert f"Serial: {s.serial}" in listing
    assert "source-address 127.0.0.1" in listing
    assert cert.signing_key.public_data == ca.public_data
    assert cert.key.public_data == key.public_data
    assert "source-address" in cert.options
    extensions = listing.split("Extensions:")[1].split()
    assert extensions == ["permit-pty"]
    _, second = mint_session_certificate(ca, s)
    assert second.key.public_data != cert.key.public_data  # a fresh key every time
