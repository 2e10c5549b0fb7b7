"""Keyframes on disk: emulator snapshots of a recording, so a second open seeks at once.

A snapshot is plain JSON (no pickle: a cache file is data, never code): the screen's size,
cursor, modes, margins, charsets, tab stops, saved cursors and every cell written so far.
A cache file names the recording it was built from (path, size, modification time, event
count); any mismatch, or any damage, and it is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pyte.screens import Char, Cursor, Margins, Savepoint

from player.replay import CARRY_LIMIT, Keyframe, SafeScreen

MAGIC = b"bastion-keyframes 6\n"  # 4: a full erase sets every cell; 5: onlcr (no pty); 6: carry
WAIT_FOR_CLOSE = 600.0  # seconds a build waits for the recorder to close the recording
INDEX_VARIABLE = "BASTION_RECORDINGS_INDEX"


def _char(char: Char) -> list[Any]:
    return list(char)


def _cursor(cursor: Cursor) -> dict[str, Any]:
    return {"x": cursor.x, "y": cursor.y, "attrs": _char(cursor.attrs), "hidden": cursor.hidden}


def _restore_cursor(data: dict[str, Any]) -> Cursor:
    cursor = Cursor(int(data["x"]), int(data["y"]), Char(*data["attrs"]))
    cursor.hidden = bool(data["hidden"])
    return cursor


def snapshot(screen: SafeScreen) -> dict[str, Any]:
    """Everything that decides what later output does to this screen, as JSON values.

    Cells that were written are kept even when blank: pyte's erase operations repaint only
    the cells a row holds, so a written blank and a never-written one differ later. So is the
    cell just past the last column that pyte's insert mode pushes a character into: deleting a
    character pulls it back onto the screen."""
    cells = [[y, x, *char] for y, row in screen.buffer.items() if y < screen.lines
             for x, char in row.items() if x <= screen.columns]
    return {
        "columns": screen.columns,
        "lines": screen.lines,
        "cursor": _cursor(screen.cursor),
        "savepoints": [{"cursor": _cursor(s.cursor), "g0": s.g0_charset, "g1": s.g1_charset,
                        "charset": s.charset, "origin": s.origin, "wrap": s.wrap} for s in screen.savepoints],
        "margins": list(screen.margins) if screen.margins else None,
        "mode": sorted(screen.mode),
        "onlcr": screen.onlcr,
        "carry": screen.carry,
        "charset": screen.charset,
        "g0": screen.g0_charset,
        "g1": screen.g1_charset,
        "tabstops": sorted(screen.tabstops),
        "saved_columns": screen.saved_columns,
        "cells": cells,
    }


def restore(data: dict[str, Any]) -> SafeScreen:
    columns, lines = int(data["columns"]), int(data["lines"])
    if not (0 < columns <= 1000 and 0 < lines <= 1000):
        raise ValueError("keyframe size out of range")
    screen = SafeScreen(columns, lines)
    screen.onlcr = bool(data.get("onlcr", False))
    screen.carry = str(data.get("carry", ""))[:CARRY_LIMIT]
    for y, x, *char in data["cells"]:
        if not (0 <= y < lines and 0 <= x <= columns):
            raise ValueError("keyframe cell out of range")
        screen.buffer[y][x] = Char(*char)
    screen.cursor = _restore_cursor(data["cursor"])
    screen.savepoints = [Savepoint(_restore_cursor(s["cursor"]), s["g0"], s["g1"], s["charset"], s["origin"],
                                   s["wrap"]) for s in data["savepoints"]]
    screen.margins = Margins(*data["margins"]) if data["margins"] else None
    screen.mode = set(data["mode"])
    screen.charset = int(data["charset"])
    screen.g0_charset, screen.g1_charset = str(data["g0"]), str(data["g1"])
    screen.tabstops = set(data["tabstops"])
    screen.saved_columns = data["saved_columns"]
    screen.dirty.update(range(lines))
    return screen


class _Unusable(Exception):
    """A cache file that is not for this recording as it is now."""


class KeyframeCache:
    """Files in `directory`, one per recording, named by a hash of the recording's path.

    A file is a JSON header (the recording it describes; each keyframe's event index, offset,
    length and BLAKE2 digest) and then one zlib-compressed snapshot per keyframe. Opening reads
    the header and checks the digests; a snapshot becomes a screen only when a seek needs it,
    so a large recording opens in the time it takes to read the file.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, recording: Path) -> Path:
        name = hashlib.sha256(str(recording.resolve()).encode()).hexdigest()[:32]
        return self.directory / f"{name}.keyframes"

    @staticmethod
    def _source(recording: Path, events: int) -> dict[str, Any]:
        stat = recording.stat()
        return {"path": str(recording.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "events": events}

    def load(self, recording: Path, events: int) -> list[Keyframe] | None:
        """The cached keyframes of `recording` as it is now, or None (missing, stale, damaged)."""
        try:
            return self._read(recording, events)
        except (_Unusable, OSError, ValueError, KeyError, TypeError, AttributeError, zlib.error):
            return None

    def _read(self, recording: Path, events: int) -> list[Keyframe]:
        blob = self._file(recording).read_bytes()
        if not blob.startswith(MAGIC):
            raise _Unusable
        start = len(MAGIC) + 8
        size = int.from_bytes(blob[len(MAGIC):start], "big")
        header = orjson.loads(blob[start:start + size])
        if not isinstance(header, dict) or header.get("source") != self._source(recording, events):
            raise _Unusable
        body = memoryview(blob)[start + size:]
        keyframes: list[Keyframe] = []
        for index, offset, length, digest in header["keyframes"]:
            piece = body[offset:offset + length]
            if len(piece) != length or hashlib.blake2b(piece, digest_size=16).hexdigest() != digest:
                raise _Unusable
            if not 0 <= index <= events or (keyframes and index <= keyframes[-1].index):
                raise _Unusable
            keyframes.append(Keyframe(int(index), loader=_loader(bytes(piece))))
        if not keyframes or keyframes[0].index != 0:
            raise _Unusable
        keyframes[0].fresh_screen()  # the one every seek can fall back to must be sound
        return keyframes

    def save(self, recording: Path, events: int, keyframes: list[Keyframe]) -> Path | None:
        """Write atomically (0600); a cache that cannot be written is only a slower next open."""
        pieces, entries, offset = [], [], 0
        for keyframe in keyframes:
            if keyframe.screen is None:
                continue  # only screens made here are written
            piece = zlib.compress(orjson.dumps(snapshot(keyframe.screen)), 3)
            digest = hashlib.blake2b(piece, digest_size=16).hexdigest()
            entries.append([keyframe.index, offset, len(piece), digest])
            pieces.append(piece)
            offset += len(piece)
        header = orjson.dumps({"source": self._source(recording, events), "keyframes": entries})
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = self._file(recording)
            temporary = target.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(MAGIC + len(header).to_bytes(8, "big") + header)
                file.writelines(pieces)
            os.replace(temporary, target)
            return target
        except OSError:
            return None


def _loader(piece: bytes) -> Callable[[], SafeScreen]:
    def load() -> SafeScreen:
        try:
            return restore(orjson.loads(zlib.decompress(piece)))
        except (zlib.error, KeyError, TypeError) as exc:
            raise ValueError(f"damaged keyframe ({exc})") from None

    return load


def cache_for(recording: Path, recordings_dir: Path | None) -> KeyframeCache:
    """Beside the index for the bastion's recordings; the user's cache folder for other casts."""
    if recordings_dir is not None and recording.resolve().is_relative_to(recordings_dir.resolve()):
        return KeyframeCache(recordings_dir / "keyframes")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return KeyframeCache(base / "bastion" / "keyframes")


def main(argv: list[str] | None = None) -> int:
    """`python -m player.keyframes RECORDING CACHE_DIR [SESSION]`: build and cache every keyframe
    of a recording. The player runs it, niced, on a recording's first open; the bastion runs it
    after a long session, with the session id and the index's location in the environment
    (`BASTION_RECORDINGS_INDEX`: a PostgreSQL URL holds a password, which argv would show to
    every user): it then waits for the recorder to have closed the recording (the cache names
    the file's final size)."""
    import sys
    import time

    from player.replay import Timeline
    from recorder.asciicast import CastFormatError, load_cast
    from recorder.index import RecordingIndex

    args = sys.argv[1:] if argv is None else argv
    location = os.environ.get(INDEX_VARIABLE)
    if len(args) not in (2, 3) or (len(args) == 3 and not location):
        print(f"usage: python -m player.keyframes RECORDING CACHE_DIR [SESSION] (with {INDEX_VARIABLE} set)",
              file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(10)
    recording = Path(args[0])
    if len(args) == 3 and location:
        index = RecordingIndex(location)
        deadline = time.monotonic() + WAIT_FOR_CLOSE
        # No row yet: the recorder has not taken the session's opening (its process may be
        # starting), so the recording is not closed either.
        while (row := index.get(args[2])) is None or row.state == "live":
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.5)
        index.close()
    try:
        cast = load_cast(recording.read_bytes())
    except (OSError, CastFormatError) as exc:
        print(f"{recording}: {exc}", file=sys.stderr)
        return 1
    timeline = Timeline(cast)
    timeline.screen_after(len(cast.events))
    return 0 if KeyframeCache(Path(args[1])).save(recording, len(cast.events), timeline.keyframes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
