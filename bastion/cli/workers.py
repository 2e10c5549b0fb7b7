"""`bastion serve` with `workers = N`: N processes that each run the whole bastion.

One event loop relays every byte of every session, so one bastion process uses one core. With
`workers = N` (or "auto", one per core) `serve` starts N worker processes instead. Each is a
complete bastion, an instance of the service with an id, a lease, a recorder and an event loop of
its own, exactly as instances on several hosts are; they listen on the same ports with
SO_REUSEPORT, so the kernel spreads new connections over them, and they share what must be
shared through the state database (approvals, sessions, revocations, the recordings index).

This process only supervises them:

- worker 0 starts first and applies the database's migrations and records the keys'
  fingerprints; the others start once it listens;
- one line once every worker listens (and READY=1 to systemd); a worker that cannot start stops
  the others, and `serve` fails with that worker's error, which it printed itself;
- HUP (reload) and USR1 (reopen the log) are passed on; TERM or Ctrl-C is passed on, and each
  worker drains its sessions as a single bastion does;
- a worker that dies is started again after a pause that grows while they keep dying, with a
  `worker_exited` event; its sessions are lost as a killed bastion's are, and its live rows and
  recordings are ended by the others once its lease runs out.

Each worker serves metrics and health on the configured metrics port plus its number. The
`[limits]` on connections waiting to sign in hold for all of them together: they count on one
shared board (`bastion.ssh.limits.SharedCounts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from bastion.config import BastionConfig
from bastion.ssh.limits import SharedCounts
from bastion.ssh.system import SystemdNotifier
from bastion.state.audit import AuditLog
from bastion.state.events import WorkerExited

RESTART_FIRST = 1.0  # seconds before a dead worker is started again ...
RESTART_MAX = 30.0  # ... doubling while workers keep dying, up to this
STEADY = 60.0  # a worker that lived this long resets the pause


class StartFailed(Exception):
    """A worker ended before it listened."""


class Worker:
    def __init__(self, number: int, count: int, config_path: Path, board: int) -> None:
        self.number, self.count, self.config_path, self.board = number, count, config_path, board
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self._echoing: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Start it and wait for its line saying where it listens."""
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # the supervisor speaks
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bastion", "serve", "--config", str(self.config_path),
            "--workers", str(self.count), "--worker", str(self.number),
            "--waiting-board", str(self.board), pass_fds=(self.board,),
            stdout=asyncio.subprocess.PIPE, env=env)
        self.started = time.monotonic()
        assert self.process.stdout is not None
        line = (await self.process.stdout.readline()).decode("utf-8", "replace").strip()
        if not line:
            code = await self.process.wait()
            raise StartFailed(f"bastion: worker {self.number} did not start (exit status {code})")
        self._echoing = asyncio.get_running_loop().create_task(self._echo(self.process.stdout))
        return line

    @staticmethod
    async def _echo(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            sys.stdout.write(line.decode("utf-8", "replace"))
            sys.stdout.flush()

    def signal(self, number: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(number)


class Supervisor:
    def __init__(self, config: BastionConfig, config_path: Path, audit: AuditLog) -> None:
        self.audit = audit
        board = SharedCounts.create(config.workers)  # the pre-authentication limits hold for all
        self.workers = [Worker(n, config.workers, config_path, board) for n in range(config.workers)]
        self._stopping = False
        self._pause = RESTART_FIRST

    async def run(self) -> int:
        notifier = SystemdNotifier()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self._pass_on, sig)
        try:
            first = await self.workers[0].start()
            await asyncio.gather(*(w.start() for w in self.workers[1:]))
        except StartFailed as exc:
            self._stopping = True
            await self._stop_all()
            click.echo(str(exc), err=True)
            return 1
        where, _, rest = first.partition(", ")
        line = f"{where} with {len(self.workers)} workers, {rest}"
        click.echo(line)
        notifier.notify(f"READY=1\nSTATUS={line}\nMAINPID={os.getpid()}")
        watchers = [loop.create_task(self._watch(w)) for w in self.workers]
        await stop.wait()
        self._stopping = True
        notifier.notify("STOPPING=1\nSTATUS=the workers are draining their sessions")
        await self._stop_all()
        for watcher in watchers:
            watcher.cancel()
        return 0

    def _pass_on(self, number: int) -> None:
        for worker in self.workers:
            worker.signal(number)

    async def _stop_all(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        await asyncio.gather(*(w.process.wait() for w in self.workers if w.process is not None))

    async def _watch(self, worker: Worker) -> None:
        """Start `worker` again each time it dies, until the supervisor stops."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            if self._stopping:
                return
            lived = time.monotonic() - worker.started
            self._pause = RESTART_FIRST if lived >= STEADY else min(self._pause * 2, RESTART_MAX)
            self.audit.write(WorkerExited(worker=worker.number, pid=worker.process.pid, status=status,
                                          lived=round(lived, 1), restart_in=self._pause))
            await asyncio.sleep(self._pause)
            if self._stopping:
                return
            try:
                await worker.start()
            except StartFailed as exc:
                click.echo(str(exc), err=True)  # and try again after a longer pause
