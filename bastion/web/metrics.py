"""`[metrics] listen`: Prometheus's /metrics, /healthz and /readyz, on a listener of their own
(never the public web port), run on the bastion's loop.

/healthz answers while the loop runs. /readyz runs each readiness check (keys loaded, state
database reachable, recorder worker alive, recordings folder writable, SSH listener up) and
answers 503 naming the ones that fail. The checks that touch the disk run in a thread: a slow
disk slows the probe, never the sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bastion import metrics
from bastion.config import BastionConfig
from bastion.errors import BastionError

# A check returns None when all is well, else one line saying what is wrong.
Check = Callable[[], Awaitable[str | None]]
LAG_INTERVAL = 0.5  # seconds between two measures of the event loop's lag
CHECK_TIMEOUT = 5.0


class MetricsService:
    """The metrics listener; `refresh` runs before each scrape (figures read off the loop)."""

    name = "metrics"

    def __init__(self, config: BastionConfig, checks: Mapping[str, Check], *,
                 refresh: list[Callable[[], Awaitable[None]]] | None = None, worker: int = 0) -> None:
        assert config.metrics is not None
        self.settings, self._file = config.metrics, str(config.path or "config")
        # Each worker process has its own figures, on its own port: the configured one plus
        # its number (any free port stays any free port).
        port = self.settings.listen_port
        self._port = port + worker if port else 0
        self._checks, self._refresh = dict(checks), refresh or []
        self._runner: web.AppRunner | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._lag_max = 0.0
        self.app = web.Application()
        self.app.add_routes([web.get("/metrics", self.scrape), web.get("/healthz", self.healthz),
                             web.get("/readyz", self.readyz)])

    async def scrape(self, request: web.Request) -> web.Response:
        for refresh in self._refresh:
            await refresh()
        metrics.EVENT_LOOP_LAG_MAX.set(self._lag_max)
        self._lag_max = 0.0
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(self, request: web.Request) -> web.Response:
        failing = {}
        for name, check in self._checks.items():
            try:
                problem = await asyncio.wait_for(check(), CHECK_TIMEOUT)
            except TimeoutError:
                problem = f"no answer within {CHECK_TIMEOUT:.0f} s"
            if problem is not None:
                failing[name] = problem
        status = 503 if failing else 200
        return web.json_response({"ready": not failing, "checks": {name: failing.get(name, "ok")
                                                                   for name in self._checks}}, status=status)

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, loop.time() - start - LAG_INTERVAL)
            metrics.EVENT_LOOP_LAG.set(lag)
            self._lag_max = max(self._lag_max, lag)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen_host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            where = f"{self.settings.listen_host}:{self._port}"
            raise BastionError(f"{self._file}: [metrics] listen = \"{where}\": the metrics listener cannot "
                               f"listen there: {exc.strerror or exc}") from None
        self._lag_task = asyncio.get_running_loop().create_task(self._measure_lag())

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def address(self) -> str:
        host = self.settings.listen_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._runner is not None:
            await self._runner.cleanup()
