"""Property tests for every parser that reads what a user controls: whatever arrives, each one
either reads it or refuses it with its own error (never another exception), and what a stream
parser makes of a stream does not depend on how the stream was cut into chunks. Example
counts are bounded so that the unit suite stays fast."""

from __future__ import annotations

import contextlib
import string
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import parse_config
from bastion.core.hidden import HiddenInput
from bastion.core.masker import SecretMasker
from bastion.core.rules import parse_rules
from bastion.core.shellsplit import Incomplete, Malformed, parse, rough_commands
from bastion.errors import BastionError
from recorder.asciicast import CastFormatError, load_cast
from recorder.sftp import PacketFramer, SftpProtocolError, parse_reply, parse_request, split_packets
from recorder.transfers import ScpTransferParser, SftpTransferParser

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SHELLISH = st.text(alphabet=string.ascii_letters[:6] + " \t\n;&|<>()[]{}$`'\"\\#=*?!~-0123456789", max_size=60)


def cuts(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """`data` cut into chunks at arbitrary places."""
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda points: [data[a:b] for a, b in zip([0, *sorted(points)], [*sorted(points), len(data)], strict=True)])


# -- the shell splitter ----------------------------------------------------------------------------


@FEW
@given(st.one_of(SHELLISH, st.text(max_size=60)))
def test_the_shell_splitter_reads_or_refuses_any_line(line: str) -> None:
    try:
        parsed = parse(line)
    except (Incomplete, Malformed):
        pass
    else:
        assert parse(line) == parsed  # the same line reads the same
    rough_commands(line)  # the fallback reader never refuses


def refusal(load: Any, data: dict[str, Any]) -> str | None:
    """None when `load` reads `data`; the message of its own error when it refuses it."""
    try:
        load(data)
    except BastionError as exc:
        return str(exc)
    return None


# -- the rules and config loaders ------------------------------------------------------------------

# TOML has no null: values are drawn without one (a filter would throw away most draws, and
# Hypothesis's health check then fails the test on an unlucky seed).
SCALARS = st.one_of(st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=12))
VALUES = st.recursive(SCALARS,
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
RULE_KEYS = ("name", "action", "message", "program", "args", "command", "kinds", "approvers", "timeout",
             "users", "groups", "targets", "logins", "operations", "paths", "destinations")
CONFIG_KEYS = ("listen", "keys_dir", "recordings_dir", "log_file", "grace_period", "login_timeout", "names",
               "certificates", "limits", "algorithms", "session", "recording", "masking", "users", "targets",
               "access", "web", "oidc", "notify")


@FEW
@given(st.lists(st.dictionaries(st.sampled_from(RULE_KEYS), VALUES, max_size=6), max_size=3),
       st.dictionaries(st.sampled_from(("action",)), VALUES, max_size=1))
def test_the_rules_loader_reads_or_names_what_is_wrong(rules: list[dict[str, Any]], defaults: dict[str, Any]) -> None:
    data: dict[str, Any] = {"rule": rules}
    if defaults:
        data["defaults"] = defaults
    assert refusal(parse_rules, data) != ""  # read (None), or refused with a message


@FEW
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, max_size=5))
def test_the_config_loader_reads_or_names_what_is_wrong(data: dict[str, Any]) -> None:
    assert refusal(parse_config, data) != ""


# -- the asciicast reader --------------------------------------------------------------------------

CAST_LINES = st.one_of(
    st.just(b'{"version": 2, "width": 80, "height": 24}'), st.just(b'{"version": 3, "term": {"cols": 80}}'),
    st.just(b'[0.5, "o", "hi"]'), st.just(b'[1, "i", "x"]'), st.just(b'[1, "o"]'), st.just(b'["a", "o", "x"]'),
    st.just(b"{}"), st.just(b"[]"), st.just(b"null"), st.just(b'"\\ud800"'), st.binary(max_size=20))


@FEW
@given(st.one_of(st.binary(max_size=200), st.lists(CAST_LINES, max_size=6).map(b"\n".join)))
def test_the_asciicast_reader_reads_or_names_the_line(data: bytes) -> None:
    lines: list[int] = []
    try:
        cast = load_cast(data)
    except CastFormatError as exc:
        lines.append(exc.line)
    else:
        cast.output_bytes()
        cast.input_bytes()
    assert all(line >= 1 for line in lines)


# -- the sftp and scp parsers ----------------------------------------------------------------------

def sftp_packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def sftp_string(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


def status(request: int) -> bytes:
    return sftp_packet(101, struct.pack(">II", request, 0) + sftp_string(b"") + sftp_string(b""))


# An upload and a remove: each request, then the target's reply to it.
SFTP_STEPS = [
    (sftp_packet(1, struct.pack(">I", 3)), sftp_packet(2, struct.pack(">I", 3))),  # INIT, VERSION
    (sftp_packet(3, struct.pack(">I", 7) + sftp_string(b"/tmp/a") + struct.pack(">I", 0x1a) + b"\0" * 4),
     sftp_packet(102, struct.pack(">I", 7) + sftp_string(b"h1"))),  # OPEN, HANDLE
    (sftp_packet(6, struct.pack(">I", 8) + sftp_string(b"h1") + struct.pack(">Q", 0) + sftp_string(b"data")),
     status(8)),  # WRITE
    (sftp_packet(4, struct.pack(">I", 9) + sftp_string(b"h1")), status(9)),  # CLOSE
    (sftp_packet(13, struct.pack(">I", 10) + sftp_string(b"/tmp/b")), status(10)),  # REMOVE
]
SFTP_MARKERS = [("upload", "/tmp/a 4 bytes"), ("remove", "/tmp/b")]


def sftp_markers(steps: list[tuple[list[bytes], list[bytes]]]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    parser = SftpTransferParser(lambda kind, text: seen.append((kind, text)))
    for client, server in steps:
        for chunk in client:
            parser.client.feed(chunk)
        for chunk in server:
            parser.server.feed(chunk)
    return seen


def test_the_sftp_example_gives_its_markers() -> None:
    assert sftp_markers([([c], [r]) for c, r in SFTP_STEPS]) == SFTP_MARKERS


@FEW
@given(st.data())
def test_the_sftp_parser_gives_the_same_markers_however_the_streams_are_cut(data: st.DataObject) -> None:
    steps = [(data.draw(cuts(c)), data.draw(cuts(r))) for c, r in SFTP_STEPS]
    assert sftp_markers(steps) == SFTP_MARKERS


@FEW
@given(st.lists(st.binary(max_size=40), max_size=8), st.lists(st.binary(max_size=40), max_size=8))
def test_the_sftp_parser_survives_any_bytes(client: list[bytes], server: list[bytes]) -> None:
    parser = SftpTransferParser(lambda kind, text: None)
    for a, b in zip(client, server, strict=False):
        parser.client.feed(a)
        parser.server.feed(b)


@FEW
@given(st.lists(st.binary(max_size=12), max_size=6).map(
    lambda bodies: b"".join(struct.pack(">I", len(b)) + b for b in bodies if b)))
def test_framed_sftp_packets_parse_or_are_refused(stream: bytes) -> None:
    """What the framer passes on (whole packets, any content) is read or refused with
    SftpProtocolError, as a request and as a reply."""
    with contextlib.suppress(SftpProtocolError):
        whole, ends = PacketFramer().feed(stream)
        for packet in split_packets(whole, ends):
            for read in (parse_request, parse_reply):
                with contextlib.suppress(SftpProtocolError):
                    read(packet)


SCP_STREAM = b"C0644 5 a.txt\nhello\0D0755 0 sub\nC0600 3 b\nxyz\0E\n"


@FEW
@given(st.text(max_size=40), st.binary(max_size=80))
def test_the_scp_parser_takes_any_command_and_stream(command: str, stream: bytes) -> None:
    """The command is the user's (an unclosed quote once raised from here)."""
    parser = ScpTransferParser(command, lambda kind, text: None)
    parser.from_client(stream)
    parser.from_server(stream)


@FEW
@given(st.data())
def test_the_scp_parser_gives_the_same_markers_however_the_stream_is_cut(data: st.DataObject) -> None:
    def markers(chunks: list[bytes]) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        parser = ScpTransferParser("scp -t /tmp/in", lambda kind, text: seen.append((kind, text)))
        for chunk in chunks:
            parser.from_client(chunk)
        return seen

    whole = markers([SCP_STREAM])
    assert whole, "the example stream gives markers"
    assert markers(data.draw(cuts(SCP_STREAM))) == whole


# -- hidden input ----------------------------------------------------------------------------------


@FEW
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=16), st.floats(0, 3)), max_size=20))
def test_hidden_input_takes_any_interleaving_and_invents_nothing(steps: list[tuple[bool, bytes, float]]) -> None:
    hidden: list[int] = []
    check = HiddenInput(hidden.append, terminal=True)
    now, recorded, typed = 100.0, b"", b""
    for is_input, data, pause in steps:
        if is_input:
            typed += data
            recorded += check.input(data, now)
        else:
            recorded += check.output(data, now)
        now += pause
        if check.deadline is not None and now >= check.deadline:
            recorded += check.due(now)
    recorded += check.flush(now)
    assert len(recorded) + sum(hidden) == len(typed)


# -- the masker's streaming contract ---------------------------------------------------------------

PLAIN = st.text(alphabet=string.ascii_lowercase + " \n.,", max_size=300).map(str.encode)


def masked(chunks: list[bytes]) -> bytes:
    masker = SecretMasker()
    return b"".join(masker.feed(chunk).data for chunk in chunks) + masker.flush().data


@FEW
@given(st.data())
def test_text_without_secrets_passes_unchanged_however_it_is_cut(data: st.DataObject) -> None:
    text = data.draw(PLAIN)
    assert masked(data.draw(cuts(text))) == text


SECRETISH = st.lists(st.one_of(PLAIN, st.sampled_from([
    b"AKIAIOSFODNN7EXAMPLE", b"password=hunter2hunter2", b"4111 1111 1111 1111", b"ghp_" + b"a1B2" * 9,
    b"\x1b[31m", b"\x1b]0;title\x07", b"\xff\xfe", b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n"])), max_size=8).map(b"".join)


@FEW
@given(st.data())
def test_a_cut_never_unmasks_what_the_whole_stream_masks(data: st.DataObject) -> None:
    """Wherever the stream is cut, every byte the whole stream masks is masked. (A cut may mask
    more: `AKIAIOSF` + `ODNN7EXAMPLEa` is masked although the whole, an AWS key id with one
    letter too many, is not: the masker decides at the cut before it sees the `a`.)"""
    stream = data.draw(SECRETISH)
    whole, cut = masked([stream]), masked(data.draw(cuts(stream)))
    assert len(cut) == len(whole)
    leaked = [i for i in range(len(whole)) if whole[i:i + 1] == b"*" != stream[i:i + 1] and cut[i:i + 1] != b"*"]
    assert not leaked, (stream, whole, cut)


@pytest.mark.parametrize(("command", "stream", "expected"), [
    # into a folder: named so (trailing slash, -d for several files, the home folder)
    ("scp -t /tmp/", b"C0644 3 a.txt\nabc\0", ["upload: /tmp/a.txt 3 bytes"]),
    ("scp -d -t /tmp", b"C0644 3 a.txt\nabc\0C0644 1 b\nx\0", ["upload: /tmp/a.txt 3 bytes", "upload: /tmp/b 1 bytes"]),
    ("scp -t .", b"C0644 3 a.txt\nabc\0", ["upload: a.txt 3 bytes"]),
    ("scp -t /", b"C0644 3 a.txt\nabc\0", ["upload: /a.txt 3 bytes"]),
    ("scp -r -t /srv", b"D0755 0 site\nC0644 2 i.html\nhi\0E\n", ["upload: /srv/site/i.html 2 bytes"]),
    # one file to a target that is its new name or a folder: both said
    ("scp -t /tmp/x.txt", b"C0644 3 a.txt\nabc\0", ["upload: /tmp/x.txt (a.txt) 3 bytes"]),
    # downloads: the source's own path, and -r's folder from the source's parent
    ("scp -f /etc/hosts", b"C0644 3 hosts\nabc\0", ["download: /etc/hosts 3 bytes"]),
    ("scp -f hosts", b"C0644 3 hosts\nabc\0", ["download: hosts 3 bytes"]),
    ("scp -f /hosts", b"C0644 3 hosts\nabc\0", ["download: /hosts 3 bytes"]),
    ("scp -r -f /var/log", b"D0755 0 log\nC0644 1 syslog\nx\0E\n", ["download: /var/log/syslog 1 bytes"]),
])
def test_legacy_scp_names_each_file_where_the_command_puts_it(command: str, stream: bytes,
                                                               expected: list[str]) -> None:
    seen: list[str] = []
    parser = ScpTransferParser(command, lambda kind, text: seen.append(f"{kind}: {text}"))
    parser.from_client(stream)
    parser.from_server(stream)
    assert seen == expected
