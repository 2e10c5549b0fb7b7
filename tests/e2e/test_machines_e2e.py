"""Machines through the same gate, end to end: a CI job's token, minted by a real OpenID
provider playing the CI platform (node oidc-provider, client-credentials grant, signed JWTs with
the job's claims), exchanged by `bastion login --token-file/--token-env` for a short-lived
certificate that plain OpenSSH uses through `ssh -J`. Every hostile token a job could send is
refused with an audited reason; a machine's held command is approved by a person in Chromium;
a revoked machine is refused and its live session ends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bastion.config import load_config
from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox, make_user_key
from tests.support.idp import OpenIDProvider, WebhookReceiver, browser, sign_in
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.samples import GH
from tests.support.sessions import bastion_cli, unique

pytestmark = pytest.mark.e2e

MAIN = {"repository": "acme/web", "ref": "refs/heads/main", "run_id": "1001", "environment": "production"}
JOBS = {
    "web-main": MAIN,
    "web-fork": {**MAIN, "repository": "mallory/web", "run_id": "666"},  # a fork's workflow
    "web-branch": {**MAIN, "ref": "refs/heads/feature", "run_id": "1002"},  # an unreviewed branch
    "burst": {"repository": "acme/burst", "ref": "refs/heads/main", "run_id": "7"},
}
# A job of acme/web's main branch per test: certificates are rated per token subject (5 a
# minute), and each of these has its own.
for _number, _test in enumerate(("deploy", "replay", "env", "minted", "shell", "rules", "approval", "revoked",
                                 "restored", "own")):
    JOBS[f"main-{_test}"] = {**MAIN, "run_id": str(2000 + _number)}
RULES = """
[defaults]
action = "allow"

[[rule]]
name = "deploys-need-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "2m"

[[rule]]
name = "machines-never-delete"
action = "deny"
program = "rm"
principals = "machines"
message = "machines do not delete files"
"""


@dataclass
class World:
    box: Sandbox
    ci: OpenIDProvider  # the CI platform: it mints the jobs' tokens
    people: OpenIDProvider  # the people's identity provider (approvers); a foreign issuer to machines
    chat: WebhookReceiver
    url: str
    home: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.box.events() if e["event"] == name]

    def login(self, token: str, *extra: str, env: dict[str, str] | None = None,
              name: str = "job") -> subprocess.CompletedProcess[str]:
        """`bastion login --token-file` as a CI job would run it, HOME its own."""
        home = self.home / name
        home.mkdir(exist_ok=True)
        token_file = home / "token"
        token_file.write_text(token)
        args = extra if "--token-env" in extra else ("--token-file", str(token_file), *extra)
        return subprocess.run(
            [sys.executable, "-m", "bastion", "login", "--url", self.url, *args],
            env={**os.environ, "HOME": str(home), **(env or {})},
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)

    def ssh(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        config = self.home / name / ".ssh" / "bastion_config"
        return subprocess.run(["ssh", "-F", str(config), "-J", "bastion", *args],
                              capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def signed_in(self, name: str) -> None:
        result = self.login(self.ci.workload_token(f"main-{name}"), name=name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("signed in as machine deploy-web until "), result.stdout

    def refused(self, token: str, *extra: str) -> tuple[int, str]:
        """Exit code and the one stderr line of a refused exchange; its audited reason must be logged."""
        before = len(self.events("machine_token_refused"))
        result = self.login(token, *extra, name="hostile")
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bastion login: "), result.stderr
        if result.returncode in (1, 3):  # refused by the bastion: audited
            eventually(lambda: len(self.events("machine_token_refused")) > before, "machine_token_refused")
        return result.returncode, lines[0]


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need("ssh", "sshd", "ssh-keygen")
    directory = tmp_path_factory.mktemp("machines")
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}"
    ci = OpenIDProvider(directory / "ci", {}, [], workloads=JOBS)
    (directory / "ci").mkdir()
    ci.start()
    people = OpenIDProvider(directory / "people", {"carol": {"groups": ["dba"]}, "deploy-web": {"groups": ["dba"]}},
                            [f"{url}/auth/callback"], workloads={"web-main": MAIN})
    (directory / "people").mkdir()
    people.start()
    chat = WebhookReceiver()
    (directory / "rules.toml").write_text(RULES)
    (directory / "client_secret").write_text(people.client_secret)
    machine = {"issuer": ci.issuer, "audience": "bastion", "groups": ["deployers"], "certificate_ttl": "5m"}
    box = Sandbox(directory, extra={
        "rules_file": "rules.toml",
        "web": {"listen": f"127.0.0.1:{web_port}", "public_url": url},
        "oidc": {"issuer": people.issuer, "client_id": people.client_id, "client_secret_file": "client_secret"},
        "notify": [{"kind": "webhook", "url": chat.url("/hook")}],
        "machines": [
            {"name": "deploy-web", **machine,
             "claims": {"repository": "acme/web", "ref": "refs/heads/main", "environment": "production"}},
            {"name": "burst-bot", **machine, "claims": {"repository": "acme/burst"}},
            # An issuer that is down: nothing listens there.
            {"name": "down-bot", **machine, "issuer": f"http://127.0.0.1:{free_port()}",
             "claims": {"repository": "acme/down"}},
        ],
    })
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops", "deployers"])
    box.write_ssh_config("alice")
    box.start_bastion()
    home = directory / "homes"
    home.mkdir()
    try:
        yield World(box, ci, people, chat, url, home)
    finally:
        box.stop()
        ci.stop()
        people.stop()
        chat.close()


def test_a_job_exchanges_its_token_and_runs_a_command_through_ssh_j(world: World) -> None:
    world.signed_in("deploy")
    cert = world.home / "deploy" / ".ssh" / "bastion_machine_ed25519-cert.pub"
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Principals:\s*\n\s*deploy-web\n", listing), listing
    valid = re.search(r"Valid: from (\S+) to (\S+)", listing)
    assert valid is not None
    lifetime = time.mktime(time.strptime(valid.group(2), "%Y-%m-%dT%H:%M:%S")) - time.time()
    assert 0 < lifetime <= 300  # certificate_ttl = 5m: minutes, not hours
    run = world.ssh("deploy", f"{LOGIN}@db-1", "echo deployed-by-ci")
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"deployed-by-ci\n"
    issued = world.events("machine_certificate_issued")[-1]
    assert issued["machine"] == "deploy-web" and issued["identity"] == f"{world.ci.issuer}#job-main-deploy"
    assert issued["workload"]["repository"] == "acme/web" and issued["workload"]["run_id"] == "2000"
    auth = [e for e in world.events("auth_succeeded") if e["user"] == "deploy-web"][-1]
    assert auth["method"] == "machine" and auth["workload"]["ref"] == "refs/heads/main"
    started = [e for e in world.events("session_started") if e["user"] == "deploy-web"][-1]
    assert started["workload"]["run_id"] == "2000"
    cast = recording_for(world.box, lambda e: e["session"] == started["session"])
    header = json.loads(cast.read_text().splitlines()[0])
    found = json.dumps(header)
    assert '"machine": true' in found and '"repository": "acme/web"' in found and '"run_id": "2000"' in found
    index = sqlite3.connect(world.box.directory / "recordings" / "index.db")
    row = index.execute("SELECT user, workload FROM sessions WHERE id = ?", (started["session"],)).fetchone()
    assert row[0] == "deploy-web" and json.loads(row[1])["repository"] == "acme/web"
    # Masked like anyone's: a token the job prints reaches neither its log nor the recording.
    leak = world.ssh("deploy", f"{LOGIN}@db-1", f"echo {GH}")
    assert leak.returncode == 0 and GH[4:].encode() not in leak.stdout and leak.stdout.startswith(b"ghp_")
    cast = recording_for(world.box, lambda e: e["user"] == "deploy-web"
                         and str(e.get("command", "")).startswith("echo ghp_"))
    assert GH[4:] not in cast.read_text() and "github-token" in cast.read_text()


def test_the_same_token_twice_is_refused(world: World) -> None:
    token = world.ci.workload_token("main-replay")
    first = world.login(token, name="replay")
    assert first.returncode == 0, first.stderr
    code, line = world.refused(token)
    assert code == 1 and "already exchanged" in line
    assert "already exchanged" in world.events("machine_token_refused")[-1]["reason"]


def test_a_token_from_the_environment_works_too(world: World) -> None:
    token = world.ci.workload_token("main-env")
    result = world.login("", "--token-env", "CI_JOB_TOKEN", env={"CI_JOB_TOKEN": token}, name="env")
    assert result.returncode == 0, result.stderr
    assert world.ssh("env", f"{LOGIN}@db-1", "echo from-env").stdout == b"from-env\n"
    # A key of the job's own, named with --key, is certified as it is (never replaced).
    own = world.home / "env" / "own_key"
    make_user_key(own, "job@runner")
    before = own.read_bytes()
    token = world.ci.workload_token("main-env")
    result = world.login("", "--token-env", "CI_JOB_TOKEN", "--key", str(own), env={"CI_JOB_TOKEN": token},
                         name="env")
    assert result.returncode == 0, result.stderr
    assert own.read_bytes() == before and own.with_name("own_key-cert.pub").exists()
    empty = world.login("", "--token-env", "CI_NO_TOKEN", name="env")
    assert empty.returncode == 2 and empty.stderr.strip() == "bastion login: no token in $CI_NO_TOKEN"


def test_a_token_minted_for_another_audience_is_refused(world: World) -> None:
    code, line = world.refused(world.ci.workload_token("web-main", audience="some-other-service"))
    assert code == 1 and "audience" in line
    assert "audience" in world.events("machine_token_refused")[-1]["reason"]


def test_another_repository_or_branch_is_not_the_machine(world: World) -> None:
    code, line = world.refused(world.ci.workload_token("web-fork"))
    assert code == 1 and "claim 'repository' is 'mallory/web'" in line
    code, line = world.refused(world.ci.workload_token("web-branch"))
    assert code == 1 and "claim 'ref' is 'refs/heads/feature'" in line
    # Naming the machine does not make a token it: the claims still decide.
    code, line = world.refused(world.ci.workload_token("web-fork"), "--machine", "deploy-web")
    assert code == 1 and "repository" in line


def provider_key(provider: OpenIDProvider) -> RSAKey:
    return RSAKey.import_key(json.loads(provider.signing_key_file.read_text()))


def claims_now(world: World, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": world.ci.issuer, "sub": "job-main-minted", "aud": "bastion", "iat": now, "exp": now + 300,
            "jti": os.urandom(8).hex(), **MAIN, **overrides}


def test_expired_and_too_old_tokens_are_refused(world: World) -> None:
    key = provider_key(world.ci)
    header = {"alg": "RS256", "kid": key.kid}
    now = int(time.time())
    code, line = world.refused(jwt.encode(header, claims_now(world, iat=now - 7200, exp=now - 3600), key))
    assert code == 1 and "expired" in line
    # Still within its exp, but minted long ago (max_token_age 10m by default).
    code, line = world.refused(jwt.encode(header, claims_now(world, iat=now - 3600, exp=now + 3600), key))
    assert code == 1 and "too old" in line
    code, line = world.refused(jwt.encode(header, claims_now(world, nbf=now + 3600), key))
    assert code == 1 and "not valid yet" in line
    no_exp = claims_now(world)
    del no_exp["exp"]
    code, line = world.refused(jwt.encode(header, no_exp, key))
    assert code == 1 and "no exp" in line
    # The provider's own key, all claims right: accepted (the refusals above were for their reason).
    assert world.login(jwt.encode(header, claims_now(world), key), name="minted").returncode == 0


def test_unsigned_and_hmac_tokens_are_refused(world: World) -> None:
    claims = claims_now(world)
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    code, line = world.refused(unsigned)
    assert code == 1 and "signature" in line
    # The classic confusion: HS256 keyed with the issuer's public key, which anyone can fetch.
    # (joserfc refuses to make one; made by hand, as an attacker would.)
    public_pem = provider_key(world.ci).as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'kid': provider_key(world.ci).kid})}.{b64(claims_now(world))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    code, line = world.refused(f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}")
    assert code == 1 and "signature" in line
    reasons = [e["reason"] for e in world.events("machine_token_refused")[-2:]]
    assert all("signature" in r for r in reasons), reasons


def test_forged_and_foreign_issuer_tokens_are_refused(world: World) -> None:
    attacker = RSAKey.generate_key(2048, parameters={"kid": provider_key(world.ci).kid})
    code, line = world.refused(jwt.encode({"alg": "RS256", "kid": attacker.kid}, claims_now(world), attacker))
    assert code == 1 and "signature" in line
    # A header pointing at the attacker's own keys (jku, an embedded jwk) is not where keys come from.
    embedded = {"alg": "RS256", "kid": "attacker", "jku": f"{world.url}/attacker-keys.json",
                "jwk": attacker.as_dict(private=False)}
    code, line = world.refused(jwt.encode(embedded, claims_now(world), attacker))
    assert code == 1 and "signature" in line
    unknown_kid = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    code, line = world.refused(jwt.encode({"alg": "RS256", "kid": "attacker"}, claims_now(world), unknown_kid))
    assert code == 1 and "signature" in line
    # A real, validly signed token with the same claims, from an issuer no machine trusts.
    code, line = world.refused(world.people.workload_token("web-main"))
    assert code == 1 and f"no machine takes tokens from issuer '{world.people.issuer}'" in line
    code, line = world.refused("not-a-jwt")
    assert code == 1 and "not a signed JWT" in line


def test_an_issuer_that_cannot_be_read_means_try_again_later(world: World) -> None:
    down = next(m for m in load_config(world.box.config_path).machines.values() if m.name == "down-bot")
    token = f"{b64({'alg': 'RS256', 'kid': 'k'})}.{b64(claims_now(world, iss=down.issuer))}.c2ln"
    for _ in range(2):  # the second is refused at once, without waiting for the issuer again
        code, line = world.refused(token)
        assert code == 3 and "refused (502)" in line and down.issuer in line
    reasons = [e["reason"] for e in world.events("machine_token_refused")[-2:]]
    assert all(down.issuer in r for r in reasons), reasons


def test_a_machine_runs_commands_not_shells(world: World) -> None:
    world.signed_in("shell")
    for args in ((), ("bash",), ("sh -s",)):
        run = world.ssh("shell", "-tt" if not args else "-T", f"{LOGIN}@db-1", *args)
        assert run.returncode != 0
        said = run.stdout + run.stderr  # with a pty the bastion speaks on the one output stream
        assert b"runs commands only" in said and b"allow_shell = false" in said, said
    refused = eventually(lambda: [e for e in world.events("session_ended") if e["user"] == "deploy-web"
                                  and "runs commands only" in (e.get("reason") or "")][2:] and
                         [e for e in world.events("session_ended") if e["user"] == "deploy-web"
                          and "runs commands only" in (e.get("reason") or "")], "three refused sessions")
    assert len(refused) == 3 and all(e["workload"]["repository"] == "acme/web" for e in refused)


def test_rules_scope_to_machines(world: World) -> None:
    world.signed_in("rules")
    doomed = unique("machine-rm")
    doomed.write_text("x")
    run = world.ssh("rules", f"{LOGIN}@db-1", f"rm {doomed}")
    assert run.returncode != 0 and b"machines do not delete files" in run.stderr
    assert doomed.exists()
    # The same command by a person is not this rule's business.
    person = subprocess.run(["ssh", "-F", str(world.box.directory / "ssh_config-alice"), "-J", "bastion",
                             f"{LOGIN}@db-1", f"rm {doomed}"], capture_output=True, timeout=60, check=False)
    assert person.returncode == 0, person.stderr
    assert not doomed.exists()


def test_a_machines_held_command_is_approved_by_a_person(world: World) -> None:
    need("chromium")
    world.signed_in("approval")
    marker = unique("needs-approval")
    config = world.home / "approval" / ".ssh" / "bastion_config"
    proc = subprocess.Popen(["ssh", "-F", str(config), "-J", "bastion", f"{LOGIN}@db-1",
                             f"touch {marker} && echo approved-deploy"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        post = world.chat.wait_for(lambda path, p: str(marker) in p.get("command", ""))
        assert post["user"] == "deploy-web"
        link = post["url"]
        with browser() as chromium:
            # Someone at the people's provider named like the machine is not the machine.
            page = chromium.new_context().new_page()
            page.goto(link)
            page.get_by_role("link", name="Sign in").click()
            page.locator("input[name=login]").fill("deploy-web")
            page.locator("input[name=password]").fill("any password")
            page.get_by_role("button", name="Sign-in").click()
            page.get_by_text("is a machine").wait_for(timeout=20000)
            assert proc.poll() is None and not marker.exists()
            page = chromium.new_context().new_page()
            sign_in(page, link, "carol")
            assert "deploy-web" in page.locator("body").inner_text()
            page.get_by_role("button", name="Approve").click()
            page.get_by_text("You approved this request.").wait_for()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"approved-deploy" in out and marker.exists()
    failed = world.events("web_sign_in_failed")
    assert failed and "is a machine" in failed[-1]["reason"]
    decision = [e for e in world.events("approval_decision") if e["by"] == "carol"]
    assert decision


def test_the_certificate_rate_holds_for_machines(world: World) -> None:
    codes = []
    for _ in range(6):
        token = world.ci.workload_token("burst")
        codes.append(world.login(token, name="burst").returncode)
    assert codes[:5] == [0] * 5 and codes[5] == 3, codes  # 3: try again later


def test_a_revoked_machine_is_refused_and_its_live_session_ends(world: World) -> None:
    world.signed_in("revoked")
    config = world.home / "revoked" / ".ssh" / "bastion_config"
    live = subprocess.Popen(["ssh", "-F", str(config), "-J", "bastion", f"{LOGIN}@db-1",
                             "echo started; sleep 60; echo never"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: [e for e in world.events("session_started") if e["user"] == "deploy-web"
                            and e["session"] not in {x["session"] for x in world.events("session_ended")}],
                   "the machine's live session")
        listed = bastion_cli(world.box, "machines", "list")
        assert re.search(r"^deploy-web  issuer=.* live=1", listed.stdout, re.M), listed
        revoke = bastion_cli(world.box, "machines", "revoke", "deploy-web")
        assert revoke.returncode == 0, revoke.stderr
        out, err = live.communicate(timeout=30)
    finally:
        live.kill()
    assert b"never" not in out and b"your access has been revoked" in err
    again = world.ssh("revoked", f"{LOGIN}@db-1", "true")
    assert again.returncode == 255
    code, line = world.refused(world.ci.workload_token("web-main"))
    assert code == 1 and "revoked" in line
    assert "deploy-web  REVOKED" in bastion_cli(world.box, "machines", "list").stdout
    assert bastion_cli(world.box, "machines", "restore", "deploy-web").returncode == 0
    world.signed_in("restored")
    assert world.ssh("restored", f"{LOGIN}@db-1", "echo back").stdout == b"back\n"


def test_a_machine_has_no_commands_on_the_bastion_itself(world: World) -> None:
    world.signed_in("own")
    config = world.home / "own" / ".ssh" / "bastion_config"
    for command in ("whoami", "sessions list", "approvals list", "approvals approve 7F3A1B"):
        run = subprocess.run(["ssh", "-F", str(config), "bastion", command], capture_output=True, text=True,
                             timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert run.returncode == 2 and "machines have no commands on the bastion" in run.stderr, run
    refused = [e for e in world.events("own_command_refused") if e["user"] == "deploy-web"]
    assert [e["command"] for e in refused][-4:] == ["whoami", "sessions list", "approvals list",
                                                    "approvals approve 7F3A1B"]
    assert not [e for e in world.events("own_command") if e["user"] == "deploy-web"]
