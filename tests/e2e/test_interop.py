"""The interoperability matrix: each client through the bastion as its users use it, with the
bastion's default algorithms. Each row runs an exec (output, stderr, exit status), a shell where
the client has one and a file transfer where it has one, and checks what the bastion recorded
and what screening saw (an allowed command decided, a denied one never run).

docs/compatibility.md holds the table of these rows; `test_the_compatibility_table_lists_every_row`
keeps it and this module in step."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.demo.sandbox import Sandbox
from bastion.state.keys import public_line
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.sessions import unique

pytestmark = pytest.mark.e2e

RULES = """
[defaults]
action = "allow"

[[rule]]
name = "no-forbidden"
action = "deny"
message = "nothing forbidden here"
command = "forbidden"
"""
Run = Callable[[str], tuple[bytes, bytes, int]]
# The rows of docs/compatibility.md, by the name its first column gives.
ROWS = ("OpenSSH -J", "OpenSSH ProxyJump", "OpenSSH ProxyCommand", "OpenSSH ControlMaster",
        "scp", "sftp", "rsync", "git", "PuTTY plink", "PuTTY pscp", "Dropbear dbclient",
        "paramiko", "asyncssh", "Ansible")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    box: Sandbox
    config: Path  # alice's OpenSSH client config
    key: Path  # alice's private key (OpenSSH format)

    @property
    def directory(self) -> Path:
        return self.box.directory

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.box.events() if e["event"] == name]

    def settled(self) -> int:
        """Once every session started so far has ended (a shell whose client was just closed
        ends a moment later): the count of session_ended lines, after which the ones logged
        are the caller's."""
        def open_sessions() -> list[dict[str, Any]]:
            ended = {e["session"] for e in self.events("session_ended")}
            return [e for e in self.events("session_started") if e["session"] not in ended]

        eventually(lambda: not open_sessions() or None, f"earlier sessions ended: {open_sessions()}")
        return len(self.events("session_ended"))

    def ssh(self, *args: str, input: bytes | None = None, config: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ssh", "-F", str(config or self.config), *args], input=input,
                              capture_output=True, timeout=90, check=False,
                              env={**os.environ, **(env or {})},
                              stdin=None if input is not None else subprocess.DEVNULL)

    def openssh_config(self, name: str, block: str) -> Path:
        """alice's config with `block` (a Host db-1 section) first."""
        path = self.directory / f"ssh_config-{name}"
        path.write_text(block + "\n" + self.config.read_text())
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need("ssh", "sshd", "scp", "sftp")
    directory = tmp_path_factory.mktemp("interop")
    (directory / "rules.toml").write_text(RULES)
    # Ansible names its remote temp folder ansible-tmp-TIME-PID-RANDOM; about 1 in 16 of those
    # random numbers reads as a card number, is masked in the output Ansible parses, and its
    # next step fails (docs/compatibility.md). The matrix runs without that one detector.
    box = Sandbox(directory, extra={"rules_file": "rules.toml", "masking": {"disable": ["card-number"]}})
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.write_ssh_config("alice")
    box.start_bastion()
    try:
        yield World(box, box.directory / "ssh_config-alice", box.key_path("alice"))
    finally:
        box.stop()


def tag(client: str) -> str:
    return f"{re.sub(r'[^a-z0-9]+', '-', client.lower())}-{uuid.uuid4().hex[:6]}"


def check_exec(world: World, client: str, run: Run) -> None:
    """Output, stderr and exit status come back; the bastion recorded the session, screening
    decided the command; a denied command never runs and says why."""
    name = tag(client)
    command = f"echo out-{name}; echo err-{name} >&2; exit 3"
    out, err, status = run(command)
    assert out == f"out-{name}\n".encode(), (out, err)
    assert f"err-{name}".encode() in err, err
    assert status == 3
    ended = eventually(lambda: [e for e in world.events("session_ended") if e.get("command") == command],
                       f"{client}: session_ended")
    assert ended[-1]["exit_status"] == 3 and ended[-1]["kind"] == "exec", ended[-1]
    cast = recording_for(world.box, lambda e: e.get("command") == command)
    assert f"out-{name}" in cast.read_text(), f"{client}: the output is not in the recording"
    decided = [e for e in world.events("command_decision") if e["command"] == command]
    assert decided and decided[-1]["action"] == "allow", decided
    path = unique(f"forbidden-{name}")
    out, err, status = run(f"touch {path}")
    assert status != 0 and not path.exists(), (client, out, err, status)
    assert b"nothing forbidden here" in out + err, (out, err)
    denied = [e for e in world.events("command_decision") if e["command"] == f"touch {path}"]
    assert denied and denied[-1]["action"] == "deny" and denied[-1]["rule"] == "no-forbidden"


def check_shell(world: World, client: str, output: bytes) -> None:
    """The shell ran `echo shell-$((6*7))` (typed by the client): its output, and a recorded shell."""
    assert b"shell-42" in output, (client, output[-500:])
    recording_for(world.box, lambda e: e["kind"] == "shell" and e.get("exit_status") == 0)


def check_transfer(world: World, client: str, upload: Callable[[Path, Path], None],
                   download: Callable[[Path, Path], None] | None = None,
                   finish: Callable[[], None] | None = None, settle: bool = True) -> list[dict[str, Any]]:
    """A file up to the target and back, byte for byte; returns the sessions the bastion logged
    for it (`finish` ends a client's sftp session that outlives the transfers; a caller that
    opened one already waited for `settled` itself)."""
    before = world.settled() if settle else len(world.events("session_ended"))
    payload = os.urandom(200_000) + b"\n" + b"text tail\n"
    source = world.directory / f"up-{tag(client)}"
    source.write_bytes(payload)
    remote = unique(f"transfer-{tag(client)}")
    upload(source, remote)
    assert remote.read_bytes() == payload, f"{client}: the upload differs"
    if download is not None:
        back = world.directory / f"down-{tag(client)}"
        download(remote, back)
        assert back.read_bytes() == payload, f"{client}: the download differs"
    if finish is not None:
        finish()
    return eventually(lambda: world.events("session_ended")[before:], f"{client}: transfer sessions logged")


def proc(result: subprocess.CompletedProcess[bytes]) -> tuple[bytes, bytes, int]:
    return result.stdout, result.stderr, result.returncode


PROMPT = re.compile(rb"[#$] (\x1b\[[0-9;?]*[a-zA-Z])*$")


def converse(send: Callable[[bytes], None], receive: Callable[[float], bytes]) -> bytes:
    """Type into a shell as a person does: each line once the prompt is drawn (screening
    decides typed-ahead keys only once the screen shows them, so a script piped in before the
    prompt would wait). `receive(timeout)` returns b"" at the end."""
    seen = b""

    def until(pattern: re.Pattern[bytes], what: str) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while not pattern.search(seen):
            assert time.monotonic() < deadline, f"{what}: {seen[-300:]!r}"
            chunk = receive(0.2)
            if chunk is None:
                continue
            assert chunk, f"the shell ended before {what}: {seen[-300:]!r}"
            seen += chunk

    until(PROMPT, "a prompt")
    send(b"echo shell-$((6*7))\n")
    until(re.compile(rb"shell-42\r?\n.*[#$] ", re.S), "the echo and the next prompt")
    send(b"exit 0\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = receive(0.2)
        if chunk == b"":
            break
        seen += chunk or b""
    return seen


def converse_process(args: list[str], env: dict[str, str] | None = None) -> bytes:
    """`converse` with a client process (stdin and stdout pipes)."""
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=env)
    assert process.stdin is not None and process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)

    def send(data: bytes) -> None:
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.flush()

    def receive(timeout: float) -> bytes | None:
        assert process.stdout is not None
        if not selector.select(timeout):
            return None
        return os.read(process.stdout.fileno(), 65536)

    try:
        return converse(send, receive)
    finally:
        process.kill()
        process.wait(10)

# -- OpenSSH ------------------------------------------------------------------------------------------


def test_openssh_jump(world: World) -> None:
    check_exec(world, "OpenSSH -J", lambda c: proc(world.ssh("-J", "bastion", f"{LOGIN}@db-1", c)))
    shell = converse_process(["ssh", "-F", str(world.config), "-tt", "-J", "bastion", f"{LOGIN}@db-1"])
    check_shell(world, "OpenSSH -J", shell)


def test_openssh_proxyjump_in_a_config(world: World) -> None:
    config = world.openssh_config("proxyjump", f"Host db-1\n    ProxyJump bastion\n    User {LOGIN}\n")
    check_exec(world, "OpenSSH ProxyJump", lambda c: proc(world.ssh("db-1", c, config=config)))


def test_openssh_proxycommand_with_w(world: World) -> None:
    config = world.openssh_config("proxycommand", f"Host db-1\n    User {LOGIN}\n"
                                  f"    ProxyCommand ssh -F {world.config} -W %h:%p bastion\n")
    check_exec(world, "OpenSSH ProxyCommand", lambda c: proc(world.ssh("db-1", c, config=config)))


def test_openssh_controlmaster_shares_one_jump(world: World) -> None:
    socket = Path(f"/tmp/cm-{uuid.uuid4().hex[:8]}")  # short: a socket path has a length limit
    config = world.openssh_config("controlmaster", f"Host db-1\n    ProxyJump bastion\n    User {LOGIN}\n"
                                  f"    ControlMaster auto\n    ControlPath {socket}\n    ControlPersist 60\n")
    try:
        check_exec(world, "OpenSSH ControlMaster", lambda c: proc(world.ssh("db-1", c, config=config)))
        assert world.ssh("-O", "check", "db-1", config=config).returncode == 0  # the master is up
        # Sessions over the master are channels of one inner connection: one jump, several sessions.
        sessions = {e["session"] for e in world.events("session_ended")}
        assert any("." in s for s in sessions), "no second channel on the shared connection"
    finally:
        world.ssh("-O", "exit", "db-1", config=config)


def test_scp_both_protocols(world: World) -> None:
    def scp(*args: str) -> None:
        result = subprocess.run(["scp", "-F", str(world.config), "-J", "bastion", *args],
                                capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr

    sftp_sessions = check_transfer(world, "scp", lambda s, r: scp(str(s), f"{LOGIN}@db-1:{r}"),
                                   lambda r, b: scp(f"{LOGIN}@db-1:{r}", str(b)))
    assert {e.get("subsystem") for e in sftp_sessions} == {"sftp"}, sftp_sessions  # scp over sftp (default)
    legacy = check_transfer(world, "scp -O", lambda s, r: scp("-O", str(s), f"{LOGIN}@db-1:{r}"),
                            lambda r, b: scp("-O", f"{LOGIN}@db-1:{r}", str(b)))
    assert all(e["command"].startswith("scp ") for e in legacy), legacy  # the legacy protocol: an exec


def test_sftp_batch(world: World) -> None:
    def sftp(commands: str) -> None:
        result = subprocess.run(["sftp", "-F", str(world.config), "-J", "bastion", "-b", "-", f"{LOGIN}@db-1"],
                                input=commands.encode(), capture_output=True, timeout=90, check=False)
        assert result.returncode == 0, result.stderr

    sessions = check_transfer(world, "sftp", lambda s, r: sftp(f"put {s} {r}\n"), lambda r, b: sftp(f"get {r} {b}\n"))
    assert {e.get("subsystem") for e in sessions} == {"sftp"}
    decided = [e for e in world.events("command_decision") if e.get("kind") == "sftp"]
    assert decided, "the sftp operations were not screened"


def test_rsync(world: World) -> None:
    need("rsync")
    ssh = f"ssh -F {world.config} -J bastion"

    def rsync(source: str, dest: str) -> None:
        result = subprocess.run(["rsync", "-a", "-e", ssh, source, dest], capture_output=True, timeout=90,
                                check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr

    sessions = check_transfer(world, "rsync", lambda s, r: rsync(str(s), f"{LOGIN}@db-1:{r}"),
                              lambda r, b: rsync(f"{LOGIN}@db-1:{r}", str(b)))
    assert all(e["command"].startswith("rsync --server") for e in sessions), sessions
    assert [e for e in world.events("command_decision") if str(e["command"]).startswith("rsync --server")]


def test_git_clone_and_push(world: World) -> None:
    need("git")
    bare = unique("repo.git")
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    env = {**os.environ, "GIT_SSH_COMMAND": f"ssh -F {world.config} -J bastion",
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com",
           "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.com"}
    work = world.directory / f"clone-{uuid.uuid4().hex[:6]}"

    def git(*args: str, cwd: Path | None = None) -> None:
        result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=90, check=False)
        assert result.returncode == 0, result.stderr

    git("clone", "-q", f"ssh://{LOGIN}@db-1{bare}", str(work))
    (work / "README").write_text("through the bastion\n")
    git("add", "README", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    shown = subprocess.run(["git", "--git-dir", str(bare), "show", "main:README"], capture_output=True, check=True)
    assert shown.stdout == b"through the bastion\n"
    commands = [str(e.get("command")) for e in world.events("session_ended")]
    assert any(c.startswith("git-upload-pack") for c in commands) and any(c.startswith("git-receive-pack")
                                                                          for c in commands)


# -- PuTTY ---------------------------------------------------------------------------------------------


@dataclass
class Putty:
    ppk: Path
    proxy: str
    inner_host_key: str


@pytest.fixture(scope="module")
def putty(world: World) -> Putty:
    need("plink", "pscp", "puttygen")
    ppk = world.directory / "alice.ppk"
    subprocess.run(["puttygen", str(world.key), "-O", "private", "-o", str(ppk)], check=True,
                   capture_output=True, timeout=30)
    keys = world.box.keys
    bastion_key = keys.bastion_host_key.get_fingerprint("sha256")
    proxy = (f"plink -batch -ssh -P {world.box.port} -i {ppk} -hostkey {bastion_key} "
             f"-nc %host:%port alice@127.0.0.1")
    return Putty(ppk, proxy, keys.inner_host_key.get_fingerprint("sha256"))


def plink(p: Putty, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["plink", "-batch", "-ssh", "-proxycmd", p.proxy, "-hostkey", p.inner_host_key,
                           "-l", LOGIN, *args], input=input, capture_output=True, timeout=90, check=False,
                          stdin=None if input is not None else subprocess.DEVNULL)


def test_putty_plink(world: World, putty: Putty) -> None:
    check_exec(world, "PuTTY plink", lambda c: proc(plink(putty, "db-1", c)))
    shell = converse_process(["plink", "-batch", "-ssh", "-proxycmd", putty.proxy, "-hostkey",
                              putty.inner_host_key, "-l", LOGIN, "-t", "db-1"])
    check_shell(world, "PuTTY plink", shell)


def test_putty_pscp(world: World, putty: Putty) -> None:
    def pscp(*args: str) -> None:
        result = subprocess.run(["pscp", "-batch", "-proxycmd", putty.proxy, "-hostkey", putty.inner_host_key,
                                 *args], capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr + result.stdout

    sessions = check_transfer(world, "PuTTY pscp", lambda s, r: pscp(str(s), f"{LOGIN}@db-1:{r}"),
                              lambda r, b: pscp(f"{LOGIN}@db-1:{r}", str(b)))
    assert {e.get("subsystem") for e in sessions} == {"sftp"}
    legacy = check_transfer(world, "PuTTY pscp -scp", lambda s, r: pscp("-scp", str(s), f"{LOGIN}@db-1:{r}"))
    assert all(str(e["command"]).startswith("scp ") for e in legacy), legacy


# -- Dropbear ----------------------------------------------------------------------------------------


def bare_key(key: asyncssh.SSHKey) -> str:
    return " ".join(public_line(key.convert_to_public()).split()[:2])


def test_dropbear_dbclient_multihop(world: World) -> None:
    need("dbclient", "dropbearconvert")
    key = world.directory / "alice.dropbear"
    if not key.exists():
        subprocess.run(["dropbearconvert", "openssh", "dropbear", str(world.key), str(key)], check=True,
                       capture_output=True, timeout=30)
    home = world.directory / "dropbear-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    # Host keys: dbclient trusts on first use into ~/.ssh/known_hosts; the hops are pinned there.
    keys = world.box.keys
    (home / ".ssh" / "known_hosts").write_text(
        f"127.0.0.1 {bare_key(keys.bastion_host_key)}\n"  # dbclient: no port, no comment
        f"db-1 {bare_key(keys.inner_host_key)}\n")
    env = {**os.environ, "HOME": str(home)}
    hops = f"alice@127.0.0.1/{world.box.port},{LOGIN}@db-1"
    # Each hop runs dbclient again by the path it was started as (no PATH search).
    dbclient_path = shutil.which("dbclient") or "/usr/bin/dbclient"

    def dbclient(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([dbclient_path, "-i", str(key), *args], env=env, capture_output=True,
                              timeout=90, check=False, stdin=subprocess.DEVNULL)

    check_exec(world, "Dropbear dbclient", lambda c: proc(dbclient(hops, c)))
    # dbclient starts a shell only on a terminal of its own: script(1) gives it one.
    shell = converse_process(["script", "-qec", shlex.join([dbclient_path, "-i", str(key), "-t", hops]),
                              "/dev/null"], env=env)
    check_shell(world, "Dropbear dbclient", shell)


# -- paramiko (Fabric's gateway= does the same) -----------------------------------------------------------


def test_paramiko_direct_tcpip_as_the_second_transport(world: World) -> None:
    paramiko = pytest.importorskip("paramiko")
    keys = world.box.keys
    outer = paramiko.Transport(("127.0.0.1", world.box.port))
    try:
        outer.start_client(timeout=30)
        assert outer.get_remote_server_key().get_base64() == public_line(
            keys.bastion_host_key.convert_to_public()).split()[1]
        outer.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(str(world.key)))
        channel = outer.open_channel("direct-tcpip", ("db-1", 22), ("127.0.0.1", 0))
        inner = paramiko.Transport(channel)
        inner.start_client(timeout=30)
        assert inner.get_remote_server_key().get_base64() == public_line(
            keys.inner_host_key.convert_to_public()).split()[1]
        inner.auth_none(LOGIN)

        def run(command: str) -> tuple[bytes, bytes, int]:
            session = inner.open_session()
            session.exec_command(command)
            out, err = session.makefile("rb").read(), session.makefile_stderr("rb").read()
            return out, err, session.recv_exit_status()

        check_exec(world, "paramiko", run)
        shell = inner.open_session()
        shell.get_pty()
        shell.invoke_shell()

        def receive(timeout: float) -> bytes | None:
            shell.settimeout(timeout)
            try:
                return bytes(shell.recv(65536))
            except TimeoutError:
                return None

        output = converse(shell.sendall, receive)
        shell.close()
        check_shell(world, "paramiko", output)
        world.settled()
        sftp = paramiko.SFTPClient.from_transport(inner)
        sessions = check_transfer(world, "paramiko", lambda s, r: sftp.put(str(s), str(r)),
                                  lambda r, b: sftp.get(str(r), str(b)), sftp.close, settle=False)
        assert any(e.get("subsystem") == "sftp" for e in sessions)
    finally:
        outer.close()


# -- asyncssh -------------------------------------------------------------------------------------------


def test_asyncssh_tunnel(world: World) -> None:
    keys = world.box.keys
    bastion_key = keys.bastion_host_key.convert_to_public()
    host_ca = keys.host_ca.convert_to_public()

    async def main() -> None:
        async with asyncssh.connect("127.0.0.1", world.box.port, username="alice", client_keys=[str(world.key)],
                                    known_hosts=([bastion_key], [], []), config=None) as bastion, \
                asyncssh.connect("db-1", 22, tunnel=bastion, username=LOGIN, client_keys=None,
                                 known_hosts=([], [host_ca], []), config=None) as target:

            async def run(command: str) -> tuple[bytes, bytes, int]:
                result = await target.run(command, encoding=None)
                return bytes(result.stdout or b""), bytes(result.stderr or b""), int(result.exit_status or 0)

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, check_exec, world, "asyncssh",
                                       lambda c: asyncio.run_coroutine_threadsafe(run(c), loop).result(90))
            process = await target.create_process(term_type="xterm", encoding=None)

            def send(data: bytes) -> None:
                loop.call_soon_threadsafe(process.stdin.write, data)

            def receive(timeout: float) -> bytes | None:
                read = asyncio.run_coroutine_threadsafe(asyncio.wait_for(process.stdout.read(65536), timeout), loop)
                try:
                    return bytes(read.result(timeout + 5))
                except TimeoutError:
                    return None

            output = await loop.run_in_executor(None, converse, send, receive)
            process.close()
            await process.wait_closed()
            await loop.run_in_executor(None, check_shell, world, "asyncssh", output)
            await loop.run_in_executor(None, world.settled)
            sftp = await target.start_sftp_client()

            def up(s: Path, r: Path) -> None:
                asyncio.run_coroutine_threadsafe(sftp.put(str(s), str(r)), loop).result(90)

            def down(r: Path, b: Path) -> None:
                asyncio.run_coroutine_threadsafe(sftp.get(str(r), str(b)), loop).result(90)

            def finish() -> None:
                loop.call_soon_threadsafe(sftp.exit)

            sessions = await loop.run_in_executor(None, lambda: check_transfer(world, "asyncssh", up, down, finish,
                                                                               settle=False))
            assert any(e.get("subsystem") == "sftp" for e in sessions)

    asyncio.run(main())


# -- Ansible ----------------------------------------------------------------------------------------------


def test_ansible_adhoc_command_and_copy_through_the_jump(world: World) -> None:
    ansible = Path(sys.executable).with_name("ansible")
    if not ansible.exists():
        pytest.fail("ansible is missing: pip install -e '.[test]'")
    inventory = world.directory / "inventory.ini"
    common = f"-F {world.config} -J bastion"
    inventory.write_text(f"db-1 ansible_user={LOGIN} ansible_ssh_common_args={shlex.quote(common)} "
                         f"ansible_python_interpreter=/usr/bin/python3\n")
    home = world.directory / "ansible-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
           "ANSIBLE_REMOTE_TEMP": "/tmp/.ansible-interop", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_SSH_CONTROL_PATH_DIR": f"/tmp/acp-{uuid.uuid4().hex[:6]}"}

    def adhoc(module: str, args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ansible), "db-1", "-i", str(inventory), "-m", module, "-a", args],
                              env=env, capture_output=True, text=True, timeout=180, check=False)

    name = tag("ansible")
    before = world.settled()
    result = adhoc("command", f"echo out-{name}")
    assert result.returncode == 0 and f"out-{name}" in result.stdout, result.stdout + result.stderr
    # Ansible runs its modules as Python programs it sends over: screening decides those runs.
    sessions = eventually(lambda: world.events("session_ended")[before:], "ansible's sessions")
    assert any("python3" in str(e.get("command")) for e in sessions), sessions
    assert [e for e in world.events("command_decision") if "python3" in str(e["command"])]
    source = world.directory / f"ansible-{name}"
    source.write_text("copied by ansible\n")
    dest = unique(f"ansible-copy-{name}")
    copied = adhoc("copy", f"src={source} dest={dest}")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert dest.read_text() == "copied by ansible\n"


# -- the table ------------------------------------------------------------------------------------------


def test_the_compatibility_table_lists_every_row() -> None:
    text = (REPO / "docs" / "compatibility.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| client") and not line.startswith("|---")]
    assert tuple(rows) == ROWS, rows

