"""`bastion check`: strict addresses, and what it says about a config that loads but will not work."""

from __future__ import annotations

import tomllib
from pathlib import Path

import asyncssh
import pytest
from click.testing import CliRunner

from bastion.cli.check import findings
from bastion.cli.main import main
from bastion.config import parse_config, parse_host_port
from bastion.core.rules import parse_rules
from bastion.errors import ConfigError

KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def config(**extra: object):  # type: ignore[no-untyped-def]
    return parse_config({
        "listen": "127.0.0.1:2200",
        "users": {"alice": {"keys": [KEY], "groups": ["ops"]}, "bob": {"keys": [KEY], "groups": ["dba"]}},
        "targets": {"db-1": {"address": "db-1.internal:2222", "logins": ["root"], "groups": ["ops"]}},
        **extra,
    })


@pytest.mark.parametrize(("text", "says"), [
    ("2201", '\'2201\' has no host (2201 looks like a port: write "127.0.0.1:2201"'),
    ("127.0.0.1;2822", "'127.0.0.1;2822' is not a host name or address (';' cannot be in a host name)"),
    ("10.0.0.300:22", "'10.0.0.300' in '10.0.0.300:22' is not an IPv4 address"),
    ("01.2.3.4:22", "is not an IPv4 address"),
    ("db 1:22", "is not a host name or address"),
    ("h:65536", "bad port '65536'"),
    ("h:0", "bad port '0'"),
    ("h:+22", "bad port '+22'"),
    ("[db-1]:22", "'db-1' in '[db-1]:22' is not an IPv6 address"),
    ("fe80::zz", "is not an address (an IPv6 address with a port is written [::1]:22)"),
])
def test_addresses_are_parsed_strictly(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_host_port(text, default_port=22, where="b.toml: listen")
    assert caught.value.reason.startswith("b.toml: listen: ") and says in caught.value.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.5", ("10.0.0.5", 22)), ("db-1.internal.:2222", ("db-1.internal.", 2222)),
    ("::1", ("::1", 22)), ("[2001:db8::1]:2200", ("2001:db8::1", 2200)), ("0.0.0.0:22", ("0.0.0.0", 22)),
])
def test_good_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=22, where="t") == expected


def test_only_listeners_may_take_any_free_port() -> None:
    assert parse_host_port("127.0.0.1:0", default_port=22, where="t", any_port=True) == ("127.0.0.1", 0)
    assert config(listen="127.0.0.1:0").listen_port == 0
    with pytest.raises(ConfigError, match=r"\[targets.db-1\].address: bad port '0'"):
        parse_config({"targets": {"db-1": {"address": "10.0.0.5:0"}}}, path=Path("/etc/b.toml"))


def test_the_issue_examples_name_the_file_and_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/b.toml: listen: '2201' has no host"):
        parse_config({"listen": "2201"}, path=Path("/etc/b.toml"))
    with pytest.raises(ConfigError, match=r"^/etc/b.toml: \[targets.db-1\].address: '127.0.0.1;2822'"):
        parse_config({"targets": {"db-1": {"address": "127.0.0.1;2822"}}}, path=Path("/etc/b.toml"))
    with pytest.raises(ConfigError, match=r"^/etc/b.toml: \[metrics\] listen: '10.0.0.300'"):
        parse_config({"metrics": {"listen": "10.0.0.300:9122"}}, path=Path("/etc/b.toml"))


def lines(cfg, rules_text: str = "", *, pinned: bool = True, resolved=None) -> list[str]:  # type: ignore[no-untyped-def]
    rules = parse_rules(tomllib.loads(rules_text), text=rules_text) if rules_text else None
    return [str(f) for f in findings(cfg, rules, pinned=lambda _: pinned,
                                     resolved=resolved if resolved is not None else {})]


def test_check_says_where_it_listens_and_what_targets_resolve_to() -> None:
    said = lines(config(metrics={"listen": "127.0.0.1:9122"}), resolved={"db-1.internal": ["10.0.0.5"]})
    assert said[0] == "listen: ssh -J connects to 127.0.0.1:2200 (this machine only, port 2200)"
    assert "metrics: http://127.0.0.1:9122/metrics, /healthz, /readyz" in said
    assert "target db-1 -> db-1.internal:2222 (10.0.0.5), logins root" in said
    assert not [line for line in said if line.startswith("warning")]


def test_check_warns_about_what_loads_but_will_not_work() -> None:
    said = lines(config(targets={"db-1": {"address": "db-1.internal", "logins": [], "groups": ["nobody"]}}),
                 pinned=False, resolved={"db-1.internal": "Name or service not known"})
    assert "warning: target db-1: db-1.internal does not resolve (Name or service not known); " \
           "sessions to it will fail" in said
    assert any(line.startswith("warning: target db-1: no pinned host key") for line in said)
    assert "warning: target db-1: no logins; nobody can log into it" in said
    assert any(line.startswith("warning: target db-1: no configured user may reach it") for line in said)


RULES = """
[[rule]]
name = "web-only"
action = "deny"
program = "*"
targets = ["web-*"]

[[rule]]
name = "as-postgres"
action = "deny"
program = "*"
logins = ["postgres"]

[[rule]]
name = "interns"
action = "deny"
program = "*"
groups = ["interns"]

[[rule]]
name = "drops"
action = "approve"
program = "psql"
approvers = ["dba", "security"]
approvals = 2
"""


def test_check_warns_about_rules_that_can_never_match_and_approvers_nobody_is() -> None:
    said = [line for line in lines(config(), RULES) if line.startswith("warning: rule")]
    assert said == [
        "warning: rule 'web-only' (line 2) can never match: no target is named web-*",
        "warning: rule 'as-postgres' (line 8) can never match: no target has a login postgres",
        "warning: rule 'interns' (line 14) can never match: no configured user is in group interns",
        "warning: rule 'drops' (line 20): approver group 'security' has no configured members; "
        "nobody can approve, and its requests will expire",
        "warning: rule 'drops' (line 20) needs 2 approvers but groups dba, security have 1 members",
    ]


def test_with_single_sign_on_groups_may_come_from_the_provider() -> None:
    cfg = config(web={"listen": "127.0.0.1:8080"},
                 oidc={"issuer": "https://idp.example", "client_id": "b", "client_secret": "s"})
    said = [line for line in lines(cfg, RULES) if line.startswith("warning: rule")]
    assert "warning: rule 'interns' (line 14) can never match" not in " ".join(said)
    assert any("'security' has no configured members; only users signing in with single sign-on" in line
               for line in said)


def test_keys_dir_naming_a_file_names_the_key_and_the_config(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text('keys_dir = "b.toml"\n')
    result = CliRunner().invoke(main, ["check", "-c", str(tmp_path / "b.toml")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path / 'b.toml'}: keys_dir = '{tmp_path / 'b.toml'}': "
                                     f"{tmp_path / 'b.toml'} is a file, not a folder for keys")


def test_approvals_list_says_when_nothing_is_pending(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text("")
    result = CliRunner().invoke(main, ["approvals", "list", "-c", str(tmp_path / "b.toml")])
    assert result.exit_code == 0
    assert result.output == "no approval requests pending (--all lists recent ones in any state)\n"
    result = CliRunner().invoke(main, ["approvals", "list", "--all", "-c", str(tmp_path / "b.toml")])
    assert result.output == "no approval requests yet\n"


def test_the_grafana_dashboard_reads_only_metrics_the_bastion_exports() -> None:
    import json
    import re

    from bastion import metrics

    dashboard = json.loads((Path(__file__).parents[2] / "contrib" / "grafana" / "bastion.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b((?:bastion|process)_[a-z_]+)", expr)}
    families = list(metrics.REGISTRY.collect())
    exported = {s.name for family in families for s in family.samples}
    exported |= {f"{family.name}_total" for family in families if family.type == "counter"}  # no series yet
    exported |= {"bastion_sessions_active", "bastion_connections_open", "bastion_session_bytes_total",
                 "bastion_approvals_pending", "bastion_recorder_backlog_bytes", "bastion_recorder_lag_seconds"}
    assert used and used <= exported, used - exported
