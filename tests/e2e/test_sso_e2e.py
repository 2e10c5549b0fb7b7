"""Single sign-on for SSH users, end to end: plain `ssh -J` with a device code shown by the
bastion, `bastion login` certificates used by OpenSSH, group claims, expiry and revocation;
a real OpenID provider (node oidc-provider) and headless Chromium completing its device page."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bastion.auth.directory import Directory, SSOError, write_krl
from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox, make_user_key
from bastion.state.keys import known_hosts_lines
from tests.support.certs import ident, public
from tests.support.idp import OpenIDProvider, browser, complete_device_sign_in
from tests.support.lab import LOGIN, eventually, need

pytestmark = pytest.mark.e2e

ACCOUNTS = {
    "alice": {"groups": ["ops"]},
    "mallory": {"groups": ["dev"]},  # known to the provider, no group that reaches db-1
}
CODE = re.compile(rb"Open (\S+) and enter (\S+) \(expires in")


@dataclass
class World:
    box: Sandbox
    idp: OpenIDProvider
    chromium: Any
    url: str

    def ssh_config(self, name: str, **options: str) -> Path:
        """A client config with no key at all unless given: only SSO can let it in."""
        lines = [f"Host bastion\n    HostName 127.0.0.1\n    Port {self.box.port}\n",
                 "Host *\n", f"    UserKnownHostsFile {self.box.directory / 'known_hosts'}\n",
                 "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    ConnectTimeout 20\n"]
        if "IdentitiesOnly" not in options:
            lines.append("    IdentitiesOnly yes\n")
        if "IdentityFile" not in options:
            lines.append(f"    IdentityFile {self.box.directory / 'no-such-key'}\n")
        lines += [f"    {k} {v}\n" for k, v in options.items()]
        path = self.box.directory / f"ssh_config-{name}"
        path.write_text("".join(lines))
        return path

    def sign_in_device(self, stream: Any, login: str, proc: subprocess.Popen[bytes]) -> bytes:
        """Read the device code the bastion (or `bastion login`) printed; complete it as `login`."""
        seen = read_until(stream, CODE, proc)
        match = CODE.search(seen)
        assert match is not None
        page = self.chromium.new_context().new_page()
        complete_device_sign_in(page, match.group(1).decode(), match.group(2).decode(), login)
        return seen

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.box.events() if e["event"] == name]


def read_until(stream: Any, pattern: re.Pattern[bytes], proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    while not pattern.search(data):
        assert time.monotonic() < deadline, data
        if selector.select(timeout=0.2):
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"stream closed (exit {proc.poll()}): {data!r}")
            data += chunk
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need("ssh", "sshd", "ssh-keygen")
    directory = tmp_path_factory.mktemp("sso")
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}"
    idp = OpenIDProvider(directory, ACCOUNTS, [f"{url}/auth/callback"]).start()
    (directory / "client_secret").write_text(idp.client_secret)
    box = Sandbox(directory, extra={
        "login_timeout": "2m",
        "web": {"listen": f"127.0.0.1:{web_port}", "public_url": url},
        "oidc": {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret_file": "client_secret",
                 "cli_client_id": idp.cli_client_id, "certificate_ttl": "1h"},
    })
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.start_bastion()
    hosts = [f"[127.0.0.1]:{box.port}"]
    from bastion.config import load_config

    config = load_config(box.config_path)
    (directory / "known_hosts").write_text(
        "\n".join(known_hosts_lines(box.keys, list(config.targets.values()), hosts)) + "\n")
    try:
        with browser() as chromium:
            yield World(box, idp, chromium, url)
    finally:
        box.stop()
        idp.stop()


def ssh_with_device_code(world: World, config: Path, user: str, command: str,
                         login: str) -> tuple[subprocess.Popen[bytes], tuple[bytes, bytes, bytes]]:
    """`ssh -J USER@bastion … COMMAND`, its device code completed in the browser as LOGIN:
    (the process, (what ssh printed up to the code, stdout, stderr))."""
    proc = subprocess.Popen(["ssh", "-F", str(config), "-J", f"{user}@bastion", f"{LOGIN}@db-1", command],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        prompt = world.sign_in_device(proc.stderr, login, proc)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc, (prompt, out, err)


def test_plain_ssh_signs_in_with_a_device_code(world: World) -> None:
    config = world.ssh_config("kbd", BatchMode="no", PreferredAuthentications="keyboard-interactive")
    proc, (prompt, out, err) = ssh_with_device_code(world, config, "alice", "echo sso-ok", "alice")
    assert b"bastion sign-in" in prompt
    assert proc.returncode == 0, err
    assert out == b"sso-ok\n"
    logins = [e for e in world.events("sso_login") if e["user"] == "alice"]
    assert logins and logins[-1]["identity"] == f"{world.idp.issuer}#alice" and logins[-1]["groups"] == ["ops"]
    assert [e["method"] for e in world.events("auth_succeeded") if e["user"] == "alice"][-1] == "sso"


def test_a_client_gone_mid_sign_in_stops_the_wait(world: World) -> None:
    config = world.ssh_config("kbd-gone", BatchMode="no", PreferredAuthentications="keyboard-interactive")
    proc = subprocess.Popen(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1", "true"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        code = CODE.search(read_until(proc.stderr, CODE, proc))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: ssh and its ProxyJump child both go
        proc.wait()
    assert code is not None
    # Well before login_timeout (2 min): the bastion stops polling the provider for this code.
    abandoned = eventually(lambda: [e for e in world.events("sso_login_abandoned")
                                    if e["user_code"] == code.group(2).decode()], "sso_login_abandoned")
    assert abandoned[0]["user"] == "alice"


def test_a_client_gone_before_answering_the_device_prompt_is_logged_as_abandoned(world: World) -> None:
    """The client reads the device code and leaves without sending keyboard-interactive's answer
    (on a busy machine OpenSSH's answer and its hang-up also arrive together, and the task that
    would take the answer is cancelled before it runs): the sign-in was still abandoned."""
    import asyncio
    import concurrent.futures
    import contextlib

    async def leave() -> str:
        shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        connections: list[asyncssh.SSHClientConnection] = []

        class Leaving(asyncssh.SSHClient):
            def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
                connections.append(conn)

            def kbdint_auth_requested(self) -> str:
                return ""

            async def kbdint_challenge_received(self, name: str, instructions: str, lang: str,
                                                prompts: list[tuple[str, bool]]) -> list[str]:
                shown.set_result(instructions)
                await asyncio.Event().wait()  # never answers
                return []

        # The connection is not established until sign-in ends, which it never does here.
        connecting = asyncio.ensure_future(asyncssh.create_connection(
            Leaving, "127.0.0.1", world.box.port, username="alice", known_hosts=None, client_keys=[],
            agent_path=None, preferred_auth=["keyboard-interactive"]))
        try:
            instructions = await asyncio.wait_for(shown, 30)
            connections[0].abort()
        finally:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        return instructions

    # A thread of its own: the browser's sync API keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        instructions = pool.submit(asyncio.run, leave()).result(timeout=120)
    code = CODE.search(instructions.encode())
    assert code is not None
    abandoned = eventually(lambda: [e for e in world.events("sso_login_abandoned")
                                    if e["user_code"] == code.group(2).decode()], "sso_login_abandoned")
    assert abandoned[0]["user"] == "alice"


def test_device_sign_in_as_someone_else_is_refused(world: World) -> None:
    # ssh asks for alice; the browser signs in as mallory: the names must match.
    config = world.ssh_config("kbd-mismatch", BatchMode="no", PreferredAuthentications="keyboard-interactive",
                              NumberOfPasswordPrompts="1")
    proc, (_, _, err) = ssh_with_device_code(world, config, "alice", "true", "mallory")
    assert proc.returncode == 255
    assert b"signed in as mallory, but ssh asked for alice" in err
    failed = world.events("sso_login_failed")
    assert failed and "signed in as mallory" in failed[-1]["reason"]


def test_a_group_claim_without_access_is_refused(world: World) -> None:
    config = world.ssh_config("kbd-mallory", BatchMode="no", PreferredAuthentications="keyboard-interactive")
    proc, (_, _, err) = ssh_with_device_code(world, config, "mallory", "true", "mallory")
    assert proc.returncode == 255, err
    denied = [e for e in world.events("jump_refused") + world.events("login_refused") if e.get("user") == "mallory"]
    assert denied, world.box.events()[-10:]


def bastion_login(world: World, home: Path, key: Path, login: str, *extra: str,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOME": str(home), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "bastion", "login", "--url", world.url, "--key", str(key), *extra],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        world.sign_in_device(proc.stderr, login, proc)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def alice_cert(world: World) -> tuple[Path, Path]:
    home = world.box.directory / "home-alice"
    home.mkdir()
    key = home / "id_alice"
    make_user_key(key, "alice@laptop")
    result = bastion_login(world, home, key, "alice")
    assert result.returncode == 0, result.stderr
    assert b"signed in as alice (ops)" in result.stdout and b"CertificateFile" in result.stdout
    return home, key


def test_bastion_login_certificate_works_with_openssh(world: World, alice_cert: tuple[Path, Path]) -> None:
    home, key = alice_cert
    cert = key.with_name(key.name + "-cert.pub")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert re.search(r"Principals:\s*\n\s*alice\n", listing)
    assert f'Key ID: "bastion-login user=alice identity={world.idp.issuer}#alice' in listing
    valid = re.search(r"Valid: from (\S+) to (\S+)", listing)
    assert valid is not None
    lifetime = time.mktime(time.strptime(valid.group(2), "%Y-%m-%dT%H:%M:%S")) - time.time()
    assert 3000 < lifetime <= 3600  # certificate_ttl = 1h
    assert world.box.keys.login_ca.get_fingerprint("sha256").split(":", 1)[1] in listing
    config = world.ssh_config("cert", IdentityFile=str(key), CertificateFile=str(cert), BatchMode="yes")
    run = subprocess.run(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1", "echo cert-ok"],
                         capture_output=True, timeout=60, check=False)
    assert run.stdout == b"cert-ok\n", run.stderr
    status = subprocess.run([sys.executable, "-m", "bastion", "login", "--status"], env={**os.environ, "HOME": str(home)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0 and status.stdout.startswith("alice at ") and "min left" in status.stdout
    # The same certificate for another SSH user name opens nothing.
    other = subprocess.run(["ssh", "-F", str(config), "-J", "mallory@bastion", f"{LOGIN}@db-1", "true"],
                           capture_output=True, timeout=60, check=False)
    assert other.returncode == 255


def test_whoami_over_ssh_with_the_sso_certificate_says_how_and_until_when(world: World,
                                                                        alice_cert: tuple[Path, Path]) -> None:
    _, key = alice_cert
    cert = key.with_name(key.name + "-cert.pub")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    valid = re.search(r"Valid: from \S+ to (\S+)", listing)
    serial = re.search(r"Serial: (\d+)", listing)
    assert valid is not None and serial is not None
    expires = time.mktime(time.strptime(valid.group(1), "%Y-%m-%dT%H:%M:%S"))
    config = world.ssh_config("whoami", IdentityFile=str(key), CertificateFile=str(cert), BatchMode="yes")
    before = time.time()
    run = subprocess.run(["ssh", "-F", str(config), "alice@bastion", "whoami"], capture_output=True, text=True,
                         timeout=60, check=False)
    after = time.time()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "user        alice" in lines and "groups      ops" in lines
    assert any(line.startswith("signed in   with certificate from 127.0.0.1:") for line in lines), lines
    assert (f"certificate issued by bastion login after single sign-on as {world.idp.issuer}#alice"
            f" (serial {serial.group(1)})") in lines
    shown = next(line for line in lines if line.startswith("certificate expires "))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires))
    assert shown.startswith(f"certificate expires {when} "), (shown, when)
    minutes = int(re.search(r"\(in (\d+) min\)", shown).group(1))  # type: ignore[union-attr]
    assert int((expires - after) // 60) <= minutes <= int((expires - before) // 60)
    # The same user signed in with a device code has no certificate to show.
    proc = subprocess.Popen(["ssh", "-F", str(world.ssh_config("whoami-device")), "alice@bastion", "whoami"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        world.sign_in_device(proc.stderr, "alice", proc)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert b"signed in   with sso from 127.0.0.1:" in out and b"certificate" not in out


def test_expired_certificate_is_refused(world: World, alice_cert: tuple[Path, Path]) -> None:
    _, key = alice_cert
    issued = Directory(world.box.directory / "bastion.db").issue(
        world.box.keys.login_ca, key.with_name(key.name + ".pub").read_text(), user="alice",
        identity="test:expired", ttl=600, now=time.time() - 3600)
    expired = world.box.directory / "expired-cert.pub"
    issued.certificate.write_certificate(expired)
    config = world.ssh_config("expired", IdentityFile=str(key), CertificateFile=str(expired), BatchMode="yes")
    run = subprocess.run(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1", "true"],
                         capture_output=True, timeout=60, check=False)
    assert run.returncode == 255


def _post_certificate(world: World, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{world.url}/sso/certificate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_certificate_endpoint_refuses_forged_and_expired_tokens(world: World, alice_cert: tuple[Path, Path]) -> None:
    _, key = alice_cert
    public_key = key.with_name(key.name + ".pub").read_text()
    now = int(time.time())
    claims = {"iss": world.idp.issuer, "sub": "alice", "aud": world.idp.cli_client_id, "iat": now,
              "exp": now + 300, "preferred_username": "alice", "groups": ["ops"]}
    attacker = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    forged = jwt.encode({"alg": "RS256", "kid": "attacker"}, claims, attacker)
    status, answer = _post_certificate(world, {"id_token": forged, "public_key": public_key})
    assert status == 403 and "signature" in answer["error"]
    provider_key = RSAKey.import_key(json.loads(world.idp.signing_key_file.read_text()))
    header = {"alg": "RS256", "kid": provider_key.kid}
    expired = jwt.encode(header, {**claims, "iat": now - 7200, "exp": now - 3600}, provider_key)
    status, answer = _post_certificate(world, {"id_token": expired, "public_key": public_key})
    assert status == 403 and "expired" in answer["error"].lower()
    stale = jwt.encode(header, {**claims, "iat": now - 3600, "exp": now + 3600}, provider_key)
    status, answer = _post_certificate(world, {"id_token": stale, "public_key": public_key})
    assert status == 403 and "too old" in answer["error"]
    other_audience = jwt.encode(header, {**claims, "aud": "someone-else"}, provider_key)
    status, _ = _post_certificate(world, {"id_token": other_audience, "public_key": public_key})
    assert status == 403
    # A valid token still gets nothing for a CA key, a certificate, or a short RSA key.
    valid = jwt.encode(header, claims, provider_key)
    ca_line = world.box.keys.login_ca.export_public_key().decode()
    status, answer = _post_certificate(world, {"id_token": valid, "public_key": ca_line})
    assert status == 403 and "certificate authority" in answer["error"]
    cert_line = key.with_name(key.name + "-cert.pub").read_text()
    status, answer = _post_certificate(world, {"id_token": valid, "public_key": cert_line})
    assert status == 403 and "certificate, not a public key" in answer["error"]
    import asyncssh

    small = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_public_key().decode()
    status, answer = _post_certificate(world, {"id_token": valid, "public_key": small})
    assert status == 403 and "3072" in answer["error"]
    refused = world.events("certificate_refused")
    assert len(refused) >= 7


def test_bastion_login_can_hand_the_certificate_to_ssh_agent(world: World) -> None:
    need("ssh-agent", "ssh-add")
    home = world.box.directory / "home-agent"
    home.mkdir()
    socket = home / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        eventually(socket.exists, "ssh-agent's socket")
        key = home / "id_agent"
        make_user_key(key, "alice@agent")
        env = {"SSH_AUTH_SOCK": str(socket)}
        result = bastion_login(world, home, key, "alice", "--agent", env=env)
        assert result.returncode == 0, result.stderr
        assert b"added to ssh-agent" in result.stdout
        listed = subprocess.run(["ssh-add", "-L"], env={**os.environ, **env}, capture_output=True, text=True,
                                check=True).stdout
        assert "ssh-ed25519-cert-v01@openssh.com" in listed
        # No key file named at all: the agent's certificate opens the bastion.
        config = world.ssh_config("agent", IdentityFile="none", IdentitiesOnly="no", BatchMode="yes",
                                  IdentityAgent=str(socket))
        run = subprocess.run(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1", "echo via-agent"],
                             capture_output=True, timeout=60, check=False)
        assert run.stdout == b"via-agent\n", run.stderr
    finally:
        agent.terminate()
        agent.wait(10)


def test_revoked_user_is_refused_and_their_live_session_ends(world: World, alice_cert: tuple[Path, Path]) -> None:
    _, key = alice_cert
    cert = key.with_name(key.name + "-cert.pub")
    config = world.ssh_config("revoke", IdentityFile=str(key), CertificateFile=str(cert), BatchMode="yes")
    live = subprocess.Popen(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1",
                             "echo started; sleep 60; echo never"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until(live.stdout, re.compile(b"started"), live)
        users = subprocess.run([sys.executable, "-m", "bastion", "users", "list", "-c", str(world.box.config_path)],
                               capture_output=True, text=True, timeout=60, check=True).stdout
        assert re.search(rf"^alice  sso {re.escape(world.idp.issuer)}#alice .*groups=ops  live: {LOGIN}@db-1", users,
                         re.M), users
        revoke = subprocess.run([sys.executable, "-m", "bastion", "users", "revoke", "alice", "-c",
                                 str(world.box.config_path)], capture_output=True, text=True, timeout=60, check=False)
        assert revoke.returncode == 0, revoke.stderr
        out, err = live.communicate(timeout=30)
    finally:
        live.kill()
    assert b"never" not in out
    assert b"bastion: your access has been revoked" in err
    again = subprocess.run(["ssh", "-F", str(config), "-J", "alice@bastion", f"{LOGIN}@db-1", "true"],
                           capture_output=True, timeout=60, check=False)
    assert again.returncode == 255
    krl = world.box.directory / "revoked_user_certs.krl"
    query = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(cert)], capture_output=True, text=True,
                           check=False)
    assert "REVOKED" in query.stdout, query
    assert any(e["user"] == "alice" for e in world.events("session_revoked"))
    listed = subprocess.run([sys.executable, "-m", "bastion", "users", "list", "-c", str(world.box.config_path)],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert re.search(r"^alice  REVOKED", listed, re.M)


def in_thread(coroutine: Any) -> Any:
    """asyncio.run beside Playwright's own loop in this thread."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=120)


def test_device_codes_are_single_use(world: World) -> None:
    from bastion.auth.oidc import OIDCClient, OIDCError
    from bastion.config import OIDCSettings

    client = OIDCClient(OIDCSettings(issuer=world.idp.issuer, client_id=world.idp.cli_client_id))
    device = in_thread(client.start_device())
    page = world.chromium.new_context().new_page()
    complete_device_sign_in(page, device.verification_uri, device.user_code, "alice")
    tokens = in_thread(client.device_tokens(device))
    assert tokens.get("id_token")
    with pytest.raises(OIDCError):
        in_thread(client.device_tokens(device))  # the same code again: refused by the provider


# -- the SSO directory's revocation list, read by OpenSSH ------------------------------------------


def fp(issued: Any) -> str:
    return str(issued.certificate.key.get_fingerprint())


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path / "state.db")


@pytest.fixture(scope="module")
def ca() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def test_revocation_outlives_restore_for_old_certificates(directory: Directory, ca: asyncssh.SSHKey,
                                                          tmp_path: Path) -> None:
    need("ssh-keygen")
    old = directory.issue(ca, public(), user="alice", identity="idp#s-1", ttl=600)
    other = directory.issue(ca, public(), user="bob", identity="idp#s-2", ttl=600)
    assert directory.revoke("alice", "ops-oncall") == [old.serial]
    assert directory.revoked("alice") and directory.certificate_allowed("alice", old.serial, fp(old)) == "user alice has been revoked"
    with pytest.raises(SSOError, match="revoked"):
        directory.issue(ca, public(), user="alice", identity="idp#s-1", ttl=600)
    with pytest.raises(SSOError, match="revoked"):
        directory.sign_in(ident("s-1", "alice"), {})
    krl = tmp_path / "revoked.krl"
    write_krl(krl, ca, directory.revoked_serials())
    for issued, expected in ((old, "REVOKED"), (other, "ok")):
        cert = tmp_path / f"{issued.serial}-cert.pub"
        issued.certificate.write_certificate(cert)
        result = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(cert)], capture_output=True, text=True,
                                check=False)
        assert expected in result.stdout, result
    assert directory.restore("alice") and not directory.restore("alice")
    assert directory.certificate_allowed("alice", old.serial, fp(old)) == "certificate revoked"  # still
    fresh = directory.issue(ca, public(), user="alice", identity="idp#s-1", ttl=600)
    assert directory.certificate_allowed("alice", fresh.serial, fp(fresh)) is None
