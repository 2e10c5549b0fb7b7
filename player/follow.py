"""Reading a recording for the replay screen, off the UI thread: on open a chunk at a time (the
first frame is drawn before the file is parsed), and while following only the bytes appended
since the last read.

`CastTail` reads the file: complete lines only (a last line still being written waits for its
newline), from where it stopped; a file that shrank below what was read, or another file put
in its place, is said and not read further, and a line that is not asciicast names its line.
`LiveChain` checks a recording still being recorded as it grows: each new line extends the
hash chain once and each new checkpoint is checked once, so a long session costs nothing more
per look than what was appended. A recording that is no longer live gets its verdict from
`recorder.chain.verify` on the whole file, as `bastion recordings verify` gives it.
`Loader` puts them together: each `poll()` (in a thread, one at a time) returns an `Update`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from recorder.asciicast import V2, V3, CastFormatError, Event
from recorder.chain import DOMAIN, Verification, checkpoint_message, verify
from recorder.signing import RecordingVerifier

CHUNK = 4 * 1024 * 1024  # bytes read and parsed per poll: an open shows its progress, keys answer
FIRST_READ = 64 * 1024  # read before the first frame: the header, and a short recording whole


class FollowStopped(Exception):
    """The recording cannot be read on from where it was: one line for the reviewer."""


@dataclass
class IndexState:
    """What the recordings index says of the session now (None: the index does not know it)."""

    state: str  # "live", "closed", "incomplete", "failed"
    lines: int | None = None  # the closing record: lines and chain head, once closed
    chain: str | None = None
    error: str | None = None


def _value(raw: bytes, number: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # lone surrogates (bytes that were not UTF-8): the slow parser decides, as load_cast does
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CastFormatError(number, f"not JSON ({exc})") from None


class CastTail:
    """A cast file read as it grows. `read()` returns the complete lines appended since the last
    call (about `limit` bytes of them at most) and their events; `header` is set once the first
    line is in. A line that is not asciicast ends reading there (`stopped`: a `CastFormatError`
    naming it), as does a file that shrank below what was read or was replaced by another
    (`FollowStopped`); what came before it is returned and stays valid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, Any] | None = None
        self.offset = 0  # bytes of complete lines read
        self.lines = 0  # complete lines read (blank ones too: line numbers count them)
        self.partial = b""  # the start of a line still being written
        self.eof = False  # the last read reached the end of the file
        self.stopped: FollowStopped | CastFormatError | None = None
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        self._clock = 0.0  # v3: the time of the last event (its file holds intervals)
        self._held: bytes | None = None  # the whole file, once `hold` read it: read on from there

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def hold(self) -> bytes:
        """The whole file, read at once; later reads go on from these bytes, not the file."""
        size = self._size()
        self._held = self._pread(0, size)
        self.close()
        return self._held

    def _pread(self, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` (fewer at the end of the file), read from the file now."""
        assert self._file is not None
        parts: list[bytes] = []
        while size > 0:
            part = os.pread(self._file.fileno(), size, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            size -= len(part)
        return b"".join(parts)

    def _size(self) -> int:
        """The file's size now; raises if it is no longer the file being read."""
        if self._held is not None:
            return len(self._held)
        if self._file is None:
            # Unbuffered: a buffer read ahead would hand back bytes the writer has since taken back.
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open between reads
            info = os.fstat(self._file.fileno())
            self._identity = (info.st_dev, info.st_ino)
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise FollowStopped(f"{self.path.name} was REMOVED while being read; showing what was read "
                                f"({self.lines} lines)") from None
        if (info.st_dev, info.st_ino) != self._identity:
            raise FollowStopped(f"{self.path.name} was REPLACED by another file while being read; showing "
                                f"what was read of the first one ({self.lines} lines)")
        size = os.fstat(self._file.fileno()).st_size
        if size < self.offset:
            raise FollowStopped(f"{self.path.name} was TRUNCATED while being read: it is now {size} bytes, "
                                f"{self.offset} had been read ({self.lines} lines, shown)")
        return size

    def read(self, limit: int = CHUNK) -> tuple[list[bytes], list[Event]]:
        if self.stopped is not None:
            return [], []
        try:
            size = self._size()
        except FollowStopped as exc:
            self.stopped = exc
            self.close()
            return [], []
        if size < self.offset + len(self.partial):
            self.partial = b""  # the writer took back a line the disk cut short: read it again once whole
        start = self.offset + len(self.partial)
        if self._held is not None:
            data = self._held[start:start + limit]
        else:
            data = self._pread(start, min(limit, size - start)) if size > start else b""
        self.eof = start + len(data) >= size
        if self.partial:
            data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        lines = data[:end].splitlines(keepends=True) if end else []
        events, good = self._events(lines)
        if good < len(lines):  # a bad line: what came before it is kept, nothing after it read
            lines = lines[:good]
            self.partial = b""
            self.close()
        self.offset += sum(len(line) for line in lines)
        return lines, events

    def _events(self, lines: list[bytes]) -> tuple[list[Event], int]:
        """The events of `lines`, and how many lines were good (all, unless one is not asciicast)."""
        events: list[Event] = []
        for good, raw in enumerate(lines):
            number = self.lines + 1
            try:
                event = self._event(raw, number)
            except CastFormatError as exc:
                self.stopped = exc
                return events, good
            self.lines = number
            if event is not None:
                events.append(event)
        return events, len(lines)

    def _event(self, raw: bytes, number: int) -> Event | None:
        if not raw.strip():
            return None
        value = _value(raw, number)
        if self.header is None:
            if not isinstance(value, dict) or value.get("version") not in (V2, V3):
                raise CastFormatError(number, "not an asciicast v2 or v3 header")
            self.header = value
            return None
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], (int, float))
                and isinstance(value[1], str) and isinstance(value[2], str)):
            raise CastFormatError(number, "expected [time, code, data]")
        self._clock = self._clock + value[0] if self.header["version"] == V3 else float(value[0])
        return Event(self._clock, value[1], value[2])


class _Tampered(Exception):
    def __init__(self, verification: Verification) -> None:
        super().__init__(verification.reason)
        self.verification = verification


class LiveChain:
    """The verdict on a recording still being recorded, kept up as it grows: what `verify` with
    `live` says of the same lines and signature lines (each read up to its last newline), except
    that a final checkpoint is not judged here (`final`: the caller verifies the whole file).
    Each line is hashed once and each checkpoint checked once. Once tampered, it stays so."""

    def __init__(self, verifier: RecordingVerifier, expected_session: str | None) -> None:
        self.verifier, self.expected_session = verifier, expected_session
        self.chain = hashlib.sha256(DOMAIN)  # the running chain (see recorder.chain)
        self.hashed = 0  # lines it covers
        self.unhashed: list[bytes] = []  # lines read beyond them
        self.lines = 0  # complete lines read
        self.session: str | None = None
        self.signature_lines = 0
        self.queued: list[bytes] = []  # signature lines not read yet
        self.signed = False  # the signature file has held something
        self.checkpoints: list[tuple[int, bytes, bool]] = []  # signed, in order
        self.checked = 0  # checkpoints checked against the lines
        self.good = 0  # lines covered by the last good checkpoint
        self.final = False  # a final checkpoint came: the recording is closed
        self.tampered: Verification | None = None

    def _bad(self, line: int, reason: str, intact: int = 0) -> Verification:
        return Verification("tampered", max(0, self.lines - 1), intact, at_event=line, reason=reason,
                            key_fingerprint=self.verifier.fingerprint)

    def add_lines(self, lines: list[bytes]) -> None:
        if lines and self.lines == 0:
            self.session = _header_session(lines[0])
        self.unhashed.extend(lines)
        self.lines += len(lines)

    def add_signatures(self, rows: list[bytes]) -> None:
        """Complete lines of the signature file, in order (as `read_checkpoints` reads them);
        read at the next verdict, once the header (which names the session) is in."""
        self.queued.extend(rows)
        self.signature_lines += len(rows)
        self.signed = self.signed or bool(rows)

    def _checkpoint(self, raw: bytes, number: int) -> Verification | None:
        try:
            record = json.loads(raw)
            count, head = int(record["lines"]), bytes.fromhex(record["chain"])
            final = bool(record["final"])
            signature = base64.b64decode(record["sig"], validate=True)
            named = record.get("session")
            if named is not None and not isinstance(named, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return self._bad(0, f"signature file line {number} is malformed")
        if not self.verifier.verify(signature, checkpoint_message(count, head, final, named)):
            return self._bad(max(0, count - 1),
                             f"checkpoint {number}: bad signature (another key, or edited)")
        session = self.session or self.expected_session
        if named is not None and session is not None and named != session:
            return self._bad(0, f"checkpoint {number} is signed for session {named}, not {session}: "
                                f"the signatures of another recording")
        self.checkpoints.append((count, head, final))
        return None

    def verdict(self, *, at_end: bool) -> Verification:
        """The verdict on what was read; `at_end`: every line written so far was read (a
        checkpoint beyond them is then a truncated file, as `verify` says)."""
        if self.tampered is not None:
            return dataclasses.replace(self.tampered, events=max(0, self.lines - 1))  # found, then grown
        if (self.lines or at_end) and self.expected_session not in (None, self.session):
            self.tampered = self._bad(0, f"the header names session {self.session}, the file is "
                                         f"{self.expected_session}: another session's recording under "
                                         f"this name")
            return self.tampered
        fp = self.verifier.fingerprint
        if not self.signed:
            return Verification("unsigned", max(0, self.lines - 1), 0, reason="no signature file",
                                key_fingerprint=fp)
        number = self.signature_lines - len(self.queued)
        for raw in self.queued if self.lines or at_end else []:  # the header first: it names the session
            number += 1
            if raw.strip() and self.tampered is None:
                self.tampered = self._checkpoint(raw, number)
        if self.lines or at_end:
            self.queued.clear()
        if self.tampered is not None:
            return self.tampered
        try:
            self._check(at_end)
        except _Tampered as exc:
            if "is truncated" not in exc.verification.reason:  # more lines may still come
                self.tampered = exc.verification
            return exc.verification
        return Verification("live", max(0, self.lines - 1), max(0, self.good - 1), key_fingerprint=fp,
                            session=self.session)

    def _check(self, at_end: bool) -> None:
        while self.checked < len(self.checkpoints):
            count, head, final = self.checkpoints[self.checked]
            if count < self.good or (self.checked and count == self.good and not final):
                raise _Tampered(self._bad(count, "checkpoints are out of order"))
            if count > self.lines:
                if not at_end:
                    return  # its lines are not read yet
                reason = (f"recording is truncated: a checkpoint covers {count - 1} events, the file has "
                          f"{max(0, self.lines - 1)}")
                raise _Tampered(self._bad(self.lines, reason, max(0, self.good - 1)))
            covered = count - self.hashed
            if covered > 0:  # one update for them all: a long one, hashed without holding the GIL
                self.chain.update(b"".join(self.unhashed[:covered]))
                self.hashed += covered
                del self.unhashed[:covered]
            if self.chain.copy().digest() != head:
                raise _Tampered(self._bad(self.good if self.good else 1,
                                          f"events {max(self.good, 1)}..{count - 1} do not match the signed "
                                          f"checkpoint", max(0, self.good - 1)))
            self.good = count
            self.checked += 1
            self.final = self.final or final


def _header_session(line: bytes) -> str | None:
    try:
        header = json.loads(line)
    except ValueError:
        return None
    meta = header.get("bastion") if isinstance(header, dict) else None
    session = meta.get("session_id") if isinstance(meta, dict) else None
    return session if isinstance(session, str) else None


@dataclass
class Update:
    """What a poll found: events to add (in order), the verdict when it changed, and why reading
    stopped (once)."""

    events: list[Event] = field(default_factory=list)
    header: dict[str, Any] | None = None  # the header, the first time it is read
    verification: Verification | None = None
    problem: str | None = None
    loaded: bool = False  # what the file held when opened is all read (the first time only)
    state: str | None = None  # the index's state, when it changed


class Loader:
    """Reads `path` for the replay screen; `poll()` runs in a thread, one call at a time.

    Not following: the whole file a chunk at a time, then its verdict from `verify` on exactly
    the bytes read. Following: what was appended since the last poll; while the index says the
    session is live the verdict is kept up by `LiveChain`, and once it says otherwise (or a final
    signature comes) the whole file is verified as `bastion recordings verify` would."""

    def __init__(self, path: Path, verifier: RecordingVerifier | None, *, follow: bool = False,
                 state: Callable[[], IndexState | None] | None = None, expected_session: str | None = None,
                 chunk: int = CHUNK) -> None:
        self.path, self.verifier, self.follow = path, verifier, follow
        self.state, self.expected_session, self.chunk = state, expected_session, chunk
        self.tail = CastTail(path)
        self.sig_path = path.with_name(path.name + ".sig")
        self._sig_read = 0  # bytes of complete signature lines read
        self._kept: list[bytes] | None = None if follow else []  # what a plain open verifies
        self._index: IndexState | None = None
        self._asked = False
        self._chain: LiveChain | None = None
        self._verdict: Verification | None = None
        self._verified_at: tuple[int, int, str | None] | None = None  # (lines, signature bytes, state)
        self.loaded = False
        self.done = False  # nothing more will come

    @property
    def verifying(self) -> bool:
        """A verdict is due and not known yet."""
        return self.verifier is not None and self._verdict is None

    def close(self) -> None:
        self.tail.close()

    def _signatures(self) -> list[bytes]:
        """Complete lines appended to the signature file since the last call."""
        try:
            with open(self.sig_path, "rb") as file:
                file.seek(self._sig_read)
                data = file.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._sig_read += end
        return data[:end].splitlines() if end else []

    def poll(self, limit: int | None = None) -> Update:
        """What is new since the last poll (read, parsed and checked here, off the UI thread);
        at most about `limit` bytes of the cast (default: `chunk`)."""
        update = Update()
        if self.done:
            return update
        index = self._index
        if self.state is not None and (self.follow or not self._asked):
            index = self.state()
            if index != self._index and self._asked:
                update.state = index.state if index is not None else None
            self._asked, self._index = True, index
        live = index is not None and index.state == "live"
        if (not self.follow and self.verifier is not None and self._kept is not None and not self.loaded
                and self.tail.header is not None):
            self._verify_first(update, index, live)
            return update
        # The signatures first: any checkpoint in them covers lines already written to the cast.
        signatures = self._signatures() if self.verifier is not None and self.follow and live else []
        lines = self._read(update, limit or self.chunk)
        stopped = self.tail.stopped
        if self.verifier is None:
            self.done = self.done or (self.loaded and (not self.follow or stopped is not None))
            return update
        if self.follow and live and not isinstance(stopped, FollowStopped):
            chain = self._chain
            if chain is None:
                chain = self._chain = LiveChain(self.verifier, self.expected_session)
            chain.add_lines(lines)
            chain.add_signatures(signatures)
            verdict = chain.verdict(at_end=self.tail.eof)
            if not chain.final:
                self._set(update, verdict)
                return update
        if not self.loaded or isinstance(stopped, FollowStopped) or update.events:
            # A file no longer the one read gets no new verdict (the problem says why); events
            # read are shown first, and verified at the next poll.
            return update
        self._verify_whole(update, index, live)
        self.done = self.done or not self.follow or stopped is not None
        return update

    def _read(self, update: Update, limit: int) -> list[bytes]:
        """The cast's new complete lines; their events, and why reading stopped, in `update`."""
        had_header = self.tail.header is not None
        lines, update.events = self.tail.read(limit)
        if not had_header and self.tail.header is not None:
            update.header = self.tail.header
        stopped = self.tail.stopped
        if stopped is not None:
            update.problem = (str(stopped) if isinstance(stopped, FollowStopped) else
                              f"{self.path.name}: {stopped}; showing the {self.tail.lines} lines before it")
            self.done = isinstance(stopped, FollowStopped)  # a bad line: verified as it is, then done
        if not self.loaded and (self.tail.eof or stopped is not None):
            self.loaded = update.loaded = True
        if self._kept is not None:
            self._kept.append(b"".join(lines))
        return lines

    def _verify_first(self, update: Update, index: IndexState | None, live: bool) -> None:
        """A plain open: the whole file read at once and verified before it is parsed (the
        verdict is what a reviewer looks for first); it is then parsed from those same bytes."""
        read = b"".join(self._kept or [])
        try:
            data = self.tail.hold()
        except FollowStopped as exc:
            self.tail.stopped = exc
        else:
            if not data.startswith(read):
                self.tail.stopped = FollowStopped(f"{self.path.name} changed while being read; showing what "
                                                  f"was read first ({self.tail.lines} lines)")
        if self.tail.stopped is not None:
            update.problem = str(self.tail.stopped)
            self.done = self.loaded = update.loaded = True
            return
        self._kept = None
        self._verify(update, data, index, live)
        self._verified_at = (-1, -1, None)  # a plain open is verified once

    def _verify_whole(self, update: Update, index: IndexState | None, live: bool) -> None:
        """The verdict `verify` gives the file (closed, never closed, or unknown to the index)."""
        now = (self.tail.lines, self._sig_read, index.state if index is not None else None)
        if self._verified_at in ((-1, -1, None), now):
            return
        self._verified_at = now
        if self._kept is not None and self.tail.stopped is None:
            data = b"".join(self._kept) + self.tail.partial  # exactly the bytes read
        else:
            data = self.path.read_bytes()
        self._kept = None
        self._verify(update, data, index, live)

    def _verify(self, update: Update, data: bytes, index: IndexState | None, live: bool) -> None:
        assert self.verifier is not None
        self._chain = None
        try:
            sig: bytes | None = self.sig_path.read_bytes()
        except FileNotFoundError:
            sig = None
        closed = index is not None and index.state == "closed"
        self._set(update, verify(data, sig, self.verifier,
                                 expected_lines=index.lines if closed and index is not None else None,
                                 expected_head=index.chain if closed and index is not None else None,
                                 expected_session=self.expected_session, live=live,
                                 unfinished=index.error if index is not None else None))

    def _set(self, update: Update, verdict: Verification) -> None:
        if verdict != self._verdict:
            update.verification = self._verdict = verdict
