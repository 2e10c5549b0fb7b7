"""Reading a recording as it grows: only what was appended, whole lines only, a shrunk or replaced
file and a bad line said; the live verdict kept up line by line equals the whole file's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from player.follow import CastTail, FollowStopped, LiveChain, Loader
from player.replay import Timeline
from recorder.asciicast import Cast, CastEncoder, CastFormatError, build_header, load_cast
from recorder.chain import HashChain, checkpoint_line, verify
from recorder.signing import RecordingKey
from tests.support.casts import SESSION, make_cast

KEY = RecordingKey.generate()
HEADER = CastEncoder().header(build_header(version=2, width=40, height=10, timestamp=0))


def line(t: float, text: str) -> bytes:
    return CastEncoder().data(t, "o", text.encode())


def test_only_what_was_appended_is_read(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_bytes(HEADER + line(1, "one\r\n"))
    tail = CastTail(path)
    lines, events = tail.read()
    assert [e.data for e in events] == ["one\r\n"] and tail.header is not None and len(lines) == 2
    # What was read is not read again: garbage written over it in place (same file, same size)
    # is not seen by the reader (the signatures would be; reading is not verifying).
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.write(b"x" * size)
    with open(path, "ab") as file:
        file.write(line(2, "two\r\n"))
    lines, events = tail.read()
    assert [e.data for e in events] == ["two\r\n"] and lines == [line(2, "two\r\n")]
    assert tail.offset == path.stat().st_size and tail.eof
    assert tail.read() == ([], [])


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    whole = line(1.5, "a line written in three writes\r\n")
    path.write_bytes(HEADER)
    tail = CastTail(path)
    tail.read()
    for cut in (7, 20):
        with open(path, "ab") as file:
            file.write(whole[:cut] if cut == 7 else whole[7:cut])
        assert tail.read() == ([], [])
    with open(path, "ab") as file:
        file.write(whole[20:])
    _, events = tail.read()
    assert [(e.time, e.data) for e in events] == [(1.5, "a line written in three writes\r\n")]


def test_a_line_the_writer_took_back_is_read_once_whole(tmp_path: Path) -> None:
    """The recorder cuts a write the disk cut short back to the last whole line: not an error."""
    path = tmp_path / "s.cast"
    path.write_bytes(HEADER + line(1, "kept\r\n") + b'[2.0, "o", "cut sh')
    tail = CastTail(path)
    assert [e.data for e in tail.read()[1]] == ["kept\r\n"]
    os.truncate(path, len(HEADER + line(1, "kept\r\n")))
    assert tail.read() == ([], []) and tail.stopped is None
    with open(path, "ab") as file:
        file.write(line(3, "written again\r\n"))
    assert [e.data for e in tail.read()[1]] == ["written again\r\n"]


def test_a_truncated_or_replaced_file_is_said_and_what_was_read_stays(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_bytes(HEADER + line(1, "one\r\n") + line(2, "two\r\n"))
    tail = CastTail(path)
    assert len(tail.read()[1]) == 2
    os.truncate(path, len(HEADER) + 3)
    assert tail.read() == ([], [])
    assert isinstance(tail.stopped, FollowStopped) and "s.cast was TRUNCATED" in str(tail.stopped)
    assert "3 lines, shown" in str(tail.stopped)

    path.write_bytes(HEADER + line(1, "one\r\n"))
    tail = CastTail(path)
    tail.read()
    other = tmp_path / "other.cast"
    other.write_bytes(HEADER + line(1, "one\r\n") + line(2, "forged\r\n"))
    other.replace(path)
    assert tail.read() == ([], [])
    assert "s.cast was REPLACED by another file" in str(tail.stopped)

    path.unlink()
    tail = CastTail(other.with_name("gone.cast"))
    other.with_name("gone.cast").write_bytes(HEADER)
    tail.read()
    other.with_name("gone.cast").unlink()
    tail.read()
    assert "gone.cast was REMOVED" in str(tail.stopped)


@pytest.mark.parametrize(("bad", "reason"), [(b"{oops\n", "line 4: not JSON"),
                                             (b'[3, "o"]\n', r"line 4: expected \[time, code, data\]")])
def test_a_bad_line_names_its_line_and_what_came_before_it_is_kept(tmp_path: Path, bad: bytes,
                                                                   reason: str) -> None:
    path = tmp_path / "s.cast"
    path.write_bytes(HEADER + line(1, "one\r\n"))
    tail = CastTail(path)
    tail.read()
    with open(path, "ab") as file:  # in one write with good lines before and after it
        file.write(line(2, "two\r\n") + bad + line(4, "after\r\n"))
    lines, events = tail.read()
    assert [e.data for e in events] == ["two\r\n"] and len(lines) == 1
    assert isinstance(tail.stopped, CastFormatError)
    with pytest.raises(CastFormatError, match=reason):
        raise tail.stopped
    assert tail.read() == ([], [])  # nothing after it is read


def test_a_v3_recording_read_in_pieces_has_the_times_of_one_read_whole(tmp_path: Path) -> None:
    encoder = CastEncoder(3)
    data = encoder.header(build_header(version=3, width=40, height=10, timestamp=0)) + b"".join(
        encoder.data(t, "o", f"at {t}\r\n".encode()) for t in (0.5, 1.25, 1.25, 7.0, 9.5))
    path = tmp_path / "v3.cast"
    path.write_bytes(b"")
    tail = CastTail(path)
    events = []
    for cut in range(0, len(data), 17):
        with open(path, "ab") as file:
            file.write(data[cut:cut + 17])
        events += tail.read(limit=23)[1]
    events += tail.read()[1]
    assert [(e.time, e.data) for e in events] == [(e.time, e.data) for e in load_cast(data).events]


def test_a_timeline_extended_in_pieces_equals_one_made_whole() -> None:
    cast = load_cast(make_cast(SESSION))
    for idle_cap in (2.0, None):
        whole = Timeline(cast, idle_cap=idle_cap)
        grown = Timeline(Cast(cast.header), idle_cap=idle_cap)
        for start in range(0, len(cast.events), 3):
            grown.extend(cast.events[start:start + 3])
        assert grown.times == whole.times and grown.costs == whole.costs
        assert [(m.time, m.index, m.label) for m in grown.markers] == [(m.time, m.index, m.label)
                                                                        for m in whole.markers]
        assert grown.screen_at(grown.duration).display == whole.screen_at(whole.duration).display


# -- the live verdict -------------------------------------------------------------------------------


def recording(events: int, checkpoints: list[int], session: str = "s1") -> tuple[list[bytes], list[bytes]]:
    """A live recording's lines and signature lines as the recorder writes them."""
    encoder = CastEncoder()
    lines = [encoder.header(build_header(version=2, width=40, height=10, timestamp=0,
                                         metadata={"session_id": session}))]
    lines += [encoder.data(i, "o", f"event {i}\r\n".encode()) for i in range(1, events + 1)]
    chain, signatures = HashChain(), []
    for count in sorted(set(checkpoints)):
        chain.extend(lines[chain.lines:count])
        signatures.append(checkpoint_line(KEY, chain, final=False, at=0, session=session))
    return lines, signatures


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_live_verdict_kept_up_equals_verifying_the_whole_file(data: st.DataObject) -> None:
    events = data.draw(st.integers(0, 12))
    counts = data.draw(st.lists(st.integers(1, events + 1), max_size=4))
    lines, signatures = recording(events, counts)
    # A hostile change, maybe: a line edited, dropped or added; a signature line edited or added.
    change = data.draw(st.sampled_from(["none", "edit", "drop", "add", "bad-signature", "other-session",
                                        "garbage", "name"]))
    expected_session = "s1"
    if change == "edit" and len(lines) > 1:
        at = data.draw(st.integers(1, len(lines) - 1))
        lines[at] = lines[at].replace(b"event", b"EVENT")
    elif change == "drop" and len(lines) > 1:
        del lines[data.draw(st.integers(1, len(lines) - 1))]
    elif change == "add":
        lines.insert(data.draw(st.integers(1, len(lines))), line(0.5, "forged\r\n"))
    elif change == "bad-signature" and signatures:
        signatures[-1] = signatures[-1].replace(b'"sig":"', b'"sig":"AA')
    elif change == "other-session":
        signatures += recording(events, [events + 1], session="s2")[1]
    elif change == "garbage":
        signatures.append(b"not a checkpoint\n")
    elif change == "name":
        expected_session = "s9"
    chain = LiveChain(KEY, expected_session)
    # The reader looks at the signatures, then the cast, in steps, as the writer wrote them.
    cuts = [*sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=3))), len(lines)]
    read_lines, read_signatures = 0, 0
    for step in cuts:
        read_signatures = (len(signatures) if step == len(lines) else
                           data.draw(st.integers(read_signatures, len(signatures))))
        chain.add_signatures(b"".join(signatures[chain.signature_lines:read_signatures]).splitlines())
        chain.add_lines(lines[read_lines:step])
        read_lines = step
        at_end = read_lines == len(lines)
        got = chain.verdict(at_end=at_end)
        if at_end:
            whole = verify(b"".join(lines), b"".join(signatures[:read_signatures]) or None, KEY,
                           expected_session=expected_session, live=True)
            assert got == whole, (change, got, whole)
        elif got.state == "tampered":  # said before the end only when the whole file says so too
            whole = verify(b"".join(lines), b"".join(signatures) or None, KEY, expected_session=expected_session,
                           live=True)
            assert whole.state == "tampered", (change, got, whole)


def test_a_loader_reports_a_live_recordings_growth_and_its_verdict(tmp_path: Path) -> None:
    from player.follow import IndexState

    path = tmp_path / "s1.cast"
    sig = tmp_path / "s1.cast.sig"
    lines, signatures = recording(6, [3, 5])
    path.write_bytes(b"".join(lines[:4]))
    sig.write_bytes(signatures[0])
    state = IndexState("live")
    loader = Loader(path, KEY, follow=True, state=lambda: state, expected_session="s1")
    first = loader.poll()
    assert len(first.events) == 3 and first.header is not None and first.loaded
    assert first.verification is not None and (first.verification.state, first.verification.intact_events) == (
        "live", 2)
    with open(path, "ab") as file:
        file.write(b"".join(lines[4:]))
    sig.write_bytes(signatures[0] + signatures[1])
    update = loader.poll()
    assert len(update.events) == 3 and update.verification is not None
    assert update.verification.intact_events == 4
    assert loader.poll().events == []  # nothing new


def test_a_plain_open_verifies_the_bytes_it_then_parses_and_says_if_the_file_changed(tmp_path: Path) -> None:
    lines, signatures = recording(40, [41])
    path = tmp_path / "s1.cast"
    path.write_bytes(b"".join(lines))
    path.with_name("s1.cast.sig").write_bytes(b"".join(signatures))
    loader = Loader(path, KEY, expected_session="s1", chunk=100)
    first = loader.poll(200)  # the header and a few lines, before the first frame
    assert first.header is not None and first.verification is None and loader.verifying
    verdict = loader.poll()  # then the whole file, verified before it is parsed
    assert verdict.verification is not None and verdict.verification.state == "incomplete"
    assert verdict.events == []
    events = list(first.events)
    while not loader.done:
        events += loader.poll().events
    assert [e.data for e in events] == [e.data for e in load_cast(b"".join(lines)).events]

    loader = Loader(path, KEY, expected_session="s1")
    loader.poll(200)
    path.write_bytes(b"".join(lines).replace(b"event 1\\r", b"EVENT 1\\r"))  # what was shown is not there now
    update = loader.poll()
    assert update.problem is not None and "s1.cast changed while being read" in update.problem
    assert update.verification is None and loader.done
