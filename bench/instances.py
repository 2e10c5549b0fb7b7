"""Several instances on one PostgreSQL database, behind HAProxy: what sharing the state costs
and how fast what one instance decides reaches another.

Run from the repository root (as the tests do: PostgreSQL from Debian's package, run as an
unprivileged account when this runs as root; HAProxy in TCP mode):

    .venv/bin/python -m bench.instances [--runs 20]

It prints, each over --runs samples unless said:
- approval release latency: a command held on instance A, the decision written by another
  process (as `bastion approvals approve` on B does); time from the decision's commit to the
  command's output reaching the client. PostgreSQL (NOTIFY) and, for comparison, SQLite
  (one instance; the hold polls);
- revocation reach: a session on A, `users revoke` from another process; time until the
  client's ssh exits (5 samples);
- failover: kill -9 A, then a new `ssh -J` through HAProxy: its duration, against the same
  command's duration before the kill (the ratio is the cost of meeting a dead instance);
- session setup: `ssh -J bastion db-1 true`, one instance on SQLite against one on PostgreSQL,
  same machine, same run.
"""

from __future__ import annotations

import argparse
import select
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bastion.auth.directory import Directory
from bastion.core.masker import TextMasker
from bastion.state.approvals import ApprovalStore, Decision
from tests.support.cluster import RULES, Cluster, Instance
from tests.support.lab import LOGIN
from tests.support.postgres import PostgresServer
from tests.support.sessions import rules_sandbox, start_ssh

RULES_NEED = "needs-approval"


def wait_request(instances: list[Instance], seen: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for instance in instances:
            for event in instance.events("approval_requested"):
                if event["request"] not in seen:
                    seen.add(str(event["request"]))
                    return str(event["request"])
        time.sleep(0.01)
    raise RuntimeError("no approval request")


def read_line(proc: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """Block until the first line of output; when it arrived (perf_counter)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("no output")
    proc.stdout.readline()
    return time.perf_counter()


def release_latency(store: ApprovalStore, start: callable,  # type: ignore[valid-type]
                    instances: list[Instance], runs: int) -> tuple[list[float], list[float]]:
    """(decision committed -> the holder logs approval_approved, -> the output at the client)."""
    seen: set[str] = set()
    released, output = [], []
    for _ in range(runs):
        proc = start(f"echo {RULES_NEED}-released")
        request = wait_request(instances, seen)
        store.decide(request, "bob", Decision.APPROVE)
        committed, committed_wall = time.perf_counter(), time.time()
        arrived = read_line(proc)
        proc.communicate(timeout=30)
        output.append(arrived - committed)
        logged = [e["ts"] for i in instances for e in i.events("approval_approved")
                  if e["request"] == request]
        released.append(max(0.0, float(logged[0]) - committed_wall))
    return released, output


def sqlite_release(directory: Path, runs: int) -> list[float]:
    directory.mkdir(parents=True)
    box = rules_sandbox(directory, RULES, {"alice": ["ops"], "bob": ["dba"]})
    try:
        store = ApprovalStore(box.directory / "bastion.db", masker=TextMasker())
        seen: set[str] = set()
        samples = []
        for _ in range(runs):
            proc = start_ssh(box, f"echo {RULES_NEED}-released")
            deadline = time.monotonic() + 30
            request = None
            while request is None and time.monotonic() < deadline:
                request = next((str(e["request"]) for e in box.events()
                                if e["event"] == "approval_requested" and e["request"] not in seen), None)
                time.sleep(0.01)
            assert request is not None
            seen.add(request)
            store.decide(request, "bob", Decision.APPROVE)
            committed = time.perf_counter()
            samples.append(read_line(proc) - committed)
            proc.communicate(timeout=30)
        return samples
    finally:
        box.stop()


def setup_times(argv_for: callable, runs: int) -> list[float]:  # type: ignore[valid-type]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv_for("true"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=60)
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> str:
    return (f"median {statistics.median(samples) * 1000:.0f} ms, worst {max(samples) * 1000:.0f} ms"
            f" (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    postgres = PostgresServer()
    work = Path(tempfile.mkdtemp(prefix="bench-instances-"))
    cluster: Cluster | None = None
    try:
        postgres.start()
        cluster = Cluster(work / "cluster", postgres.new_database("bench"), lease="5s")
        cluster.start()
        a, b = cluster.instances
        store = ApprovalStore(cluster.state_url, masker=TextMasker())

        released, output = release_latency(store, lambda command: cluster.ssh(command, port=a.port),
                                           cluster.instances, args.runs)
        print("approval release across instances (PostgreSQL, NOTIFY):"
              f" decision to release {summary(released)};"
              f" to the command's output at the client {summary(output)}")
        on_sqlite = sqlite_release(work / "sqlite-release", args.runs)
        print(f"approval release, one instance on SQLite (polling):   {summary(on_sqlite)}")

        directory = Directory(cluster.state_url)
        reach = []
        for _ in range(5):
            proc = cluster.ssh("echo started; sleep 300", port=a.port, user="carol")
            read_line(proc)
            directory.revoke("carol", "bench")
            revoked = time.perf_counter()
            proc.communicate(timeout=30)
            reach.append(time.perf_counter() - revoked)
            directory.restore("carol")
        print(f"revocation reach (revoked by another process, session on A): {summary(reach)}")

        (work / "sqlite-setup").mkdir()
        sqlite_box = rules_sandbox(work / "sqlite-setup", RULES, {"alice": ["ops"]})
        try:
            pg_direct = setup_times(lambda command: cluster.ssh_argv(command, port=b.port), args.runs)
            sqlite_config = str(sqlite_box.directory / "ssh_config-alice")
            sqlite_direct = setup_times(
                lambda command: ["ssh", "-F", sqlite_config, "-J", "bastion", f"{LOGIN}@db-1", command],
                args.runs)
        finally:
            sqlite_box.stop()
        pg_median, sqlite_median = statistics.median(pg_direct), statistics.median(sqlite_direct)
        print(f"session setup, state on PostgreSQL: {summary(pg_direct)}")
        print(f"session setup, state on SQLite:     {summary(sqlite_direct)}")
        print(f"  PostgreSQL / SQLite: {pg_median / sqlite_median:.2f}x")

        before = setup_times(cluster.ssh_argv, 5)
        held = cluster.ssh(f"echo {RULES_NEED}-never", port=a.port)
        pending = wait_request(cluster.instances, {e["request"] for i in cluster.instances
                                                   for e in i.events("approval_requested")})
        a.kill()
        killed = time.perf_counter()
        subprocess.run(cluster.ssh_argv("true"), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=60)
        first = time.perf_counter() - killed
        after = setup_times(cluster.ssh_argv, 5)
        print(f"failover: first new ssh -J through HAProxy after kill -9 of A took {first * 1000:.0f} ms"
              f" (before the kill: median {statistics.median(before) * 1000:.0f} ms; after: median"
              f" {statistics.median(after) * 1000:.0f} ms)")
        held.communicate(timeout=30)
        while store.state(pending)[0] != "cancelled" and time.perf_counter() - killed < 60:
            time.sleep(0.05)
        print(f"  A's pending approval {store.state(pending)[0]} by the survivor"
              f" {time.perf_counter() - killed:.1f} s after the kill (lease 5 s, renewed every 1.7 s)")
    finally:
        if cluster is not None:
            cluster.stop()
        postgres.close()


if __name__ == "__main__":
    main()
