"""CPU time of a benchmark and everything it starts, apart from other work on the machine.

On a shared machine the whole machine's CPU time (/proc/stat) counts whatever else runs. A
control group of the benchmark's own counts only its processes and their descendants: the
clients, the jump hosts (every process they fork, recorders included) and the targets, exited
ones included. Linux's cgroup v2 hierarchy (`cpu.stat`), else v1's `cpuacct`; without either
(no permission, no cgroup file system) the clock falls back to the whole machine, and says so.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _mounts() -> list[tuple[str, Path, str]]:
    """(type, mount point, options) of the cgroup file systems."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[2], Path(fields[1]), fields[3]))
    return found


def _own_path(hierarchy: str) -> str:
    """This process's cgroup in one hierarchy of /proc/self/cgroup ("0" for v2, else a
    controller name)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if (hierarchy == "0" and number == "0") or hierarchy in controllers.split(","):
            return path
    raise LookupError(hierarchy)


class CPUClock:
    """`seconds()`: CPU time used so far by this process's group (or the whole machine)."""

    def __init__(self, name: str = f"bastion-bench-{os.getpid()}") -> None:
        self.scope = "the whole machine"
        self._group: Path | None = None
        self._parent: Path | None = None
        self._v2 = False
        for kind, mount, options in _mounts():
            try:
                if kind == "cgroup2":
                    parent = mount / _own_path("0").lstrip("/")
                elif "cpuacct" in options.split(","):
                    parent = mount / _own_path("cpuacct").lstrip("/")
                else:
                    continue
                group = parent / name
                group.mkdir(exist_ok=True)
                (group / "cgroup.procs").write_text(str(os.getpid()))
            except (OSError, LookupError):
                continue
            self._group, self._parent, self._v2 = group, parent, kind == "cgroup2"
            self.scope = "this benchmark's processes (clients, jump hosts, targets)"
            break

    def seconds(self) -> float:
        if self._group is None:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        if self._v2:
            for line in (self._group / "cpu.stat").read_text().splitlines():
                key, value = line.split()
                if key == "usage_usec":
                    return int(value) / 1e6
            raise RuntimeError(f"no usage_usec in {self._group / 'cpu.stat'}")
        return int((self._group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        """Leave the group (this process; its children are done) and remove it."""
        if self._group is None or self._parent is None:
            return
        with contextlib.suppress(OSError):
            (self._parent / "cgroup.procs").write_text(str(os.getpid()))
            self._group.rmdir()
        self._group = None

    def __enter__(self) -> CPUClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
