from __future__ import annotations

import pytest

from recorder.asciicast import CastEncoder, build_header
from recorder.chain import HashChain, checkpoint_line, verify
from recorder.signing import RecordingKey

KEY = RecordingKey.generate()


def signed(events: int = 10, checkpoints: tuple[int, ...] = (4, 8), final: bool = True,
           key: RecordingKey = KEY, text: str = "event", session: str | None = None,
           signed_for: str | None = None) -> tuple[list[bytes], bytes]:
    encoder = CastEncoder()
    metadata = {"session_id": session} if session else None
    lines = [encoder.header(build_header(version=2, width=80, height=24, timestamp=0, metadata=metadata))]
    lines += [encoder.data(i, "o", f"{text} {i}\r\n".encode()) for i in range(1, events + 1)]
    chain, sigs = HashChain(), b""
    for count in (*checkpoints, len(lines)):
        chain.extend(lines[chain.lines:count])
        if count < len(lines) or final:
            sigs += checkpoint_line(key, chain, final=count == len(lines) and final, at=0,
                                    session=signed_for or session)
    return lines, sigs


def test_intact_recording_verifies() -> None:
    lines, sigs = signed()
    result = verify(b"".join(lines), sigs, KEY)
    assert (result.state, result.events, result.intact_events) == ("verified", 10, 10)
    assert result.key_fingerprint.startswith("SHA256:")
    assert "verified: 10 events" in result.describe()


def test_crashed_recording_is_incomplete_but_intact_to_last_checkpoint() -> None:
    lines, sigs = signed(final=False)
    result = verify(b"".join(lines) + b'[11, "o", "half', sigs, KEY)
    assert (result.state, result.intact_events, result.events) == ("incomplete", 7, 10)
    assert result.ok


def _tampered(cast: list[bytes], sigs: bytes, **kw: object) -> int | None:
    result = verify(b"".join(cast), sigs, KEY, **kw)  # type: ignore[arg-type]
    assert result.state == "tampered", result
    assert not result.ok
    return result.at_event


def test_edited_byte() -> None:
    lines, sigs = signed()
    lines[6] = lines[6].replace(b"event 6", b"event X")
    assert _tampered(lines, sigs) == 4  # first event after the last good checkpoint (3 events)


def test_deleted_line() -> None:
    lines, sigs = signed()
    del lines[2]
    assert _tampered(lines, sigs) == 1


def test_swapped_lines() -> None:
    lines, sigs = signed()
    lines[9], lines[10] = lines[10], lines[9]
    assert _tampered(lines, sigs) == 8


def test_truncated() -> None:
    lines, sigs = signed()
    assert _tampered(lines[:6], sigs) == 6


def test_appended_forged_line() -> None:
    lines, sigs = signed()
    assert _tampered([*lines, b'[99, "o", "rm -rf /"]\n'], sigs) == 11


def test_spliced_from_another_recording() -> None:
    lines, sigs = signed()
    other, _ = signed(events=12, text="other")
    assert _tampered(lines[:5] + other[5:11], sigs) == 4


def test_signature_by_another_key() -> None:
    lines, sigs = signed(key=RecordingKey.generate())
    assert _tampered(lines, sigs) is not None


def test_final_signature_removed_but_index_knows_it_closed() -> None:
    lines, sigs = signed()
    without_final = b"".join(sigs.splitlines(keepends=True)[:-1])
    assert verify(b"".join(lines), without_final, KEY).state == "incomplete"
    assert _tampered(lines, without_final, expected_lines=len(lines)) == 8


def test_no_signature_file_is_unsigned() -> None:
    lines, _ = signed()
    result = verify(b"".join(lines), None, KEY)
    assert result.state == "unsigned" and not result.ok


@pytest.mark.parametrize("garbage", [b"{not json}\n", b'{"lines": 1}\n'])
def test_malformed_signature_file(garbage: bytes) -> None:
    lines, sigs = signed()
    assert _tampered(lines, garbage + sigs) == 0


def test_the_header_and_the_signatures_name_the_session() -> None:
    lines, sigs = signed(session="s-1")
    result = verify(b"".join(lines), sigs, KEY, expected_session="s-1")
    assert (result.state, result.session) == ("verified", "s-1")
    assert "verified: session s-1, 10 events" in result.describe()


def test_another_sessions_files_under_this_name_are_tampered() -> None:
    lines, sigs = signed(session="s-1")
    result = verify(b"".join(lines), sigs, KEY, expected_session="s-2")
    assert (result.state, result.at_event) == ("tampered", 0)
    assert "the header names session s-1, the file is s-2" in result.reason


def test_checkpoints_signed_for_another_session_are_tampered() -> None:
    lines, sigs = signed(session="s-1", signed_for="s-2")
    result = verify(b"".join(lines), sigs, KEY, expected_session="s-1")
    assert result.state == "tampered" and "signed for session s-2, not s-1" in result.reason


def test_a_session_name_cannot_be_added_to_an_older_checkpoint() -> None:
    lines, sigs = signed()  # checkpoints without a session, as recordings signed before
    assert verify(b"".join(lines), sigs, KEY).state == "verified"
    forged = sigs.replace(b'{"lines"', b'{"session":"s-1","lines"')
    assert verify(b"".join(lines), forged, KEY).state == "tampered"


def test_live_and_unfinished_recordings_say_so() -> None:
    lines, sigs = signed(session="s-1", final=False)
    live = verify(b"".join(lines), sigs, KEY, expected_session="s-1", live=True)
    assert live.state == "live" and live.ok
    assert live.describe().startswith("live: session s-1, still being recorded; intact up to event 7")
    ended = verify(b"".join(lines), sigs, KEY, unfinished="recording stopped: the recorder process exited")
    assert ended.state == "incomplete" and "the recorder process exited" in ended.describe()
