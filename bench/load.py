"""Many sessions at once: the bastion vs OpenSSH's own jump host under the same load, same run.

Three phases, each run through the bastion and then through an OpenSSH jump host (a second
sshd with AllowTcpForwarding) against the same target sshds:

- **idle**: N interactive sessions (pty, login shell; recorded on the bastion) held open. Reports
  the time to open them all, the jump host's memory (PSS of every process it runs, its recorder
  included) and file descriptors per session, and its CPU while they sit idle;
- **active**: M sessions each printing a line every 100 ms (pty, recorded and masked on the
  bastion), and on top of them a probe session that types one key at a time and times its echo:
  the added keystroke-to-echo latency, p50 and p99, and meanwhile the bastion's event loop lag
  from its own metrics (`bastion_event_loop_lag_max_seconds` of every worker, each second);
- **bulk**: K sessions each sending B MB of a payload at once; the aggregate throughput.

Idle and active sessions are asyncssh clients in this process, because thousands of `ssh`
processes would measure the client instead of the jump host; the probe and the bulk sessions
are the real OpenSSH client. Every figure for the bastion is printed beside the same figure for
OpenSSH's jump host and as a ratio.

    .venv/bin/python bench/load.py                       # 2,000 idle, 200 active, 8 bulk
    .venv/bin/python bench/load.py --idle 100 --active 20 --bulk 2 --mb 20
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from bastion.demo.openssh import OpenSSHServer, free_port
from bastion.demo.sandbox import Sandbox

Process = asyncssh.SSHClientProcess[bytes]
Connection = asyncssh.SSHClientConnection
TARGETS = 4  # sessions are spread over this many target sshds
# A line every 100 ms from bash builtins alone (a read that times out on a pipe nobody writes):
# `date` and `sleep` in each of 200 sessions were 4,000 processes a second, on the machine's cores.
TICKER = ("exec 9<> <(:); i=0; while :; do i=$((i+1)); echo \"tick $i $EPOCHREALTIME some log text\";"
          " read -t 0.1 -u 9; done")
PAYLOADS = {
    "text": "yes '2026-11-28T14:00:00.123Z INFO api request handled path=/v1/items/42' | head -c {size}",
    "random": "head -c {size} /dev/urandom",
    "zeros": "head -c {size} /dev/zero",
}


# --- what a process tree costs --------------------------------------------------------------

def tree(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            yield from tree(int(child))


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    pss_kib: int
    fds: int
    cpu: float

    @classmethod
    def of(cls, root: int) -> Usage:
        pids = list(tree(root))
        return cls(sum(pss_kib(p) for p in pids), sum(fd_count(p) for p in pids),
                   sum(cpu_seconds(p) for p in pids))


# --- one path through a jump host ---------------------------------------------------------

@dataclass
class Path_:
    """How to reach the targets through one jump host, for asyncssh and for OpenSSH."""

    name: str
    pid: int  # the jump host's process: its tree is what is measured
    jump_port: int
    jump_user: str
    key: Path
    target_hosts: list[tuple[str, int]]  # (host, port) as the jump host is asked for them
    ssh_config: Path
    ssh_hosts: list[str]  # `ssh -F config -J jump LOGIN@HOST` for each target
    login: str
    connections: list[asyncssh.SSHClientConnection] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)  # the bastion's workers' /metrics

    async def open(self, index: int, command: str | None, *, term: bool = True,
                   **channel: int) -> tuple[Process, list[Connection]]:
        outer = await asyncssh.connect("127.0.0.1", self.jump_port, username=self.jump_user,
                                       client_keys=[str(self.key)], known_hosts=None)
        host, port = self.target_hosts[index % len(self.target_hosts)]
        inner = await asyncssh.connect(host, port, tunnel=outer, username=self.login,
                                       client_keys=[str(self.key)], known_hosts=None)
        process = await inner.create_process(command, term_type="xterm" if term else None,
                                             term_size=(120, 40), encoding=None, **channel)
        return process, [inner, outer]

    def ssh(self, index: int) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-J", "jump",
                f"{self.login}@{self.ssh_hosts[index % len(self.ssh_hosts)]}"]


async def drain(process: asyncssh.SSHClientProcess[bytes]) -> None:
    try:
        while await process.stdout.read(65536):
            pass
    except (asyncssh.Error, OSError):
        pass


@dataclass
class Held:
    processes: list[asyncssh.SSHClientProcess[bytes]] = field(default_factory=list)
    connections: list[asyncssh.SSHClientConnection] = field(default_factory=list)
    drains: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for conn in self.connections:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in self.connections), return_exceptions=True)
        for task in self.drains:
            task.cancel()
        await asyncio.gather(*self.drains, return_exceptions=True)


async def open_many(path: Path_, count: int, command: str | None, parallel: int) -> tuple[Held, float]:
    held, gate = Held(), asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with gate:
            process, conns = await path.open(index, command)
        held.processes.append(process)
        held.connections.extend(conns)
        held.drains.append(asyncio.create_task(drain(process)))

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return held, time.perf_counter() - start


# --- the bastion's event loop lag, from its own gauge --------------------------------------

LAG_GAUGE = "bastion_event_loop_lag_max_seconds"


async def scrape_lag(port: int) -> float:
    """The largest lag the worker on `port` measured since its last scrape (the gauge resets)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = (await reader.read()).decode()
    finally:
        writer.close()
    for line in body.splitlines():
        if line.startswith(LAG_GAUGE + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no {LAG_GAUGE} on port {port}")


async def watch_lag(ports: list[int], maxima: list[float], every: float = 1.0) -> None:
    """Append, every `every` seconds, the largest lag of any worker since the last round."""
    for port in ports:
        await scrape_lag(port)  # start every worker's maximum afresh
    while True:
        await asyncio.sleep(every)
        maxima.append(max(await asyncio.gather(*(scrape_lag(port) for port in ports))))


async def probe_watching_lag(path: Path_, keys: int) -> tuple[list[float], list[float]]:
    """The probe's samples, and the bastion's loop lag maxima meanwhile (none for OpenSSH)."""
    maxima: list[float] = []
    watch = asyncio.create_task(watch_lag(path.metrics_ports, maxima)) if path.metrics_ports else None
    try:
        samples = await asyncio.to_thread(probe, path.ssh(0), keys)
    finally:
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
    return samples, maxima


def lag_figures(maxima: list[float]) -> dict[str, float]:
    if not maxima:
        return {}
    return {"lag_p50_ms": 1000 * statistics.median(maxima), "lag_max_ms": 1000 * max(maxima)}


# --- the probe: keystroke to echo with the real client --------------------------------------

def probe(cmd: list[str], keys: int) -> list[float]:
    """Type `keys` single keys into a shell through `cmd` and time each one's echo."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    buf = b""

    def until(needle: bytes, timeout: float = 30) -> float:
        nonlocal buf
        deadline = time.monotonic() + timeout
        while needle not in buf:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{needle!r} not in {buf[-200:]!r}")
            buf += os.read(fd, 65536)
        buf = buf[buf.index(needle) + len(needle):]
        return time.perf_counter()

    samples = []
    try:
        until(b"# " if os.geteuid() == 0 else b"$ ")
        os.write(fd, b"PS1='pr''obe> '\r")
        until(b"probe> ")
        for i in range(keys):
            key = b"abcdefghij"[i % 10:i % 10 + 1]
            start = time.perf_counter()
            os.write(fd, key)
            samples.append(until(key) - start)
            if i % 10 == 9:
                os.write(fd, b"\x15")  # Ctrl-U: an empty line again
                time.sleep(0.01)
            time.sleep(0.005)
        os.write(fd, b"\x15exit\r")
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the phases ----------------------------------------------------------------------------

async def idle_phase(path: Path_, count: int, parallel: int, quiet: float) -> dict[str, float]:
    before = Usage.of(path.pid)
    held, opened = await open_many(path, count, None, parallel)
    try:
        await asyncio.sleep(2)  # prompts drawn, recorders settled
        loaded = Usage.of(path.pid)
        await asyncio.sleep(quiet)
        after = Usage.of(path.pid)
    finally:
        await held.close()
    return {
        "open_s": opened,
        "kib_per_session": (loaded.pss_kib - before.pss_kib) / count,
        "fds_per_session": (loaded.fds - before.fds) / count,
        "idle_cpu_percent": 100 * (after.cpu - loaded.cpu) / quiet,
    }


async def active_phase(path: Path_, count: int, parallel: int, keys: int) -> dict[str, float]:
    held, _ = await open_many(path, count, TICKER, parallel)
    try:
        await asyncio.sleep(2)
        before = Usage.of(path.pid)
        start = time.perf_counter()
        samples, lags = await probe_watching_lag(path, keys)
        elapsed = time.perf_counter() - start
        after = Usage.of(path.pid)
    finally:
        await held.close()
    return {
        "p50_ms": 1000 * statistics.median(samples),
        "p99_ms": 1000 * percentile(samples, 99),
        "cpu_percent": 100 * (after.cpu - before.cpu) / elapsed,
        **lag_figures(lags),
    }


async def hostile_phase(path: Path_, keys: int, packet: int) -> dict[str, float]:
    """The probe while another user reads an endless stream in packets of `packet` bytes."""
    process, connections = await path.open(1, "cat /dev/zero", term=False,
                                           max_pktsize=packet, window=64 * 1024 * 1024)
    held = Held([process], connections, [asyncio.create_task(drain(process))])
    try:
        await asyncio.sleep(1)
        samples, lags = await probe_watching_lag(path, keys)
    finally:
        await held.close()
    return {"p50_ms": 1000 * statistics.median(samples), "p99_ms": 1000 * percentile(samples, 99),
            **lag_figures(lags)}


def bulk_phase(path: Path_, count: int, size: int, payload: str) -> dict[str, float]:
    command = PAYLOADS[payload].format(size=size)
    start = time.perf_counter()
    clients = [subprocess.Popen([*path.ssh(i), command], stdout=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL) for i in range(count)]
    failed = [c.args for c in clients if c.wait() != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} bulk sessions failed through {path.name}")
    elapsed = time.perf_counter() - start
    return {"aggregate_mb_s": count * size / elapsed / 1e6}


# --- the world -------------------------------------------------------------------------------

def world(tmp: Path, login: str, workers: int = 1) -> tuple[Sandbox, OpenSSHServer, list[Path_]]:
    metrics_port = free_port()  # worker i serves its metrics on this port + i
    sandbox = Sandbox(tmp, extra={"limits": {"sessions_per_user": 0, "unauthenticated": 1000,
                                             "unauthenticated_per_source": 1000},
                                  "workers": workers, "metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
    key = sandbox.add_user("alice", ["ops"])
    public = key.with_name(key.name + ".pub").read_text()
    names = [f"db-{i + 1}" for i in range(TARGETS)]
    for name in names:
        sandbox.add_target(name, logins=[login], groups=["ops"], authorized_keys=public)
    # The sandbox's targets give their sessions a home of their own: the account's start-up files
    # (a version manager's hooks, say) would otherwise run in each of thousands of shells.
    for server in sandbox.servers.values():  # more sessions at once than a default sshd takes
        server.stop()
        server.max_startups = "1000:30:2000"
        server.start()
    jump = OpenSSHServer(tmp / "openssh-jump", authorized_keys=public, max_startups="1000:30:2000",
                         extra_config=["AllowTcpForwarding yes"]).start()
    bastion_config = sandbox.write_ssh_config("alice")
    bastion_config.write_text(bastion_config.read_text().replace("Host bastion\n", "Host jump\n", 1))
    known = tmp / "known_hosts_openssh"
    known.write_text(f"[127.0.0.1]:{jump.port} {jump.host_public_key()}\n" + "".join(
        f"direct-{name} {server.host_public_key()}\n" for name, server in sandbox.servers.items()))
    openssh_config = tmp / "ssh_config-openssh"
    openssh_config.write_text(
        f"Host jump\n    HostName 127.0.0.1\n    Port {jump.port}\n    User {login}\n"
        + "".join(f"Host direct-{name}\n    HostName 127.0.0.1\n    Port {server.port}\n"
                  f"    HostKeyAlias direct-{name}\n" for name, server in sandbox.servers.items())
        + f"Host *\n    IdentityFile {key}\n    IdentitiesOnly yes\n    UserKnownHostsFile {known}\n"
        "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n")
    bastion_process = sandbox.start_bastion()
    assert jump.process is not None
    servers = list(sandbox.servers.values())
    paths = [
        Path_("bastion", bastion_process.pid, sandbox.port, "alice", key,
              [(name, 22) for name in names], bastion_config, names, login,
              metrics_ports=[metrics_port + i for i in range(workers)]),
        Path_("openssh", jump.process.pid, jump.port, login, key,
              [("127.0.0.1", s.port) for s in servers], openssh_config,
              [f"direct-{name}" for name in names], login),
    ]
    return sandbox, jump, paths


def print_lag(figures: dict[str, float]) -> None:
    if "lag_max_ms" in figures:
        print(f"  bastion's event loop lag ({LAG_GAUGE}, largest of each second): "
              f"median {figures['lag_p50_ms']:.1f} ms, largest {figures['lag_max_ms']:.1f} ms")


def row(label: str, key: str, results: dict[str, dict[str, float]], unit: str, fmt: str = ".2f") -> None:
    b, o = results["bastion"][key], results["openssh"][key]
    ratio = f"{b / o:5.2f}x" if o else "   - "
    print(f"  {label:34} bastion {b:{fmt}}{unit}   openssh jump {o:{fmt}}{unit}   ratio {ratio}")


async def run(args: argparse.Namespace, paths: list[Path_]) -> None:
    """Phase by phase, each through the bastion and then OpenSSH's jump host; each phase's
    figures are printed as soon as both are measured."""
    for phase, wanted in (("idle", args.idle), ("active", args.active), ("hostile", args.hostile),
                          ("bulk", args.bulk)):
        if not wanted:
            continue
        figures: dict[str, dict[str, float]] = {}
        for path in paths:
            if phase == "idle":
                figures[path.name] = await idle_phase(path, args.idle, args.parallel, args.quiet)
            elif phase == "active":
                figures[path.name] = await active_phase(path, args.active, args.parallel, args.keys)
            elif phase == "hostile":
                figures[path.name] = await hostile_phase(path, args.keys, args.hostile_packet)
            else:
                figures[path.name] = await asyncio.to_thread(
                    bulk_phase, path, args.bulk, args.mb * 1_000_000, args.payload)
        report(phase, figures, args)


def report(phase: str, figures: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    if phase == "idle":
        print(f"{args.idle} idle interactive sessions (pty, shell; asyncssh clients):")
        row("time to open them all", "open_s", figures, " s", ".1f")
        row("memory per session (PSS)", "kib_per_session", figures, " KiB", ".0f")
        row("file descriptors per session", "fds_per_session", figures, "", ".1f")
        row("CPU while idle", "idle_cpu_percent", figures, " %", ".1f")
    elif phase == "active":
        print(f"{args.active} active sessions (a line every 100 ms) + a probe typing {args.keys} keys (ssh):")
        row("keystroke to echo, p50", "p50_ms", figures, " ms")
        row("keystroke to echo, p99", "p99_ms", figures, " ms")
        row("jump host CPU meanwhile", "cpu_percent", figures, " %", ".0f")
        b, o = figures["bastion"], figures["openssh"]
        print(f"  added by the bastion: p50 {b['p50_ms'] - o['p50_ms']:+.2f} ms, "
              f"p99 {b['p99_ms'] - o['p99_ms']:+.2f} ms")
        print_lag(b)
    elif phase == "hostile":
        print(f"a probe typing {args.keys} keys while another session reads /dev/zero"
              f" in {args.hostile_packet}-byte packets:")
        row("keystroke to echo, p50", "p50_ms", figures, " ms")
        row("keystroke to echo, p99", "p99_ms", figures, " ms")
        print_lag(figures["bastion"])
    else:
        print(f"{args.bulk} bulk sessions at once, {args.mb} MB of {args.payload} each (ssh):")
        row("aggregate throughput", "aggregate_mb_s", figures, " MB/s", ".1f")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=2000, help="idle pty sessions held open (0: skip)")
    parser.add_argument("--active", type=int, default=200, help="sessions printing every 100 ms (0: skip)")
    parser.add_argument("--keys", type=int, default=300, help="keystrokes the probe times")
    parser.add_argument("--hostile", action="store_true",
                        help="also time the probe while another session reads /dev/zero")
    parser.add_argument("--hostile-packet", type=int, default=1024,
                        help="the maximum packet size that session asks for (the bastion's floor: 1024)")
    parser.add_argument("--bulk", type=int, default=8, help="bulk sessions at once (0: skip)")
    parser.add_argument("--mb", type=int, default=100, help="MB each bulk session sends")
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="text")
    parser.add_argument("--parallel", type=int, default=16, help="sessions being opened at once")
    parser.add_argument("--workers", type=int, default=1, help="the bastion's worker processes (`workers`)")
    parser.add_argument("--quiet", type=float, default=10, help="seconds the idle CPU is measured over")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-load-") as tmp:
        sandbox, jump, paths = world(Path(tmp), getpass.getuser(), args.workers)
        try:
            asyncio.run(run(args, paths))
        except BaseException:
            # what the bastion said about it is gone with the folder: its last events go with the error
            log = Path(tmp) / "bastion.log"
            if log.exists():
                print("the bastion's last events:\n" + "".join(log.read_text().splitlines(True)[-15:]),
                      file=sys.stderr)
            raise
        finally:
            sandbox.stop()
            jump.stop()

if __name__ == "__main__":
    main()
