"""What a key does to the line at a shell prompt, without a terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.keystrokes import Key, KeyReader, split_keys


def kinds(data: bytes, *, vi: bool = False) -> list[tuple[bytes, Key]]:
    reader = KeyReader(vi=vi)
    return [(key, reader.classify(key)) for key in split_keys(data, vi=vi)]


def test_text_edits_and_submits() -> None:
    assert kinds(b"ls -la\x1b[D\x01\x0b\r") == [
        (b"ls -la", Key.TEXT), (b"\x1b[D", Key.EDIT), (b"\x01", Key.EDIT), (b"\x0b", Key.EDIT), (b"\r", Key.SUBMIT)]
    assert [k for _, k in kinds(b"\n\x0f")] == [Key.SUBMIT, Key.SUBMIT]  # Ctrl-J, Ctrl-O
    assert kinds(b"\x03") == [(b"\x03", Key.INTERRUPT)]


@pytest.mark.parametrize("key", [b"\x07", b"\x1d", b"\x16", b"\x1bx", b"\x1b[24~", b"\x11"])
def test_keys_whose_effect_is_not_known_may_submit(key: bytes) -> None:
    assert kinds(key)[-1][1] is Key.OTHER


def test_editor_keys_even_typed_apart() -> None:
    assert kinds(b"\x18\x05")[-1][1] is Key.EDITOR
    reader = KeyReader()
    assert reader.classify(b"\x18") is Key.OTHER  # the prefix alone: decided before it goes
    assert reader.classify(b"\x05") is Key.EDITOR  # ... and with its second key, an editor


def test_vi_command_mode() -> None:
    found = kinds(b"ls\x1bbdwv", vi=True)
    assert found[2] == (b"\x1b", Key.EDIT)
    assert [k for _, k in found[3:6]] == [Key.EDIT, Key.EDIT, Key.EDIT]
    assert found[-1] == (b"v", Key.EDITOR)  # edit-and-execute
    assert kinds(b"\x1b#", vi=True)[-1][1] is Key.OTHER  # insert-comment submits
    assert kinds(b"\x1bix", vi=True)[-1][1] is Key.TEXT  # back in insert mode


def test_a_bracketed_paste_is_one_piece_of_text() -> None:
    assert kinds(b"\x1b[200~rm -rf x\r\necho\x1b[201~\r") == [
        (b"\x1b[200~rm -rf x\r\necho\x1b[201~", Key.TEXT), (b"\r", Key.SUBMIT)]


@given(st.binary(max_size=64))
def test_splitting_keeps_every_byte_in_order(data: bytes) -> None:
    assert b"".join(split_keys(data)) == data
    assert b"".join(split_keys(data, vi=True)) == data
