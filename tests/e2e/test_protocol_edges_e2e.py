"""What a hostile authenticated client sends at the protocol level, checked for its effect on
the bastion (bench/fuzz.py runs many more such messages for a bounded time)."""

from __future__ import annotations

import pytest

from tests.support.lab import Lab, eventually

pytestmark = pytest.mark.e2e


def test_a_huge_destination_name_is_neither_echoed_nor_logged_whole(lab: Lab) -> None:
    paramiko = pytest.importorskip("paramiko")
    transport = paramiko.Transport(("127.0.0.1", lab.sandbox.port))
    try:
        transport.start_client(timeout=30)
        transport.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(str(lab.sandbox.key_path("alice"))))
        name = "flood-" + "d" * 60_000
        with pytest.raises(paramiko.ChannelException) as refused:
            transport.open_channel("direct-tcpip", (name, 22), ("127.0.0.1", 0), timeout=30)
        assert refused.value.code == 1  # administratively prohibited (paramiko keeps no reason text)
    finally:
        transport.close()
    [line] = eventually(lambda: [e for e in lab.events("jump_refused") if e["destination"].startswith("flood-")],
                        "the refusal in the audit log")
    assert len(line["destination"]) < 300 and len(line["reason"]) < 400
    assert line["reason"].endswith("(60006 characters):22 is not a configured target")
