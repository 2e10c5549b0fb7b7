"""Keyframes cached on disk: a restored snapshot behaves exactly like the screen it was taken
from, stale or damaged cache files are ignored, and a second open needs no rebuilding."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyte
from hypothesis import given, settings
from hypothesis import strategies as st

from player.app import Recording
from player.keyframes import MAGIC, KeyframeCache, cache_for, restore, snapshot
from player.replay import SafeScreen, Timeline, clone_screen, plain_lines
from recorder.asciicast import load_cast
from tests.support.casts import SESSION, make_cast, recordings

PIECES = ["abc", "\r\n", "\x1b[2J", "\x1b[H", "\x1b[31;1mred\x1b[0m", "\x1b[5;5H*", "long line " * 9, "\x08\x08",
          "\t|", "\x1b[2;4r", "\x1b[r", "\x1b7", "\x1b8", "\x1b(0lqk\x1b(B", "\x0e", "\x0f", "\x1b[?7l", "\x1b[?7h",
          "\x1b[4h", "\x1b[4l", "\x1b[?25l", "\x1bH", "\x1b[3g", "\x1b[?6h", "\x1b[?6l", "\x1b[7mrev", "\x1b[K",
          "\x1bD\x1bM", "\u00e9\u4e2d", "\x1b[3;2H", "\x1b[L", "\x1b[P", "\x1b[10C", "one\n", "\x1bc", "\x1b[20l", "\x1b[20h"]


def state(screen: SafeScreen) -> tuple[object, ...]:
    buffer = tuple(tuple(screen.buffer[y][x] for x in range(screen.columns)) for y in range(screen.lines))
    return (buffer, screen.cursor.x, screen.cursor.y, screen.cursor.attrs, screen.cursor.hidden,
            frozenset(screen.mode), screen.margins, screen.charset, frozenset(screen.tabstops), screen.onlcr)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.sampled_from(PIECES), max_size=40), st.booleans())
def test_a_restored_snapshot_behaves_like_the_original(before: list[str], after: list[str], onlcr: bool) -> None:
    """With a pty, and without one (line feeds drawn as CR LF through resets)."""
    original = SafeScreen(30, 8)
    if onlcr:
        original.without_pty()
    stream = pyte.ByteStream(original)
    stream.feed("".join(before).encode())
    copy = restore(orjson.loads(orjson.dumps(snapshot(original))))
    assert state(copy) == state(original)
    pyte.ByteStream(copy).feed("".join(after).encode())
    stream.feed("".join(after).encode())
    assert state(copy) == state(original)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.sampled_from(PIECES), max_size=40))
def test_a_cloned_screen_behaves_like_the_original_and_apart_from_it(before: list[str],
                                                                       after: list[str]) -> None:
    original = SafeScreen(30, 8)
    stream = pyte.ByteStream(original)
    stream.feed("".join(before).encode())
    kept = state(original)
    copy = clone_screen(original)
    assert state(copy) == kept
    pyte.ByteStream(copy).feed("".join(after).encode())
    assert state(original) == kept  # changing the clone leaves the original alone
    stream.feed("".join(after).encode())
    assert state(copy) == state(original)


@settings(max_examples=30, deadline=None)
@given(recordings(), st.floats(min_value=0, max_value=1))
def test_seeks_from_cached_keyframes_equal_replay_from_the_start(tmp_path_factory, data: bytes,
                                                                 fraction: float) -> None:
    import player.replay as replay

    directory = tmp_path_factory.mktemp("kf")
    path = directory / "s.cast"
    path.write_bytes(data)
    cache = KeyframeCache(directory / "keyframes")
    original = replay.KEYFRAME_BYTES
    replay.KEYFRAME_BYTES = 20
    try:
        built = Timeline(load_cast(data))
        built.screen_after(len(built.cast.events))
        cache.save(path, len(built.cast.events), built.keyframes)
    finally:
        replay.KEYFRAME_BYTES = original
    cast = load_cast(data)
    loaded = cache.load(path, len(cast.events))
    assert loaded is not None and len(loaded) == len(built.keyframes)
    timeline = Timeline(cast, keyframes=loaded)
    assert timeline.complete
    target = timeline.duration * fraction
    fresh = Timeline(load_cast(data))
    fresh._covered = len(fresh.cast.events)
    assert plain_lines(timeline.screen_at(target)) == plain_lines(fresh.screen_at(target))


def test_stale_or_damaged_caches_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_bytes(make_cast(SESSION))
    cache = KeyframeCache(tmp_path / "keyframes")
    recording = Recording.open(path, None, cache=cache)
    assert not recording.timeline.complete
    recording.timeline.screen_after(len(recording.timeline.cast.events))
    saved = cache.save(path, len(recording.timeline.cast.events), recording.timeline.keyframes)
    assert saved is not None and saved.parent == tmp_path / "keyframes" and saved.stat().st_mode & 0o777 == 0o600
    again = Recording.open(path, None, cache=cache)
    assert again.timeline.complete  # nothing to rebuild on the second open
    assert cache.load(path, 999) is None  # a different event count: not this recording
    with path.open("ab") as file:  # the recording grew
        file.write(b'[99.0, "o", "more"]\n')
    assert cache.load(path, len(load_cast(path.read_bytes()).events)) is None
    path.write_bytes(make_cast(SESSION))
    events = len(load_cast(path.read_bytes()).events)
    cache.save(path, events, recording.timeline.keyframes)
    assert cache.load(path, events) is not None
    good = saved.read_bytes()
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    for damage in (b"not a cache", MAGIC + b"\xff" * 8, MAGIC + (5).to_bytes(8, "big") + b"[1,2]",
                   good[:-20], bytes(flipped)):
        saved.write_bytes(damage)
        assert cache.load(path, events) is None, damage[:40]
    # Sound digests over hostile content: refused when read, not allocated.
    hostile = Recording.open(path, None).timeline
    hostile.keyframes[0].screen = SafeScreen(10, 5)
    cache.save(path, events, hostile.keyframes)
    assert cache.load(path, events) is not None
    import hashlib
    import zlib

    piece = zlib.compress(orjson.dumps({**snapshot(SafeScreen(10, 5)), "columns": 10**6}))
    header = orjson.dumps({"source": KeyframeCache._source(path, events),
                           "keyframes": [[0, 0, len(piece), hashlib.blake2b(piece, digest_size=16).hexdigest()]]})
    saved.write_bytes(MAGIC + len(header).to_bytes(8, "big") + header + piece)
    assert cache.load(path, events) is None


def test_cache_location(tmp_path: Path, monkeypatch) -> None:
    recordings_dir = tmp_path / "recordings"
    inside = recordings_dir / "2026" / "s.cast"
    assert cache_for(inside, recordings_dir).directory == recordings_dir / "keyframes"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cache_for(tmp_path / "elsewhere.cast", recordings_dir).directory == tmp_path / "cache/bastion/keyframes"
