"""Secret masking as a session stage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bastion import metrics
from bastion.config import MaskingSettings
from bastion.core.datastream import StreamKinds
from bastion.core.streamscreen import Drawn, StreamsOutput
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from bastion.state.audit import AuditLog
from bastion.state.events import SecretDrawn


class MaskingStage(SessionStage):
    """Masks the output before the user and the recorder see it (one masker per stream).

    A tail the masker holds (a secret that may still be being written) is released after
    `hold_seconds` without further output, so a prompt or an echo never waits longer.

    Without a pty, a stream whose first chunk is not text is data (`bastion.core.datastream`):
    it passes unmasked, as a file transfer does; the recorder keeps its size and hash.

    With a pty, the output's masker follows the terminal's rows (`bastion.core.screenview`):
    a secret assembled on screen by cursor moves is masked too. One it finds but cannot draw
    over gets a `secret-drawn` marker and a `secret_drawn` audit event. Without a pty, stdout
    and stderr are also read as the row the user's terminal draws from both, in the order they
    come (`bastion.core.streamscreen`), once output can draw over itself.
    """

    name = "masker"

    def __init__(self, settings: MaskingSettings, audit: AuditLog | None = None) -> None:
        self._settings = settings
        self._audit = audit
        self._session = ""
        self._maskers = {stream: settings.make_masker() for stream in Stream}
        self._io: SessionIO | None = None
        self._timers: dict[Stream, asyncio.TimerHandle] = {}
        self._transfer = False
        self._kinds: StreamKinds | None = None  # set for sessions without a pty
        self._streams: StreamsOutput | None = None  # set for terminal output without a pty

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        self._io = io
        self._session = info.session_id
        if info.has_pty:  # with a pty, stderr comes on the same channel as stdout
            self._maskers[Stream.STDOUT].on_screen(info.width or 80, info.height or 24)
        # File transfers carry files, not terminal output: masking would silently change the
        # files (and, where a mask changes the byte count, break the protocol's framing).
        # Their contents are not recorded either; the recorder keeps transfer markers.
        self._transfer = info.transfer is not None
        if not info.has_pty and not self._transfer:
            self._streams = StreamsOutput({int(s): m for s, m in self._maskers.items()},
                                          self._maskers[Stream.STDOUT])  # reads rows with its detectors
        if info.may_carry_data:
            self._kinds = StreamKinds()

    def on_input(self, data: bytes) -> bytes:
        if self._streams is not None and data:
            self._streams.screen.typed()  # echoed by the user's own tty, unseen
        return data

    def on_target_output(self, data: bytes, stream: Stream) -> None:
        # Decided on the target's own first bytes, as the recorder decides: both agree.
        if self._kinds is not None:
            self._kinds.see(stream.name.lower(), data)

    def _passes(self, stream: Stream) -> bool:
        return self._transfer or (self._kinds is not None and self._kinds.is_data(stream.name.lower()))

    def on_output(self, data: bytes, stream: Stream) -> bytes:
        if self._passes(stream):
            return data
        masker = self._maskers[stream]
        if self._streams is not None:
            data = self._out(self._streams.feed(data, stream), stream)
            holding = self._streams.holding(stream)
        else:
            result = masker.feed(data)
            self._report(result.masked, result.drawn)
            data, holding = result.data, masker.holding
        timer = self._timers.pop(stream, None)
        if timer is not None:
            timer.cancel()
        if holding:
            loop = asyncio.get_running_loop()
            self._timers[stream] = loop.call_later(self._settings.hold_seconds, self._release, stream)
        return data

    def _out(self, drawn: Drawn, stream: Stream) -> bytes:
        """What goes out on `stream`; what goes out on the other one first is released here."""
        self._report(drawn.masked, drawn.drawn)
        mine: list[bytes] = []
        for number, data in drawn.parts:
            if number == stream:
                mine.append(data)
            elif data and self._io is not None:
                if any(mine):  # in order: what this stream had before goes first
                    self._io.release_output_after(self, b"".join(mine), stream)
                    mine = []
                self._io.release_output_after(self, data, Stream(number))
        return b"".join(mine)

    def _release(self, stream: Stream) -> None:
        self._timers.pop(stream, None)
        if self._streams is not None:
            data = self._out(self._streams.flush(stream, pause=True), stream)
            if data and self._io is not None:
                self._io.release_output_after(self, data, stream)
            return
        result = self._maskers[stream].flush(pause=True)
        self._report(result.masked, result.drawn)
        if result.data and self._io is not None:
            self._io.release_output_after(self, result.data, stream)

    def _report(self, names: list[str], drawn: Sequence[str] = ()) -> None:
        for name in names:
            metrics.MASKING_HITS.labels(detector=name, direction="output").inc()
        if self._io is not None:
            for name in names:
                self._io.marker("masked", name)
            for secret in drawn:
                self._io.marker("secret-drawn", secret)
        for secret in drawn:
            if self._audit is not None:
                detector, _, where = secret.partition(" (")
                self._audit.write(SecretDrawn(session=self._session, detector=detector,
                                              where=where.rstrip(")")))

    def on_resize(self, width: int, height: int) -> None:
        self._maskers[Stream.STDOUT].resize(width, height)

    def flush_output(self, stream: Stream) -> bytes:
        if self._passes(stream):
            return b""
        timer = self._timers.pop(stream, None)
        if timer is not None:
            timer.cancel()
        if self._streams is not None:
            return self._out(self._streams.flush(stream), stream)
        result = self._maskers[stream].flush()
        self._report(result.masked, result.drawn)
        return result.data

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

