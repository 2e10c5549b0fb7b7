# ruff: noqa: E501 - the case tables read best one case a line
"""A protocol fuzzer for the bastion: raw clients that complete key exchange (paramiko's
transport) and then send malformed, truncated, oversized and out-of-order messages, on the
bastion's own connection and on the inner connection inside a jump, for a bounded time.

Afterwards the bastion must still run, must not have logged a traceback, must hold no more file
descriptors than before (once the fuzzing connections are gone) and not have grown its memory
without bound, and a probe session (the real OpenSSH client through the bastion) must work
throughout. Prints the cases run, and what was found.

    .venv/bin/python bench/fuzz.py [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import random
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import paramiko
from paramiko.message import Message

from bastion.demo.sandbox import Sandbox

# SSH message numbers (RFC 4250)
DISCONNECT, IGNORE, UNIMPLEMENTED, DEBUG, SERVICE_REQUEST = 1, 2, 3, 4, 5
KEXINIT, NEWKEYS = 20, 21
USERAUTH_REQUEST = 50
GLOBAL_REQUEST = 80
CHANNEL_OPEN, CHANNEL_OPEN_CONFIRMATION, CHANNEL_WINDOW_ADJUST, CHANNEL_DATA = 90, 91, 93, 94
CHANNEL_EXTENDED_DATA, CHANNEL_EOF, CHANNEL_CLOSE, CHANNEL_REQUEST = 95, 96, 97, 98

Case = Callable[[random.Random], Message]


def msg(kind: int, *parts: bytes | int | str | bool) -> Message:
    m = Message()
    m.add_byte(bytes([kind]))
    for part in parts:
        if isinstance(part, bool):
            m.add_boolean(part)
        elif isinstance(part, int):
            m.add_int(part & 0xFFFFFFFF)
        elif isinstance(part, str):
            m.add_string(part.encode("utf-8", "surrogatepass"))
        else:
            m.add_string(part)
    return m


def raw(kind: int, payload: bytes) -> Message:
    m = Message()
    m.add_byte(bytes([kind]))
    m.add_bytes(payload)
    return m


def junk(rnd: random.Random, most: int = 64) -> bytes:
    return rnd.randbytes(rnd.randint(0, most))


def channel_number(rnd: random.Random) -> int:
    return rnd.choice([0, 1, 2, 0xFFFFFFFF, rnd.getrandbits(32)])


CASES: dict[str, Case] = {
    # malformed or truncated
    "truncated channel open": lambda r: raw(CHANNEL_OPEN, struct.pack(">I", 7) + b"sess"),
    "channel open, junk": lambda r: raw(CHANNEL_OPEN, junk(r)),
    "channel request, junk": lambda r: raw(CHANNEL_REQUEST, junk(r)),
    "window adjust, truncated": lambda r: raw(CHANNEL_WINDOW_ADJUST, b"\0\0"),
    "global request, junk": lambda r: raw(GLOBAL_REQUEST, junk(r)),
    "unknown message type": lambda r: raw(r.choice([0, 7, 19, 29, 49, 70, 127, 192, 255]), junk(r, 16)),
    "string length past the end": lambda r: raw(CHANNEL_OPEN, struct.pack(">I", 0xFFFFFF00) + b"session"),
    # oversized
    "window adjust to 2**32-1": lambda r: msg(CHANNEL_WINDOW_ADJUST, channel_number(r), 0xFFFFFFFF),
    "huge channel open window": lambda r: msg(CHANNEL_OPEN, "session", r.getrandbits(32), 0xFFFFFFFF, 0xFFFFFFFF),
    "direct-tcpip to a huge name": lambda r: msg(CHANNEL_OPEN, "direct-tcpip", r.getrandbits(16), 65536, 32768,
                                                "d" * 60000, 22, "127.0.0.1", 1),
    "global request, 100 KB name": lambda r: msg(GLOBAL_REQUEST, "x" * 100_000, True),
    "ignore, 200 KB": lambda r: msg(IGNORE, b"\0" * 200_000),
    "debug, 30 KB": lambda r: msg(DEBUG, True, "d" * 30_000, "en"),
    # out of order
    "data on a channel never opened": lambda r: msg(CHANNEL_DATA, channel_number(r), junk(r)),
    "extended data on a channel never opened": lambda r: msg(CHANNEL_EXTENDED_DATA, channel_number(r), 1, junk(r)),
    "eof and close of a channel never opened": lambda r: msg(r.choice([CHANNEL_EOF, CHANNEL_CLOSE]),
                                                             channel_number(r)),
    "open confirmation nobody asked for": lambda r: msg(CHANNEL_OPEN_CONFIRMATION, channel_number(r),
                                                        channel_number(r), 65536, 32768),
    "user auth after sign-in": lambda r: msg(USERAUTH_REQUEST, "alice", "ssh-connection", "none"),
    "service request after sign-in": lambda r: msg(SERVICE_REQUEST, "ssh-userauth"),
    "newkeys out of turn": lambda r: msg(NEWKEYS),
    "unimplemented for a packet never sent": lambda r: msg(UNIMPLEMENTED, r.getrandbits(32)),
}

# Requests on a session channel the fuzzer opened itself (the inner connection's).
SESSION_CASES: dict[str, Callable[[random.Random, int], Message]] = {
    "pty-req with absurd sizes": lambda r, c: msg(CHANNEL_REQUEST, c, "pty-req", True, "xterm" * r.randint(1, 2000),
                                                  0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, junk(r, 300)),
    "window-change with absurd sizes": lambda r, c: msg(CHANNEL_REQUEST, c, "window-change", False,
                                                        0xFFFFFFFF, 0, 0xFFFFFFFF, 0),
    "env flood": lambda r, c: msg(CHANNEL_REQUEST, c, "env", False, f"LC_{r.getrandbits(32)}", "v" * 2000),
    "exec of a 200 KB command": lambda r, c: msg(CHANNEL_REQUEST, c, "exec", True, "echo " + "a" * 200_000),
    "exec with NUL and invalid UTF-8": lambda r, c: msg(CHANNEL_REQUEST, c, "exec", True,
                                                        b"echo \x00\xff\xfe" + junk(r, 20)),
    "subsystem with an odd name": lambda r, c: msg(CHANNEL_REQUEST, c, "subsystem", True,
                                                   r.choice(["", "sftp\0", "../../bin/sh", "x" * 5000, "sftp "])),
    "unknown channel request": lambda r, c: msg(CHANNEL_REQUEST, c, junk(r, 30), True, junk(r)),
    "signal with a junk name": lambda r, c: msg(CHANNEL_REQUEST, c, "signal", False, junk(r, 40)),
    "x11 and agent forwarding": lambda r, c: msg(CHANNEL_REQUEST, c, r.choice(["x11-req", "auth-agent-req@openssh.com"]),
                                                 True, False, "MIT-MAGIC-COOKIE-1", "00", 0),
    "two execs on one channel": lambda r, c: msg(CHANNEL_REQUEST, c, "exec", True, "true"),
    "window adjust overflow": lambda r, c: msg(CHANNEL_WINDOW_ADJUST, c, 0xFFFFFFFF),
    "data past the window": lambda r, c: msg(CHANNEL_DATA, c, b"x" * 40000),
}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def send(transport: paramiko.Transport, message: Message) -> None:
    transport._send_message(message)  # the raw message, however wrong


class Fuzzer:
    def __init__(self, box: Sandbox, login: str, key: paramiko.PKey) -> None:
        self.box, self.login, self.key = box, login, key
        self.cases: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # cases after which the bastion closed the connection

    def outer(self) -> paramiko.Transport:
        transport = paramiko.Transport(("127.0.0.1", self.box.port))
        transport.start_client(timeout=20)
        transport.auth_publickey("alice", self.key)
        return transport

    def inner(self, outer: paramiko.Transport) -> paramiko.Transport:
        channel = outer.open_channel("direct-tcpip", ("db-1", 22), ("127.0.0.1", 0), timeout=20)
        transport = paramiko.Transport(channel)
        transport.start_client(timeout=20)
        transport.auth_none(self.login)
        return transport

    def round(self, rnd: random.Random) -> None:
        outer = self.outer()
        try:
            inner = self.inner(outer)
            for _ in range(rnd.randint(1, 6)):
                if rnd.random() < 0.5:
                    name = rnd.choice(list(SESSION_CASES))
                    channel = inner.open_session(timeout=20)
                    send(inner, SESSION_CASES[name](rnd, channel.remote_chanid))
                else:
                    name = rnd.choice(list(CASES))
                    target = rnd.choice([outer, inner])
                    send(target, CASES[name](rnd))
                self.cases[name] += 1
                time.sleep(0.01)
                if not outer.is_active() or not inner.is_active():
                    self.dropped[name] += 1
                    break
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the bastion may end a connection it finds wrong: that is the point
        finally:
            outer.close()


def probe(ssh_config: Path, login: str) -> bool:
    result = subprocess.run(["ssh", "-F", str(ssh_config), "-J", "bastion", f"{login}@db-1", "echo probe-ok"],
                            capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    return result.stdout == b"probe-ok\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its notes on the bastion's refusals
    login = getpass.getuser()
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bastion-fuzz-") as tmp:
        box = Sandbox(Path(tmp))
        key_path = box.add_user("alice", ["ops"])
        box.add_target("db-1", logins=[login], groups=["ops"])
        ssh_config = box.write_ssh_config("alice")
        process = box.start_bastion()
        try:
            assert probe(ssh_config, login), "the probe failed before fuzzing"
            fds_before, rss_before = open_fds(process.pid), rss_kb(process.pid)
            fuzzer = Fuzzer(box, login, paramiko.Ed25519Key.from_private_key_file(str(key_path)))
            rounds, probes, failed_probes = 0, 0, 0
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline and process.poll() is None:
                fuzzer.round(rnd)
                rounds += 1
                if rounds % 20 == 0:
                    probes += 1
                    failed_probes += not probe(ssh_config, login)
            alive = process.poll() is None
            # The fuzzing connections are closed; give the bastion a moment to see them go.
            settle = time.monotonic() + 15
            while alive and open_fds(process.pid) > fds_before and time.monotonic() < settle:
                time.sleep(0.2)
            fds_after = open_fds(process.pid) if alive else -1
            rss_after = rss_kb(process.pid) if alive else -1
            final_probe = alive and probe(ssh_config, login)
        finally:
            box.stop()
        stderr = (Path(tmp) / "bastion.stderr").read_text(errors="replace")
        tracebacks = stderr.count("Traceback")
        log = (Path(tmp) / "bastion.log").read_text(errors="replace")
    total = sum(fuzzer.cases.values())
    print(f"{total} cases in {rounds} connections over {args.seconds:.0f} s (seed {args.seed}):")
    for name, count in sorted(fuzzer.cases.items()):
        dropped = fuzzer.dropped.get(name, 0)
        print(f"  {count:5d}  {name}" + (f"  (connection ended after {dropped})" if dropped else ""))
    print(f"bastion alive: {alive}; tracebacks on stderr: {tracebacks}; "
          f"'Traceback' in the audit log: {log.count('Traceback')}")
    print(f"file descriptors: {fds_before} before, {fds_after} after")
    print(f"RSS: {rss_before} KB before, {rss_after} KB after ({(rss_after - rss_before) / 1024:+.1f} MB)")
    print(f"probe sessions during fuzzing: {probes - failed_probes}/{probes} worked; final probe: {final_probe}")
    if tracebacks:
        print("first traceback:")
        start = stderr.index("Traceback")
        print(stderr[start:start + 3000])


if __name__ == "__main__":
    main()
