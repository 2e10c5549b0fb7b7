"""Workload identities without sockets: matching a verified token to a machine, its times and
audience, the config's `[[machines]]`, rules scoped to machines, tokens spent once, the shell
gate, and that nobody signs in (or approves) as a machine."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any, cast

import asyncssh
import pytest

from bastion.auth.directory import Directory, SSOError, TokenReplayed
from bastion.auth.identity import SignInRefused, resolve_approver
from bastion.auth.machines import token_key, unverified_issuer
from bastion.config import MachineConfig, parse_config
from bastion.core.rules import CommandRequest, Principals, parse_rules
from bastion.core.workload import LEEWAY, TokenRefused, Workload, check_times, match_machine
from bastion.errors import ConfigError
from bastion.stages.machinegate import ShellGateStage
from bastion.stages.pipeline import SessionInfo
from recorder.transfers import SessionKind
from tests.support.certs import ident, public
from tests.support.stages import Session

ISSUER = "https://token.actions.githubusercontent.com"
NOW = 1_800_000_000.0


def machine(name: str = "deploy-web", **overrides: Any) -> MachineConfig:
    args: dict[str, Any] = {
        "name": name, "issuer": ISSUER, "audience": "bastion",
        "claims": (("ref", ("refs/heads/main",)), ("repository", ("acme/web",))),
    }
    args.update(overrides)
    return MachineConfig(**args)


def claims(**overrides: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "repo:acme/web:ref:refs/heads/main", "aud": "bastion", "iat": NOW - 10,
            "exp": NOW + 290, "jti": "abc", "repository": "acme/web", "ref": "refs/heads/main",
            "run_id": "42", **overrides}


def test_a_token_with_the_pinned_claims_is_its_machine() -> None:
    workload = match_machine([machine()], claims(), now=NOW)
    assert workload.machine == "deploy-web" and workload.token_id == "abc" and workload.expires == int(NOW + 290)
    assert dict(workload.claims)["run_id"] == "42" and dict(workload.claims)["repository"] == "acme/web"
    assert workload.identity == f"{ISSUER}#repo:acme/web:ref:refs/heads/main"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"aud": "someone-else"}, "audience"),
    ({"aud": ["someone-else", "other"]}, "audience"),
    ({"aud": None}, "audience"),
    ({"repository": "mallory/web"}, "claim 'repository' is 'mallory/web'"),
    ({"repository": None}, "claim 'repository'"),
    ({"ref": "refs/heads/feature"}, "claim 'ref'"),
    ({"iss": "https://evil.example"}, "no machine takes tokens from issuer"),
    ({"sub": ""}, "no subject"),
    ({"exp": NOW - LEEWAY - 1}, "expired"),
    ({"iat": NOW - 3600, "exp": NOW + 3600}, "too old"),
    ({"iat": NOW + LEEWAY + 5}, "in the future"),
    ({"nbf": NOW + LEEWAY + 5}, "not valid yet"),
    ({"exp": "tomorrow"}, "not a number"),
    ({"iat": True}, "not a number"),
    ({"jti": 12}, "jti is not a string"),
])
def test_tokens_that_are_not_the_machine_are_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRefused, match=reason):
        match_machine([machine()], claims(**changes), now=NOW)


def test_a_claim_missing_or_of_another_type_does_not_match() -> None:
    without = claims()
    del without["ref"]
    with pytest.raises(TokenRefused, match="no 'ref' claim"):
        match_machine([machine()], without, now=NOW)
    typed = machine(claims=(("run_attempt", (1,)), ("repository", ("acme/web",))))
    with pytest.raises(TokenRefused, match="run_attempt"):
        match_machine([typed], claims(run_attempt="1"), now=NOW)  # "1" is not 1
    assert match_machine([typed], claims(run_attempt=1), now=NOW).machine == "deploy-web"
    flag = machine(claims=(("protected", (True,)),))
    with pytest.raises(TokenRefused, match="protected"):
        match_machine([flag], claims(protected=1), now=NOW)  # 1 is not True


def test_exp_and_iat_are_required() -> None:
    for name in ("exp", "iat"):
        without = claims()
        del without[name]
        with pytest.raises(TokenRefused, match=f"no {name}"):
            check_times(without, now=NOW, max_age=600)


def test_accepted_values_may_be_a_list() -> None:
    either = machine(claims=(("ref", ("refs/heads/main", "refs/tags/v1")), ("repository", ("acme/web",))))
    assert match_machine([either], claims(ref="refs/tags/v1"), now=NOW).machine == "deploy-web"


def test_several_matching_machines_must_be_chosen_and_naming_never_widens() -> None:
    two = [machine("deploy-web"), machine("deploy-web-2")]
    with pytest.raises(TokenRefused, match="several machines"):
        match_machine(two, claims(), now=NOW)
    assert match_machine(two, claims(), now=NOW, requested="deploy-web-2").machine == "deploy-web-2"
    other = [machine(), machine("deploy-api", claims=(("repository", ("acme/api",)),))]
    with pytest.raises(TokenRefused, match="repository"):
        match_machine(other, claims(), now=NOW, requested="deploy-api")
    with pytest.raises(TokenRefused, match="no machine 'nobody'"):
        match_machine(other, claims(), now=NOW, requested="nobody")


def test_each_machine_has_its_own_maximum_token_age() -> None:
    patient = machine(max_token_age=3600)
    assert match_machine([patient], claims(iat=NOW - 3000, exp=NOW + 600), now=NOW).machine == "deploy-web"
    with pytest.raises(TokenRefused, match="too old"):
        match_machine([machine(max_token_age=60)], claims(iat=NOW - 200), now=NOW)


def test_the_unverified_issuer_is_only_read_from_a_compact_jws() -> None:
    for token in ("not-a-jwt", "a.b", "a.b.c.d.e", ".e30.", "eyJ.e30"):
        with pytest.raises(TokenRefused):
            unverified_issuer(token)
    with pytest.raises(TokenRefused, match="names no issuer"):
        unverified_issuer("eyJhbGciOiJub25lIn0.e30.")  # {"alg":"none"}.{}


def test_a_token_is_spent_by_jti_or_by_its_hash() -> None:
    with_jti = Workload("m", ISSUER, "s", 0, "abc", ())
    without = Workload("m", ISSUER, "s", 0, None, ())
    assert token_key(with_jti, "t1") == token_key(with_jti, "t2") == f"{ISSUER}#jti:abc"
    assert token_key(without, "t1") != token_key(without, "t2")


# -- config ---------------------------------------------------------------------------------------


def config(*machines: dict[str, Any], **extra: Any) -> Any:
    return parse_config({"web": {}, "users": {"alice": {}}, "machines": list(machines), **extra})


def entry(**overrides: Any) -> dict[str, Any]:
    return {"name": "deploy-web", "issuer": ISSUER, "audience": "bastion",
            "claims": {"repository": "acme/web", "ref": "refs/heads/main"}, **overrides}


def test_machines_in_the_config() -> None:
    parsed = config(entry(groups=["deployers"], certificate_ttl="5m")).machines["deploy-web"]
    assert parsed.claims == (("ref", ("refs/heads/main",)), ("repository", ("acme/web",)))
    assert parsed.groups == frozenset({"deployers"}) and parsed.certificate_ttl == 300
    assert parsed.max_token_age == 600 and parsed.allow_shell is False  # exec-only unless said
    assert config(entry()).machines["deploy-web"].certificate_ttl == 900  # minutes, not hours


@pytest.mark.parametrize(("changes", "error"), [
    ({"claims": {}}, "name at least one claim"),  # else: every repository on the platform
    ({"claims": None}, "name at least one claim"),
    ({"name": "alice"}, "taken by another user"),
    ({"name": "bad name"}, "not a valid name"),
    ({"issuer": "token.actions.githubusercontent.com"}, "http(s) URL"),
    ({"audience": ""}, "audience"),
    ({"claims": {"repository": ""}}, "empty value"),
    ({"claims": {"repository": {"nested": 1}}}, "expected a string"),
    ({"claims": {"aud": "x"}}, "checked by the bastion"),
    ({"certificate_ttl": "2d"}, "certificate_ttl"),
    ({"max_token_age": "5s"}, "max_token_age"),
    ({"allow_shel": True}, "unknown key 'allow_shel'"),
])
def test_bad_machines_are_named(changes: dict[str, Any], error: str) -> None:
    spec = {k: v for k, v in entry(**changes).items() if v is not None}
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        config(spec)


def test_machines_need_the_web_service_and_distinct_names() -> None:
    with pytest.raises(ConfigError, match=r"needs \[web\]"):
        parse_config({"machines": [entry()]})
    with pytest.raises(ConfigError, match="taken by another machine"):
        config(entry(), entry())


# -- rules, people and machines --------------------------------------------------------------------


def rules_from(text: str) -> Any:
    return parse_rules(tomllib.loads(text), text=text)


def test_rules_can_scope_to_machines_or_people() -> None:
    rules = rules_from("""
[[rule]]
name = "machines-never-delete"
action = "deny"
program = "rm"
principals = "machines"

[[rule]]
name = "people-log-deploys"
action = "log"
program = "deploy"
principals = "people"
""")
    assert rules.rules[0].principals is Principals.MACHINES

    def decide(command: str, machine: bool) -> str | None:
        return rules.decide(CommandRequest("u", frozenset(), "db-1", "root", "exec", command, machine=machine)).rule

    assert decide("rm -rf /srv", machine=True) == "machines-never-delete"
    assert decide("rm -rf /srv", machine=False) is None
    assert decide("deploy web", machine=False) == "people-log-deploys"
    assert decide("deploy web", machine=True) is None
    with pytest.raises(ConfigError, match="principals must be one of all, people, machines"):
        rules_from('[[rule]]\nname = "x"\naction = "deny"\nprogram = "rm"\nprincipals = "robots"\n')


def test_nobody_signs_in_as_a_machine() -> None:
    with pytest.raises(SignInRefused, match="is a machine"):
        resolve_approver(ident("s-1", "deploy-web"), {}, ["deploy-web"])
    assert resolve_approver(ident("s-2", "carol"), {}, ["deploy-web"])[0] == "carol"


# -- the machines' state: tokens spent once ------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path / "state.db")


def exchange(directory: Directory, ca: asyncssh.SSHKey, token: str, key: str | None = None,
             machine_name: str = "deploy-web") -> Any:
    return directory.exchange(ca, key or public(), machine=machine_name, identity=f"{ISSUER}#s-{token}",
                              token=token, token_expires=NOW, workload={"repository": "acme/web"}, ttl=300)


def test_a_token_is_exchanged_once(directory: Directory) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    issued = exchange(directory, ca, "jti-1")
    assert directory.machine_grant(issued.serial) == ("deploy-web", {"repository": "acme/web"})
    fingerprint = issued.certificate.key.get_fingerprint()
    assert directory.certificate_allowed("deploy-web", issued.serial, fingerprint) is None
    with pytest.raises(TokenReplayed, match="already exchanged"):
        exchange(directory, ca, "jti-1")
    assert directory.machine_grant(12345) is None


def test_a_refused_exchange_leaves_the_token_unspent(directory: Directory) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(SSOError, match="no public key"):
        directory.exchange(ca, "", machine="deploy-web", identity="i", token="jti-2", token_expires=NOW,
                           workload={}, ttl=300)
    assert exchange(directory, ca, "jti-2").serial


def test_a_revoked_machine_gets_nothing(directory: Directory) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    issued = exchange(directory, ca, "jti-3")
    directory.revoke("deploy-web", "ops")
    with pytest.raises(SSOError, match="revoked"):
        exchange(directory, ca, "jti-4")
    fingerprint = issued.certificate.key.get_fingerprint()
    assert directory.certificate_allowed("deploy-web", issued.serial, fingerprint) == "user deploy-web has been revoked"


# -- the shell gate ------------------------------------------------------------------------------------


def info(kind: SessionKind, command: str | None = None, *, allow_shell: bool) -> SessionInfo:
    return SessionInfo(session_id="s", channel=1, user="deploy-web", target="db-1", login="root",
                       client_address="127.0.0.1:1", client_version="", kind=kind, command=command,
                       machine=True, allow_shell=allow_shell)


@pytest.mark.parametrize(("kind", "command", "refused"), [
    (SessionKind.SHELL, None, True),
    (SessionKind.EXEC, "bash", True),
    (SessionKind.EXEC, "sh -s", True),
    (SessionKind.EXEC, "python3 -", True),
    (SessionKind.EXEC, "systemctl restart web", False),
    (SessionKind.EXEC, "bash -c 'systemctl restart web'", False),
    (SessionKind.SUBSYSTEM, None, False),
])
def test_machines_run_commands_not_shells(kind: SessionKind, command: str | None, refused: bool) -> None:
    gate = ShellGateStage()
    refusal = asyncio.run(gate.gate(info(kind, command, allow_shell=False), Session()))
    assert bool(refusal) is refused
    if refusal:
        assert "allow_shell = false" in refusal and "machine deploy-web" in refusal
    assert asyncio.run(gate.gate(info(kind, command, allow_shell=True), Session())) is None


def test_only_an_exchanged_certificate_is_the_machine(tmp_path: Path, directory: Directory) -> None:
    from bastion.auth.machines import Machines
    from bastion.core.policy import Identity

    ca = asyncssh.generate_private_key("ssh-ed25519")
    machines = Machines(config(entry(groups=["deployers"])), cast(Any, None), directory, cast(Any, None))
    exchanged = exchange(directory, ca, "jti-5")
    # An operator's `bastion ca sign-login --user deploy-web` is a login certificate, not a machine's.
    signed = directory.issue(ca, public(), user="deploy-web", identity="operator:root", ttl=300)

    def identity(user: str, issued: Any) -> Identity | str | None:
        return asyncio.run(machines.identity(user, issued.certificate))

    found = identity("deploy-web", exchanged)
    assert isinstance(found, Identity) and found.machine and found.groups == frozenset({"deployers"})
    assert found.workload == (("repository", "acme/web"),) and found.allow_shell is False
    assert identity("deploy-web", signed) == "certificate was not issued to this machine by a token exchange"
    assert identity("alice", signed) is None  # a person's certificate: not the machines' business
    assert identity("deploy-api", exchanged) == "certificate was issued to another machine"


def test_check_counts_machines_as_reaching_but_never_as_approvers() -> None:
    from bastion.cli.check import findings

    cfg = parse_config({
        "web": {}, "users": {"alice": {"groups": ["ops"]}},
        "machines": [entry(groups=["deployers"])],
        "targets": {"web-1": {"address": "10.0.0.7", "logins": ["deploy"], "groups": ["deployers"]}},
    })
    text = """
[[rule]]
name = "machines-never-delete"
action = "deny"
program = "rm"
groups = ["deployers"]
principals = "machines"

[[rule]]
name = "deploys-need-approval"
action = "approve"
program = "deploy"
approvers = ["deployers"]
"""
    said = [str(f) for f in findings(cfg, rules_from(text), pinned=lambda _: True, resolved={})]
    assert not [line for line in said if "reach" in line or "never match" in line], said
    assert any("approver group 'deployers' has no configured members" in line for line in said), said
    without = parse_config({"users": {"alice": {"groups": ["deployers"]}}})
    said = [str(f) for f in findings(without, rules_from(text), pinned=lambda _: True, resolved={})]
    assert any("'machines-never-delete'" in line and "none is configured" in line for line in said), said


def test_jobs_are_told_the_name_to_reach_the_bastion_by(tmp_path: Path, directory: Directory) -> None:
    from bastion.auth.machines import Machines
    from bastion.state.keys import KeyStore

    keys = KeyStore(tmp_path / "keys").load()
    everywhere = {"listen": "0.0.0.0:2222", "web": {"public_url": "https://bastion.example.com"}}
    settings = Machines(config(entry(), **everywhere), keys, directory, cast(Any, None)).client_settings()
    assert settings["bastion"] == {"host": "bastion.example.com", "port": 2222}
    assert settings["known_hosts"][0].startswith("[bastion.example.com]:2222 ")
    named = Machines(config(entry(), **everywhere, names=["ssh.example.com"]), keys, directory,
                     cast(Any, None)).client_settings()
    assert named["bastion"]["host"] == "ssh.example.com"
