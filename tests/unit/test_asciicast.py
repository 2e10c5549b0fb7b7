from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.asciicast import V2, V3, CastEncoder, CastFormatError, build_header, load_cast

TEXT = "héllo wörld — ✓ 日本語 🎉\x1b[1;31mred\x1b[0m\r\n\x00\x07\x7f".encode()


def record(chunks: list[bytes], version: int = V2, stream: str = "o") -> bytes:
    encoder = CastEncoder(version)
    out = [encoder.header(build_header(version=version, width=80, height=24, timestamp=0))]
    for i, chunk in enumerate(chunks):
        out.append(encoder.data(i * 0.5, stream, chunk))
    out.append(encoder.flush(len(chunks), stream))
    return b"".join(out)


@pytest.mark.parametrize("version", [V2, V3])
def test_utf8_split_at_every_byte_offset_survives(version: int) -> None:
    for offset in range(len(TEXT) + 1):
        cast = load_cast(record([TEXT[:offset], TEXT[offset:]], version))
        assert cast.output_bytes() == TEXT
        for event in cast.events:
            assert "\ufffd" not in event.data


def test_one_byte_chunks() -> None:
    assert load_cast(record([bytes([b]) for b in TEXT])).output_bytes() == TEXT


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_bytes_round_trip_exactly(chunks: list[bytes]) -> None:
    assert load_cast(record(chunks)).output_bytes() == b"".join(chunks)
    assert load_cast(record(chunks, stream="i")).input_bytes() == b"".join(chunks)


def test_invalid_bytes_round_trip_and_file_is_valid_utf8() -> None:
    raw = b"ok \xff\xfe bad \xc3 lone-lead \xe2\x82 cut"
    data = record([raw])
    data.decode("utf-8")  # the file itself is always valid UTF-8
    assert load_cast(data).output_bytes() == raw


def test_v2_shape() -> None:
    encoder = CastEncoder(V2)
    header = build_header(version=V2, width=100, height=30, timestamp=1700000000, term="xterm",
                          command="uptime", metadata={"session_id": "s1", "user": "alice"})
    lines = [encoder.header(header), encoder.data(0.25, "o", b"a"), encoder.resize(1.5, 120, 40),
             encoder.marker(2, "transfer: upload /tmp/x 3 bytes"), encoder.exit(3, 0)]
    values = [json.loads(line) for line in lines]
    assert values[0] == {"version": 2, "width": 100, "height": 30, "timestamp": 1700000000,
                         "env": {"TERM": "xterm"}, "command": "uptime",
                         "bastion": {"session_id": "s1", "user": "alice"}}
    assert values[1:] == [[0.25, "o", "a"], [1.5, "r", "120x40"],
                          [2, "m", "transfer: upload /tmp/x 3 bytes"], [3, "m", "exit: 0"]]


def test_v3_shape_uses_intervals_and_exit_event() -> None:
    encoder = CastEncoder(V3)
    header = build_header(version=V3, width=80, height=24, timestamp=5, term="xterm-256color")
    lines = [encoder.header(header), encoder.data(1.0, "o", b"a"), encoder.data(1.5, "o", b"b"),
             encoder.exit(4.0, None, "KILL")]
    values = [json.loads(line) for line in lines]
    assert values[0] == {"version": 3, "term": {"cols": 80, "rows": 24, "type": "xterm-256color"},
                         "timestamp": 5}
    assert values[1:] == [[1.0, "o", "a"], [0.5, "o", "b"], [2.5, "x", "signal KILL"]]
    cast = load_cast(b"".join(lines))
    assert [e.time for e in cast.events] == [1.0, 1.5, 4.0]
    assert cast.size == (80, 24)


def test_partial_last_line_is_dropped_and_reported() -> None:
    data = record([b"one", b"two"])
    cast = load_cast(data + b'[9.0, "o", "thr')
    assert cast.truncated and cast.output_bytes() == b"onetwo"


@pytest.mark.parametrize(("data", "where"), [
    (b"", "line 1: empty file"),
    (b'{"version": 1}\n', "line 1: not an asciicast"),
    (b'{"version": 2, "width": 1, "height": 1}\n[0, "o"]\n', "line 2: expected [time, code, data]"),
    (b'{"version": 2, "width": 1, "height": 1}\n{oops\n', "line 2: not JSON"),
])
def test_corrupt_recordings_name_the_line(data: bytes, where: str) -> None:
    with pytest.raises(CastFormatError, match=where.replace("[", r"\[")):
        load_cast(data)
