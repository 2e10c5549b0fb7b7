"""Tamper evidence: every line extends a SHA-256 chain; checkpoints sign the chain head.

    h[k] = SHA-256("bastion-cast-v1\\0" || line[0] || ... || line[k])

line 0 being the header and line k event k. The chain is one running SHA-256 state that each
line extends (Merkle-Damgard is a chain of its own), so the writer hashes each byte once,
with no re-hashing of heads. A checkpoint signs (session id, k+1 lines, h[k], final?) with the
recording key and is appended to the `.sig` file beside the cast, which asciinema never
reads. The last checkpoint of a closed recording is final; a crash leaves only intermediate
ones, so the recording verifies as incomplete but intact up to its last checkpoint.

The header (line 0, in every head) names the session, and so does every checkpoint: another
session's recording and signatures copied in under this session's name verify as tampered,
since the name, the header and the signatures must all agree.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from recorder.signing import RecordingKey, RecordingVerifier

DOMAIN = b"bastion-cast-v1\x00"
SESSION_DOMAIN = b"bastion-checkpoint-v2\x00"  # checkpoints that name their session


class HashChain:
    def __init__(self) -> None:
        self._state = hashlib.sha256(DOMAIN)
        self.lines = 0

    @property
    def head(self) -> bytes:
        return self._state.copy().digest()

    def add(self, line: bytes) -> None:
        self._state.update(line)
        self.lines += 1

    def extend(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.add(line)

    def add_many(self, data: bytes | memoryview, lines: int) -> None:
        """`lines` whole lines, given as their bytes one after the other: one update (hashed
        several times faster than line by line, and without holding the GIL)."""
        self._state.update(data)
        self.lines += lines


def checkpoint_message(lines: int, head: bytes, final: bool, session: str | None = None) -> bytes:
    if session is None:  # recordings signed before checkpoints named their session
        return DOMAIN + struct.pack(">Q?", lines, final) + head
    name = session.encode()
    return SESSION_DOMAIN + struct.pack(">Q?H", lines, final, len(name)) + name + head


def checkpoint_line(key: RecordingKey, chain: HashChain, *, final: bool, at: float,
                    session: str | None = None) -> bytes:
    signature = key.sign(checkpoint_message(chain.lines, chain.head, final, session))
    record: dict[str, Any] = {"session": session} if session is not None else {}
    record.update({
        "lines": chain.lines,
        "chain": chain.head.hex(),
        "final": final,
        "ts": round(at, 3),
        "sig": base64.b64encode(signature).decode(),
    })
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def header_session(cast: bytes) -> str | None:
    """The session id a recording's header names (None for a cast from elsewhere)."""
    end = cast.find(b"\n")  # not split: that would copy the whole rest of the file
    try:
        header = json.loads(cast[:end] if end >= 0 else cast)
    except ValueError:
        return None
    meta = header.get("bastion") if isinstance(header, dict) else None
    session = meta.get("session_id") if isinstance(meta, dict) else None
    return session if isinstance(session, str) else None


def session_of_path(name: str) -> str:
    """The session id a recording's file name gives (`<id>.cast`)."""
    return name.removesuffix(".cast")


class _BadCheckpoint(Exception):
    def __init__(self, event: int, reason: str) -> None:
        super().__init__(reason)
        self.event, self.reason = event, reason


def read_checkpoints(signatures: bytes, verifier: RecordingVerifier,
                     session: str | None = None) -> list[tuple[int, bytes, bool]]:
    """(lines, chain head, final) of every correctly signed checkpoint, in file order; each one
    that names a session must name `session`."""
    checkpoints = []
    rows = signatures.splitlines()
    for number, raw in enumerate(rows, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            count, head, final = int(record["lines"]), bytes.fromhex(record["chain"]), bool(record["final"])
            signature = base64.b64decode(record["sig"], validate=True)
            named = record.get("session")
            if named is not None and not isinstance(named, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if number == len(rows) and not signatures.endswith(b"\n"):
                break  # a checkpoint cut short by a crash
            raise _BadCheckpoint(0, f"signature file line {number} is malformed") from None
        if not verifier.verify(signature, checkpoint_message(count, head, final, named)):
            reason = f"checkpoint {number}: bad signature (another key, or edited)"
            raise _BadCheckpoint(max(0, count - 1), reason)
        if named is not None and session is not None and named != session:
            raise _BadCheckpoint(0, f"checkpoint {number} is signed for session {named}, "
                                    f"not {session}: the signatures of another recording")
        checkpoints.append((count, head, final))
    return checkpoints


@dataclass
class Verification:
    state: str  # "verified", "live", "incomplete", "tampered" or "unsigned"
    events: int  # complete events in the file (the header not counted)
    intact_events: int  # events covered by a good signature
    at_event: int | None = None  # where tampering was found
    reason: str = ""
    key_fingerprint: str = ""
    session: str | None = None  # the session id the header, the name and the signatures agree on

    @property
    def ok(self) -> bool:
        return self.state in ("verified", "live", "incomplete")

    def describe(self) -> str:
        of = f"session {self.session}, " if self.session else ""
        if self.state == "verified":
            return f"verified: {of}{self.events} events, signed by {self.key_fingerprint}"
        if self.state == "live":
            return (f"live: {of}still being recorded; intact up to event {self.intact_events} "
                    f"of {self.events} so far")
        if self.state == "incomplete":
            return (f"incomplete: {of}intact up to event {self.intact_events} of {self.events} "
                    f"(the recording was not closed: {self.reason})")
        if self.state == "unsigned":
            return f"unsigned: {self.reason}"
        return f"TAMPERED at event {self.at_event}: {self.reason}"


def verify(  # noqa: PLR0911, PLR0912 - one return per verdict reads better than a flag dance
    cast: bytes, signatures: bytes | None, verifier: RecordingVerifier,
    *, expected_lines: int | None = None, expected_head: str | None = None,
    expected_session: str | None = None, live: bool = False, unfinished: str | None = None,
) -> Verification:
    """Check a recording against its signature file (and the index's closing record, if any).

    `expected_session`: the session id its file name (or the index) gives; the header must name
    it. `live`: the index says it is still being recorded, so no final signature is expected
    yet. `unfinished`: the index's word on why it never closed."""
    lines = cast.splitlines(keepends=True)
    partial = bool(lines) and not lines[-1].endswith(b"\n")
    if partial:
        lines.pop()
    events = max(0, len(lines) - 1)
    fp = verifier.fingerprint
    ends = [0, *itertools.accumulate(map(len, lines))]  # where each line ends in `cast`
    data = memoryview(cast)

    def tampered(line: int, reason: str, intact: int = 0) -> Verification:
        return Verification("tampered", events, intact, at_event=line, reason=reason, key_fingerprint=fp)

    session = header_session(cast)
    if expected_session not in (None, session):
        return tampered(0, f"the header names session {session}, the file is {expected_session}: "
                           f"another session's recording under this name")
    if not signatures:
        return Verification("unsigned", events, 0, reason="no signature file", key_fingerprint=fp)
    try:
        checkpoints = read_checkpoints(signatures, verifier, session or expected_session)
    except _BadCheckpoint as exc:
        return tampered(exc.event, exc.reason)
    chain = HashChain()
    good = 0  # lines covered by the last good checkpoint
    for index, (count, head, final) in enumerate(checkpoints):
        if count < good or (index and count == good and not final):
            return tampered(count, "checkpoints are out of order")
        if count > len(lines):
            return tampered(len(lines), f"recording is truncated: a checkpoint covers {count - 1} events, "
                                        f"the file has {events}", max(0, good - 1))
        chain.add_many(data[ends[chain.lines]:ends[count]], count - chain.lines)
        if chain.head != head:
            return tampered(good if good else 1, f"events {max(good, 1)}..{count - 1} do not match the "
                                                 f"signed checkpoint", max(0, good - 1))
        good = count
        if final:
            if index != len(checkpoints) - 1:
                return tampered(count, "checkpoints follow the final one")
            if len(lines) > count or partial:
                return tampered(count, "lines were appended after the final signature", count - 1)
            if expected_head is not None and head.hex() != expected_head:
                return tampered(count - 1, "the index recorded a different final chain head", 0)
            return Verification("verified", events, events, key_fingerprint=fp, session=session)
    intact = max(0, good - 1)
    if expected_lines is not None:
        return tampered(intact + 1, f"the index says the recording closed with {expected_lines - 1} "
                                    f"events, but its final signature is missing", intact)
    return Verification("live" if live else "incomplete", events, intact, key_fingerprint=fp, session=session,
                        reason="" if live else unfinished or "no final signature")
