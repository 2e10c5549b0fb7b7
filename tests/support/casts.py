"""Small asciicast recordings made in memory, for the player's tests."""

from __future__ import annotations

from hypothesis import strategies as st

from recorder.asciicast import CastEncoder, build_header


def make_cast(events: list[tuple[float, str, str]], width: int = 40, height: int = 10,
              metadata: dict[str, object] | None = None) -> bytes:
    encoder = CastEncoder()
    lines = [encoder.header(build_header(version=2, width=width, height=height, timestamp=0, metadata=metadata))]
    for time_, code, data in events:
        if code in "oi":
            lines.append(encoder.data(time_, code, data.encode()))
        elif code == "m":
            lines.append(encoder.marker(time_, data))
        elif code == "r":
            w, h = data.split("x")
            lines.append(encoder.resize(time_, int(w), int(h)))
    return b"".join(lines)


SESSION = [
    (0.5, "o", "$ "), (1.0, "i", "ls\r"), (1.1, "o", "ls\r\nfile-a  file-b\r\n$ "),
    (1.2, "m", "command: ls"), (30.0, "o", "echo needle\r\nneedle\r\n$ "), (31.0, "m", "denied: rm -rf /"),
    (40.0, "r", "50x12"), (41.0, "o", "done\r\n"),
]


@st.composite
def recordings(draw: st.DrawFn) -> bytes:
    chunks = draw(st.lists(st.sampled_from(["abc", "\r\n", "\x1b[2J", "\x1b[H", "xyz\r\n", "\x1b[31mred\x1b[0m",
                                            "\x1b[5;5H*", "long line " * 9, "\x08\x08", "\t|"]),
                           min_size=1, max_size=60))
    events, t = [], 0.0
    for chunk in chunks:
        t += draw(st.floats(min_value=0, max_value=3))
        events.append((t, "o", chunk))
    return make_cast(events, width=30, height=6)
