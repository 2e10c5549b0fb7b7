"""A port forward inside the jump (`ssh -L`, `ssh -W` to the target's side): both channels
joined, their bytes counted, and the whole forward closable at once (a kill)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncssh.forward import SSHForwarder


@dataclass
class ForwardTunnel:
    """One forward: its session id in the live registry, who, where, how much each way."""

    session_id: str
    user: str
    target: str
    login: str
    destination: str  # host:port, as the client asked
    on_closed: Callable[[ForwardTunnel], None]
    started: float = field(default_factory=time.monotonic)
    bytes_in: int = 0  # from the user
    bytes_out: int = 0  # to the user
    client_side: SSHForwarder | None = None
    closed: bool = False

    def close(self) -> None:
        """End both channels (each side's close closes its peer)."""
        if self.client_side is not None:
            self.client_side.close()
        self._gone()

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_closed(self)


class CountingForwarder(SSHForwarder):
    """One side of the forward: what it receives goes to the other side, counted."""

    def __init__(self, tunnel: ForwardTunnel, from_user: bool, peer: SSHForwarder | None = None) -> None:
        super().__init__(peer)
        self._tunnel = tunnel
        self._from_user = from_user

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        if self._from_user:
            self._tunnel.bytes_in += len(data)
        else:
            self._tunnel.bytes_out += len(data)
        super().data_received(data, datatype)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._tunnel._gone()
