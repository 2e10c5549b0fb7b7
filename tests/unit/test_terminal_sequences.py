"""Sequences a terminal takes without complaint must not stop the screen views that follow a
session: the screening stage's tracker (an exception there ends the session) and the player's
replay (an exception there stops the review of the recording)."""

from __future__ import annotations

import pyte
import pytest

from bastion.core.linetrack import TrackedScreen
from player.replay import SafeScreen, Timeline
from recorder.asciicast import load_cast
from tests.support.casts import make_cast

# Each: bytes printed after "abc" on the first row, and where a terminal leaves the cursor.
SEQUENCES = [
    (b"\r\n\x1b[1;1A", (0, 0)),  # CUU with an extra parameter: up 1
    (b"\x1b[5;7;1H", (6, 4)),  # CUP with a third parameter
    (b"\x1b[3;1;1;1;1d", (3, 2)),  # VPA with extra parameters
    (b"\x1b[9;1;1G", (8, 0)),  # CHA with extra parameters
    (b"\x1b[?4m", (3, 0)),  # a private SGR (xterm's modifyOtherKeys query form)
    (b"\x1b[?5A", (3, 0)),  # a private cursor move no terminal knows
    (b"\x1b[1;31;42m", (3, 0)),
    (b"\x1b[?6h\x1b[4d", (0, 3)),  # VPA in origin mode (which homes) without a scrolling region: from the top
    (b"\x1b[?6h\x1b[6n", (0, 0)),  # a cursor report asked in origin mode (never answered; DECOM homes)
    (b"\x1b[3K", (3, 0)),  # erases no terminal knows: ignored
    (b"\x1b[6J", (3, 0)),
    (b"\x1b[?6K", (3, 0)),
]


@pytest.mark.parametrize(("screen_type"), [TrackedScreen, SafeScreen])
@pytest.mark.parametrize(("sequence", "cursor"), SEQUENCES)
def test_a_screen_view_takes_what_a_terminal_takes(screen_type: type[pyte.Screen], sequence: bytes,
                                                   cursor: tuple[int, int]) -> None:
    screen = screen_type(40, 10)
    stream = pyte.ByteStream(screen)
    stream.feed(b"abc" + sequence + b"")
    assert (screen.cursor.x, screen.cursor.y) == cursor
    stream.feed(b"Z")
    assert screen.display[cursor[1]][cursor[0]] == "Z"


def test_a_recording_with_extra_parameters_replays_to_its_end() -> None:
    events = [(0.1 * i, "o", f"row{i}\x1b[1;1A\x1b[1;1;1H\x1b[2;1;1;1d\x1b[1;1;1G\x1b[?4m\r\n")
              for i in range(5)] + [(1.0, "o", "\x1b[2J\x1b[Hthe end")]
    timeline = Timeline(load_cast(make_cast(events)))
    assert timeline.screen_at(timeline.duration).display[0].startswith("the end")


FINALS = sorted(pyte.Stream.csi)
PARAMETERS = ["", "0", "1", "2", "3", "5", "6", "9999", "1;1", "5;2", "?1", "?6"]
SETUPS = ["", "\x1b[?6h", "\x1b[?6h\x1b[2;3r", "\x1b[3;9r\x1b[?6h", "\x1b[4h", "\x1b[?7l", "\x1b[?1049h"]


@pytest.mark.parametrize(("screen_type"), [TrackedScreen, SafeScreen])
@pytest.mark.parametrize("setup", SETUPS)
def test_no_csi_sequence_stops_a_screen_view(screen_type: type[pyte.Screen], setup: str) -> None:
    """Every CSI sequence pyte knows, with each of these parameters, after modes that change
    how they act (origin mode with and without a scrolling region, insert mode, no autowrap, the
    alternate screen): the screen view goes on, as a terminal does."""
    for final in FINALS:
        for parameters in PARAMETERS:
            screen = screen_type(20, 5)
            stream = pyte.ByteStream(screen)
            stream.feed(f"{setup}ab\x1b[{parameters}{final}cd\x1b[{parameters}{final}".encode())
            stream.feed(b"Z")
            assert "Z" in "".join(screen.display), (setup, parameters, final)
