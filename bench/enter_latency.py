"""Added latency of an allowed Enter: keystroke to command output, screening on vs off.

Drives the real ssh client in a pseudo-terminal through two bastions started side by side
(one with a rules file, one without) and reports the median time from pressing Enter on
`echo N` to seeing N printed, plus the same for a single keystroke's echo.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pty
import select
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bastion.demo.command import DEMO_RULES as RULES
from bastion.demo.sandbox import Sandbox

_unread = {"buf": b""}  # what a read brought after the needle: the next wait starts there


def read_until(fd: int, needle: bytes, timeout: float = 10) -> float:
    buf, deadline = _unread["buf"], time.monotonic() + timeout
    while needle not in buf:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"{needle!r} not in {buf[-300:]!r}")
        buf += os.read(fd, 65536)
    _unread["buf"] = buf[buf.index(needle) + len(needle):]
    return time.perf_counter()


def measure(cmd: list[str], runs: int) -> tuple[float, float]:
    _unread["buf"] = b""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    try:
        read_until(fd, b"# " if os.geteuid() == 0 else b"$ ")  # the login shell's first prompt
        os.write(fd, b"PS1='be''nch> '\r")
        read_until(fd, b"bench> ")
        enter, key = [], []
        for i in range(runs):
            os.write(fd, f"echo {1000 + i}".encode())
            read_until(fd, f"echo {1000 + i}".encode())
            start = time.perf_counter()
            os.write(fd, b"\r")
            enter.append(read_until(fd, f"{1000 + i}\r\n".encode()) - start)
            read_until(fd, b"bench> ")
            start = time.perf_counter()
            os.write(fd, b"x")
            key.append(read_until(fd, b"x") - start)
            os.write(fd, b"\x7f")
            read_until(fd, b"\x08")
        os.write(fd, b"exit\r")
        return statistics.median(enter), statistics.median(key)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    login = getpass.getuser()
    with tempfile.TemporaryDirectory(prefix="bastion-enter-") as tmp:
        (Path(tmp) / "rules.toml").write_text(RULES)
        screened = Sandbox(Path(tmp), extra={"rules_file": "rules.toml"})
        key = screened.add_user("alice", ["ops"])
        screened.add_target("db-1", logins=[login], groups=["ops"])
        plain = Sandbox(Path(tmp) / "plain", users=screened.users, targets=screened.targets,
                        extra={"keys_dir": str(Path(tmp) / "hostkeys")})
        shutil.copy(key, plain.key_path("alice"))
        boxes = {"screening on": screened, "screening off": plain}
        try:
            results = {}
            for name, box in boxes.items():
                config = box.write_ssh_config("alice")
                box.start_bastion()
                command = ["ssh", "-tt", "-F", str(config), "-J", "bastion", f"{login}@db-1"]
                results[name] = measure(command, args.runs)
        finally:
            for box in boxes.values():
                box.stop()
    (on_enter, on_key), (off_enter, off_key) = results["screening on"], results["screening off"]
    print(f"median over {args.runs} lines, same run:")
    print(f"  Enter -> output:   screening on {on_enter * 1000:6.2f} ms   off {off_enter * 1000:6.2f} ms   "
          f"added {1000 * (on_enter - off_enter):+.2f} ms")
    print(f"  keystroke -> echo: screening on {on_key * 1000:6.2f} ms   off {off_key * 1000:6.2f} ms   "
          f"added {1000 * (on_key - off_key):+.2f} ms")


if __name__ == "__main__":
    main()
