"""The live view of `bastion review`: the live-session registry as the browser reads and asks it
(the player never imports the bastion; it is handed this)."""

from __future__ import annotations

import threading
import time

from bastion.config import BastionConfig
from bastion.state.live import LiveSessions
from player.app import LiveEntry, LiveError

KILL_WAIT = 10.0  # how long ending a session waits to see it gone


class ReviewRegistry:
    """Opened at the first question (a registry that cannot be opened is said in the live view;
    the recordings are browsed all the same)."""

    def __init__(self, config: BastionConfig) -> None:
        self._config = config
        self._opened: LiveSessions | None = None
        self._lock = threading.Lock()  # the browser asks from more than one thread

    @property
    def _store(self) -> LiveSessions:
        if self._opened is None:
            self._opened = LiveSessions(self._config.state)
        return self._opened

    def sessions(self, user: str | None) -> list[LiveEntry]:
        with self._lock:
            live = self._store.list(user=user)
        now = time.time()
        return [LiveEntry(id=s.session, user=s.user, login=s.login, target=s.target, kind=s.kind,
                          command=s.command, client=s.client, started=s.started, idle=s.idle(now),
                          bytes_in=s.bytes_in, bytes_out=s.bytes_out) for s in live]

    def kill(self, session: str, by: str, reason: str) -> str:
        """Ask the instance serving `session` to end it, and wait until it has."""
        with self._lock:
            live = self._store.request_kill(session, by, reason)
        if live is None:
            raise LiveError("it is no longer live")
        deadline = time.monotonic() + KILL_WAIT
        while True:
            with self._lock:
                if self._store.get(session) is None:
                    return f"ended {session} ({live.user}, {live.login}@{live.target})"
            if time.monotonic() > deadline:
                raise LiveError(f"asked instance {live.instance or '?'} to end it; it has not yet")
            time.sleep(0.1)
