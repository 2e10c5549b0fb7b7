"""What screening stores of a command, a screen and dropped keys: masked and bounded."""

from __future__ import annotations

import hashlib

from bastion.core.masker import TextMasker
from bastion.core.stored import HEAD, stored_command, stored_keys, stored_screen
from tests.support.samples import AWS_ID, GH

MASKER = TextMasker()  # the built-in detectors


def test_a_short_command_is_stored_whole_and_masked() -> None:
    stored = stored_command(f"echo {GH}", MASKER)
    assert stored.fields() == {"command": f"echo ghp_{'*' * (len(GH) - 4)}"}
    assert str(stored) == stored.text


def test_a_long_command_keeps_its_head_length_and_hash_and_a_secret_across_the_cut_is_masked() -> None:
    command = "x" * (HEAD - 10) + f" {AWS_ID} " + "y" * 100_000
    stored = stored_command(command, MASKER)
    assert stored.text == "x" * (HEAD - 10) + " AKIA*****"  # the cut went through the key
    assert stored.fields() == {"command": stored.text, "command_length": len(command),
                               "command_sha256": hashlib.sha256(command.encode()).hexdigest()}
    assert str(stored).endswith(f"… [{len(command)} characters, sha256 {stored.sha256}]")


def test_a_secret_the_terminal_wrapped_is_masked_on_the_stored_screen() -> None:
    width = 20
    line = f"$ echo {AWS_ID}"
    rows = [line[:width], line[width:], "$"]
    masked = stored_screen("\n".join(rows), width, MASKER).split("\n")
    assert masked == [f"$ echo AKIA{'*' * 9}", "*" * 7, "$"]


def test_dropped_keys_are_masked_escaped_and_bounded() -> None:
    keys = f"echo {GH}\r\x03".encode()
    assert stored_keys(keys, len(keys), MASKER) == f"{len(keys)} bytes: echo ghp_{'*' * 36}\\r\\x03"
    kept = b"a" * (HEAD + 50)
    assert stored_keys(kept, 10**6, MASKER) == f"1000000 bytes: {'a' * HEAD}…"
