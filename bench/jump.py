"""Bulk throughput and setup time: the bastion vs OpenSSH's own jump host, same run.

A second bastion with recording off, sharing the first one's keys, shows what recording costs.
"""

from __future__ import annotations

import argparse
import getpass
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cpuclock import CPUClock

from bastion.demo.command import DEMO_RULES
from bastion.demo.openssh import OpenSSHServer
from bastion.demo.sandbox import Sandbox

LOG_LINE = "2026-11-28T14:00:00.123Z INFO api request handled path=/v1/items/42 status=200 ms=12"


PAYLOADS = {
    "text": f"yes '{LOG_LINE}' | head -c {{size}}",
    "random": "head -c {size} /dev/urandom",
    "zeros": "head -c {size} /dev/zero",
}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def builders(root: Path) -> list[int]:
    """The player's keyframe builds under way for recordings under `root` (a bastion starts one,
    niced, after each long recorded session)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"player.keyframes" in args and any(str(root).encode() in arg for arg in args):
            found.append(int(cmdline.parent.name))
    return found


def settle(root: Path, quiet: float = 1.0, timeout: float = 300) -> None:
    """Wait until no keyframe build has run for `quiet` seconds: the work a session leaves
    behind is counted with that session, not with the next path's."""
    deadline = time.monotonic() + timeout
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        if builders(root):
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
        time.sleep(0.05)


def largest_recording(root: Path) -> int:
    """The size of the biggest recording under `root`: one bulk session's."""
    return max((path.stat().st_size for path in root.rglob("*.cast")), default=0)


def openssh_jump_config(sandbox: Sandbox, jump: OpenSSHServer, login: str) -> Path:
    target = sandbox.servers["db-1"]
    known = sandbox.directory / "known_hosts_openssh"
    known.write_text(
        f"[127.0.0.1]:{jump.port} {jump.host_public_key()}\n"
        f"db-1-direct {target.host_public_key()}\n"
    )
    config = sandbox.directory / "ssh_config-openssh"
    config.write_text(f"""\
Host ojump
    HostName 127.0.0.1
    Port {jump.port}
    User {login}
Host db-1-direct
    HostName 127.0.0.1
    Port {target.port}
    HostKeyAlias db-1-direct
Host *
    IdentityFile {sandbox.key_path('alice')}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
""")
    return config


def with_ciphers(config: Path, ciphers: str | None) -> None:
    """The client's cipher choice, for every hop (the configs end inside `Host *`)."""
    if ciphers:
        config.write_text(config.read_text() + f"    Ciphers {ciphers}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=500, help="bulk transfer size in MB")
    parser.add_argument("--runs", type=int, default=15, help="setup-time samples per path")
    parser.add_argument("--repeat", type=int, default=2, help="bulk samples per path (best kept)")
    parser.add_argument("--recordings-dir", help="where the recorded bastion writes (default: its temp dir)")
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="text",
                        help="what the target sends: log lines, random bytes (a compressed archive), zeros")
    parser.add_argument("--rules", action="store_true", help="the bastions screen commands (demo rules)")
    parser.add_argument("--ciphers", help="the ssh client's Ciphers on every hop it makes, both paths "
                        "(e.g. aes128-gcm@openssh.com; default: OpenSSH's own order, chacha20 first)")
    parser.add_argument("--upstream-ciphers", help="the bastions' [algorithms] upstream_ciphers, comma-"
                        "separated (the hop where the bastion is the client; default: the config's)")
    args = parser.parse_args()
    login = getpass.getuser()

    clock = CPUClock()  # before any process starts, so that every one is counted
    with clock, tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        extra: dict[str, object] = {"recordings_dir": args.recordings_dir} if args.recordings_dir else {}
        if args.rules:
            (Path(tmp) / "rules.toml").write_text(DEMO_RULES)
            extra["rules_file"] = str(Path(tmp) / "rules.toml")
        if args.upstream_ciphers:
            extra["algorithms"] = {"upstream_ciphers": args.upstream_ciphers.split(",")}
        sandbox = Sandbox(Path(tmp), extra=extra)
        alice_key = sandbox.add_user("alice", ["ops"])
        alice_pub = alice_key.with_name(alice_key.name + ".pub").read_text()
        sandbox.add_target("db-1", logins=[login], groups=["ops"], authorized_keys=alice_pub)
        jump = OpenSSHServer(Path(tmp) / "openssh-jump", authorized_keys=alice_pub,
                             extra_config=["AllowTcpForwarding yes"]).start()
        bastion_cfg = sandbox.write_ssh_config("alice")
        openssh_cfg = openssh_jump_config(sandbox, jump, login)
        for cfg in (bastion_cfg, openssh_cfg):
            with_ciphers(cfg, args.ciphers)
        sandbox.start_bastion()
        variants = {
            "unrecorded": {"recording": {"enabled": False}, "masking": {"enabled": False}},
            "unmasked": {"masking": {"enabled": False}},
        }
        extra_boxes = []
        paths = {
            "openssh": ["ssh", "-F", str(openssh_cfg), "-J", "ojump", f"{login}@db-1-direct"],
            "bastion": ["ssh", "-F", str(bastion_cfg), "-J", "bastion", f"{login}@db-1"],
        }
        for name, settings in variants.items():
            box = Sandbox(Path(tmp) / name, users=sandbox.users, targets=sandbox.targets,
                          extra={"keys_dir": str(Path(tmp) / "hostkeys"), **settings, **extra})
            shutil.copy(alice_key, box.key_path("alice"))
            box_cfg = box.write_ssh_config("alice")
            with_ciphers(box_cfg, args.ciphers)
            box.start_bastion()
            extra_boxes.append(box)
            paths[name] = ["ssh", "-F", str(box_cfg), "-J", "bastion", f"{login}@db-1"]
        try:
            results: dict[str, dict[str, float]] = {name: {} for name in paths}
            size = args.mb * 1_000_000
            for cmd in paths.values():
                timed([*cmd, "true"])  # warm up
            for _ in range(args.repeat):
                for name, cmd in paths.items():
                    cpu = clock.seconds()
                    seconds = timed([*cmd, PAYLOADS[args.payload].format(size=size)])
                    session = clock.seconds() - cpu
                    settle(Path(tmp))
                    after = clock.seconds() - cpu - session
                    results[name]["bulk"] = max(results[name].get("bulk", 0), size / seconds / 1e6)
                    if session + after < results[name].get("cpu", 1e9) * args.mb / 100:
                        results[name]["cpu"] = (session + after) / args.mb * 100
                        results[name]["after"] = after / args.mb * 100
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.runs):
                for name, cmd in paths.items():
                    samples[name].append(timed([*cmd, "true"]))
            for name in paths:
                results[name]["setup"] = statistics.median(samples[name])
            recorded = largest_recording(Path(args.recordings_dir) if args.recordings_dir
                                         else sandbox.directory / "recordings")
        finally:
            for box in extra_boxes:
                box.stop()
            sandbox.stop()
            jump.stop()

    o, b, u, m = results["openssh"], results["bastion"], results["unrecorded"], results["unmasked"]
    print(f"bulk MB/s ({args.mb} MB of {args.payload}, best of {args.repeat}"
          f"{', screening on' if args.rules else ''}; client ciphers {args.ciphers or 'default'}, "
          f"upstream ciphers {args.upstream_ciphers or 'default'}):")
    print(f"  openssh jump {o['bulk']:7.1f}")
    print(f"  bastion, recording and masking   {b['bulk']:7.1f}  ratio {b['bulk'] / o['bulk']:.2f}x")
    print(f"  bastion, recording, no masking   {m['bulk']:7.1f}  ratio {m['bulk'] / o['bulk']:.2f}x")
    print(f"  bastion, neither                 {u['bulk']:7.1f}  ratio {u['bulk'] / o['bulk']:.2f}x")
    print(f"  recording costs {100 * (1 - m['bulk'] / u['bulk']):.1f}%, masking costs "
          f"{100 * (1 - b['bulk'] / m['bulk']):.1f}% of bulk throughput")
    print(f"  recording of one bulk session: {recorded} bytes ({recorded / size:.4f} of the stream)")
    print(f"CPU seconds per 100 MB, {clock.scope}; after the session, the player's keyframes built:")
    print(f"  openssh jump {o['cpu']:5.2f}   bastion: both {b['cpu']:5.2f} ({b['after']:.2f} after, "
          f"ratio {b['cpu'] / o['cpu']:.2f}x), recording only {m['cpu']:5.2f} ({m['after']:.2f} after), "
          f"neither {u['cpu']:5.2f}")
    print(f"setup ms (median of {args.runs}):")
    print(f"  openssh jump {o['setup'] * 1000:7.0f}   bastion {b['setup'] * 1000:7.0f} "
          f"(ratio {b['setup'] / o['setup']:.2f}x)   unrecorded {u['setup'] * 1000:7.0f}")


if __name__ == "__main__":
    main()
