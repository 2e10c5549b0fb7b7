"""Asciicast v2 and v3 encoding and decoding. Pure: bytes and dicts in, lines out.

Output and input bytes are decoded with one incremental UTF-8 decoder per stream, so a
character split across chunks survives. Bytes that are not UTF-8 are kept with Python's
`surrogateescape` (JSON `\\udcXX`): the exact bytes round-trip, and asciinema 2.x writes them
back out unchanged when it plays the file.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

V2, V3 = 2, 3
NAMESPACE = "bastion"  # our own header metadata lives under this single key

_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def _line(value: Any) -> bytes:
    # orjson escapes strings several times faster than the standard library, which matters:
    # every byte of every session passes here. It refuses lone surrogates (bytes that were
    # not UTF-8), which the standard library writes as \udcXX escapes.
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return _dumps_ascii(value).encode("ascii") + b"\n"


def build_header(
    *,
    version: int,
    width: int,
    height: int,
    timestamp: int,
    term: str | None = None,
    command: str | None = None,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The header object for either version, our metadata under `NAMESPACE`."""
    header: dict[str, Any] = {"version": version}
    if version == V2:
        header.update(width=width, height=height, timestamp=timestamp)
        if term:
            header["env"] = {"TERM": term}
    elif version == V3:
        header["term"] = {"cols": width, "rows": height, **({"type": term} if term else {})}
        header["timestamp"] = timestamp
    else:
        raise ValueError(f"unsupported asciicast version {version}")
    if command:
        header["command"] = command
    if title:
        header["title"] = title
    if metadata:
        header[NAMESPACE] = metadata
    return header


class CastEncoder:
    """Turns timed session events into asciicast lines (one `bytes` line per event)."""

    def __init__(self, version: int = V2) -> None:
        if version not in (V2, V3):
            raise ValueError(f"unsupported asciicast version {version}")
        self.version = version
        self._last = 0.0
        self._decoders = {
            code: codecs.getincrementaldecoder("utf-8")("surrogateescape") for code in ("o", "i")
        }

    def header(self, header: dict[str, Any]) -> bytes:
        return _line(header)

    def _time(self, elapsed: float) -> float:
        if self.version == V2:
            return round(elapsed, 6)
        interval = max(0.0, elapsed - self._last)
        self._last = max(self._last, elapsed)
        return round(interval, 6)

    def data(self, elapsed: float, code: str, data: bytes) -> bytes:
        """An `o` or `i` event; empty if the chunk is only part of a character so far."""
        text = self._decoders[code].decode(data)
        if not text:
            return b""
        return _line([self._time(elapsed), code, text])

    def flush(self, elapsed: float, code: str) -> bytes:
        """Whatever an incomplete character left in the decoder, as its raw bytes."""
        text = self._decoders[code].decode(b"", final=True)
        return _line([self._time(elapsed), code, text]) if text else b""

    def resize(self, elapsed: float, width: int, height: int) -> bytes:
        return _line([self._time(elapsed), "r", f"{width}x{height}"])

    def marker(self, elapsed: float, label: str) -> bytes:
        return _line([self._time(elapsed), "m", label])

    def exit(self, elapsed: float, status: int | None, signal: str | None = None) -> bytes:
        """v3 has an exit event; v2 gets a marker (players skip markers unless asked)."""
        if self.version == V3:
            value = str(status) if status is not None else f"signal {signal}"
            return _line([self._time(elapsed), "x", value])
        label = f"exit: {status}" if status is not None else f"exit: signal {signal}"
        return self.marker(elapsed, label)


class CastFormatError(ValueError):
    """A recording line that is not asciicast; `line` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


@dataclass
class Event:
    time: float  # seconds since the start, whatever the file's version
    code: str
    data: str


@dataclass
class Cast:
    header: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    truncated: bool = False  # the last line was incomplete (a crash mid-write)

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def size(self) -> tuple[int, int]:
        if self.version == V3:
            return int(self.header["term"]["cols"]), int(self.header["term"]["rows"])
        return int(self.header["width"]), int(self.header["height"])

    def output_bytes(self) -> bytes:
        return b"".join(e.data.encode("utf-8", "surrogateescape") for e in self.events if e.code == "o")

    def input_bytes(self) -> bytes:
        return b"".join(e.data.encode("utf-8", "surrogateescape") for e in self.events if e.code == "i")

    def markers(self) -> list[str]:
        return [e.data for e in self.events if e.code == "m"]


def parse_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) for complete lines; a final line without newline is dropped."""
    for number, raw in enumerate(lines, 1):
        if not raw.endswith(b"\n"):
            return
        if not raw.strip():
            continue
        try:
            yield number, orjson.loads(raw)
            continue
        except orjson.JSONDecodeError:
            pass  # lone surrogates (bytes that were not UTF-8) and the odd edge: the slow parser decides
        try:
            yield number, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CastFormatError(number, f"not JSON ({exc})") from None


def load_cast(data: bytes) -> Cast:
    """Read a whole v2 or v3 recording; names the first line that is not asciicast."""
    lines = data.splitlines(keepends=True)
    if not lines:
        raise CastFormatError(1, "empty file")
    parsed = parse_lines(lines)
    try:
        _, header = next(parsed)
    except StopIteration:
        raise CastFormatError(1, "no complete header line") from None
    if not isinstance(header, dict) or header.get("version") not in (V2, V3):
        raise CastFormatError(1, "not an asciicast v2 or v3 header")
    cast = Cast(header=header, truncated=not lines[-1].endswith(b"\n"))
    clock = 0.0
    for number, value in parsed:
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], (int, float))
                and isinstance(value[1], str) and isinstance(value[2], str)):
            raise CastFormatError(number, "expected [time, code, data]")
        clock = clock + value[0] if cast.version == V3 else float(value[0])
        cast.events.append(Event(clock, value[1], value[2]))
    return cast
