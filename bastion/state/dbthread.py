"""Blocking SQLite calls kept off the event loop: each connection gets a thread of its own.

The bastion serves every session from one asyncio loop. A query that waits (a lock held by
the CLI or another bastion, a slow disk) would stop all of them if it ran there. Code on the
loop therefore hands calls on a state database connection to that connection's thread and
awaits the answer: only what needs the answer waits.

One thread per connection, one call at a time, in the order they were made: a transaction
(BEGIN IMMEDIATE ... COMMIT) never interleaves with another call on the same connection, as
when everything ran on the loop. The thread starts at the first call, so processes that use
a store synchronously (the CLI) never start one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the connection's thread; the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def wait(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the connection's thread, blocking the caller until it is done:
        for synchronous callbacks whose next step needs the answer at once."""
        return self._executor.submit(fn, *args, **kwargs).result()

    def drain(self) -> None:
        """Block until every call made so far has run."""
        self._executor.submit(lambda: None).result()

    def later(self, on_error: Callable[[BaseException], None], fn: Callable[P, object],
              *args: P.args, **kwargs: P.kwargs) -> None:
        """`fn(*args, **kwargs)` on the connection's thread, after the calls made before it;
        nobody waits. `on_error` hears (on the loop) if it raised."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

        def done(finished: asyncio.Future[object]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                on_error(finished.exception())  # type: ignore[arg-type]

        future.add_done_callback(done)
