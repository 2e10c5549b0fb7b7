from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from bastion.core.rules import Action, CommandRequest, RuleSet, parse_rules
from bastion.core.shellscope import analyze
from bastion.errors import ConfigError
from bastion.rules_file import load_rules


def programs(line: str) -> list[str]:
    return [c.text for c in analyze(line).commands]


@pytest.mark.parametrize(("line", "expected"), [
    ("ls -la", ["ls -la"]),
    ("ls;rm -rf x", ["ls", "rm -rf x"]),
    ("ls  \t-la   &&   rm\t-rf  x", ["ls -la", "rm -rf x"]),
    ("true || rm -rf x | tee y & sleep 1", ["true", "rm -rf x", "tee y", "sleep 1"]),
    ("echo 'rm -rf /'", ["echo rm -rf /"]),
    ('echo "a;b" ; r""m -rf /', ["echo a;b", "rm -rf /"]),
    ("r\\m -rf /", ["rm -rf /"]),
    ("$'\\x72m' -rf /", ["rm -rf /"]),
    ("echo $(rm -rf /tmp/x)", ["rm -rf /tmp/x", "echo $(rm -rf /tmp/x)"]),
    ("echo `rm -rf /tmp/x`", ["rm -rf /tmp/x", "echo `rm -rf /tmp/x`"]),
    ('echo "$(rm -rf /tmp/x)"', ["rm -rf /tmp/x", "echo $(rm -rf /tmp/x)"]),
    ("bash -c 'rm -rf /'", ["bash -c rm -rf /", "rm -rf /"]),
    ("sh -lc \"ls; rm -rf /\"", ["sh -lc ls; rm -rf /", "ls", "rm -rf /"]),
    ("sudo -u postgres psql -c 'drop table x'", ["sudo -u postgres psql -c drop table x",
                                                  "psql -c drop table x"]),
    ("sudo rm -rf /", ["sudo rm -rf /", "rm -rf /"]),
    ("env X=1 Y=2 rm -rf /", ["env X=1 Y=2 rm -rf /", "rm -rf /"]),
    ("X=1 rm -rf /", ["rm -rf /"]),
    ("nohup timeout 5s rm -rf / > /dev/null 2>&1", ["nohup timeout 5s rm -rf /", "timeout 5s rm -rf /", "rm -rf /"]),
    # The alias's text when it is defined; a use, both as written and expanded.
    ("alias x='rm -rf'; x /", ["alias x=rm -rf", "rm -rf", "x /", "rm -rf /"]),
    ("ls\nrm -rf /", ["ls", "rm -rf /"]),
    ("(cd /; rm -rf x)", ["cd /", "rm -rf x"]),
    ("{ rm -rf x; }", ["rm -rf x"]),
    ("find / -delete # rm -rf", ["find / -delete"]),
    ("eval 'rm -rf /'", ["eval rm -rf /", "rm -rf /"]),
])
def test_split(line: str, expected: list[str]) -> None:
    assert programs(line) == expected


def test_unbalanced_quotes_are_unsure_but_still_screened() -> None:
    analysis = analyze("rm -rf / 'oops")
    assert analysis.incomplete
    assert analysis.commands[0].program == "rm"


RULES = """
[defaults]
action = "allow"

[targets."prod-*"]
default = "log"

[[rule]]
name = "no-rm-rf-root"
action = "deny"
message = "Recursive deletes of / are not allowed"
program = "rm"
args = ["-*r*", "/"]

[[rule]]
name = "drop-needs-dba"
action = "approve"
command = "(?i)drop\\\\s+(table|database)"
approvers = ["dba"]
approvals = 2
timeout = "10m"

[[rule]]
name = "no-sftp-on-prod"
action = "deny"
kinds = ["sftp"]
targets = ["prod-*"]

[[rule]]
name = "ops-may-restart"
action = "log"
program = "systemctl"
groups = ["ops"]
"""


@pytest.fixture
def rules(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return load_rules(path)


def ask(rules, command: str, *, target: str = "db-1", kind: str = "exec", groups=("ops",)):  # type: ignore[no-untyped-def]
    return rules.decide(CommandRequest("alice", frozenset(groups), target, "root", kind, command))


@pytest.mark.parametrize(("command", "action", "rule"), [
    ("ls -la", "allow", None),
    ("rm -rf /", "deny", "no-rm-rf-root"),
    ("rm -fr /", "deny", "no-rm-rf-root"),
    ("rm -rf /tmp/x", "allow", None),
    ("ls;rm -rf /", "deny", "no-rm-rf-root"),
    ("ls  &&\trm   -rf   /", "deny", "no-rm-rf-root"),
    ("bash -c 'rm -rf /'", "deny", "no-rm-rf-root"),
    ("sudo -u root rm -rf /", "deny", "no-rm-rf-root"),
    ("$'rm' -rf /", "deny", "no-rm-rf-root"),
    ("echo 'rm -rf /'", "allow", None),
    ("psql -c 'DROP TABLE users'", "approve", "drop-needs-dba"),
    ("psql -c 'drop   table users'; rm -rf /", "deny", "no-rm-rf-root"),
    ("systemctl restart nginx", "log", "ops-may-restart"),
    ("PS1='be''nch> '", "allow", None),
    ("X=1", "allow", None),
])
def test_decisions(rules, command: str, action: str, rule: str | None) -> None:  # type: ignore[no-untyped-def]
    verdict = ask(rules, command)
    assert (verdict.action, verdict.rule) == (action, rule)


def docs_example() -> RuleSet:
    """The rules file the reference shows first in docs/screening.md."""
    page = (Path(__file__).parents[2] / "docs" / "screening.md").read_text()
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    return parse_rules(tomllib.loads(block), text=block)


@pytest.mark.parametrize("command", ["rm -rf /", "rm -R /", "rm -fr /", "rm -Rf /", "rm --recursive /",
                                     "rm --rec /", "rm -r --no-preserve-root /", "sudo rm -R /"])
def test_the_docs_example_denies_recursive_deletes_of_root(command: str) -> None:
    verdict = ask(docs_example(), command)
    assert (verdict.action, verdict.rule) == ("deny", "no-rm-rf-root")


def test_the_docs_example_lets_other_deletes_through() -> None:
    assert ask(docs_example(), "rm -R /tmp/build").action == "allow"


def test_approve_details_and_scopes(rules) -> None:  # type: ignore[no-untyped-def]
    verdict = ask(rules, "psql -c 'drop database x'")
    assert verdict.approvers == ("dba",) and verdict.approvals == 2 and verdict.timeout == 600
    assert ask(rules, "systemctl stop x", groups=("dev",)).action == "allow"
    assert ask(rules, "ls", target="prod-db").action == "log"  # target default
    assert ask(rules, "sftp", kind="sftp", target="prod-db").rule == "no-sftp-on-prod"
    assert ask(rules, "sftp", kind="sftp", target="db-1").action == "allow"


def test_a_rule_for_every_command_says_so_and_an_sftp_rule_needs_no_matcher() -> None:
    rules = parse_rules({"rule": [{"name": "prod-read-only", "action": "deny", "program": "*", "targets": ["prod-*"]},
                                  {"name": "no-sftp", "action": "deny", "kinds": ["sftp"]}]})
    assert ask(rules, "ls", target="prod-1").rule == "prod-read-only"
    assert ask(rules, "ls").action == "allow"
    assert ask(rules, "sftp", kind="sftp").rule == "no-sftp"


def test_unsure_lines_need_approval_where_approval_rules_exist(rules) -> None:  # type: ignore[no-untyped-def]
    verdict = rules.decide(CommandRequest("alice", frozenset(), "db-1", "root", "shell", "ls", unsure=True))
    assert verdict.action == "approve" and verdict.unsure and verdict.approvers == ("dba",)
    plain = parse_rules({})
    assert plain.decide(CommandRequest("a", frozenset(), "t", "r", "shell", "ls", unsure=True)).action == "allow"


def test_actions_are_ordered_by_strictness_and_read_from_their_names() -> None:
    assert sorted(Action, key=lambda a: a.strictness) == [Action.ALLOW, Action.LOG, Action.APPROVE, Action.DENY]
    assert Action.parse("approve") is Action.APPROVE and Action.parse("explode") is None
    assert Action.parse(["deny"]) is None
    rules = parse_rules({"defaults": {"action": "log", "when_unsure": "deny"}, "targets": {"prod-*": {"default": "deny"}}})
    assert (rules.default_action, rules.when_unsure, rules.target_defaults) == (
        Action.LOG, Action.DENY, (("prod-*", Action.DENY),))
    for defaults in ({"action": "explode"}, {"when_unsure": "log"}, {"when_unsure": ["deny"]}):
        with pytest.raises(ConfigError, match="must be one of"):
            parse_rules({"defaults": defaults})
    with pytest.raises(ConfigError, match="expected default = one of allow, log, approve, deny"):
        parse_rules({"targets": {"prod-*": {"default": "block"}}})


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname = "x"\naction = "explode"\n', "rules.toml:1: rule 'x': action must be one of"),
    ('\n\n[[rule]]\nname = "x"\naction = "deny"\ncommand = "(unclosed"\n', "rules.toml:3: rule 'x': command is not a valid regular expression"),
    ('[[rule]]\nname = "x"\naction = "approve"\n', "an approve rule needs approvers"),
    ('[[rule]]\nname = "x"\naction = "deny"\nprogramm = "rm"\n', "unknown key 'programm'"),
    ('[[rule]]\nname = "x"\naction = "deny"\nprogram = "a"\n[[rule]]\nname = "x"\naction = "deny"\nprogram = "b"\n',
     "rules.toml:5: a rule named 'x' exists already"),
    ('[[rule]]\nname = "a"\naction = "log"\ncommand = "a"\n\n[[rule]]\nname = "everything"\naction = "deny"\n'
     'targets = ["prod-*"]\n', "rules.toml:6: rule 'everything': says nothing about which commands it matches"),
    ('[[rule]]\nname = "x"\naction = "deny"\nkinds = ["shell", "sftp"]\nprogram = []\ncommand = ""\n',
     "rules.toml:1: rule 'x': says nothing about which commands it matches"),
    ('[[rule]\n', "not valid TOML"),
    ('[[rule]]\nname = "x"\naction = "deny"\nkinds = ["ftp"]\n', "unknown kind 'ftp'"),
])
def test_malformed_rules_name_file_line_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert message in err.value.reason and str(path) in err.value.reason


def test_line_tracker_after_a_burst_of_output() -> None:
    from bastion.core.linetrack import UNFED_LIMIT, LineTracker

    tracker = LineTracker(80, 24, clock=time.monotonic)
    tracker.output(b"\x1b[31mlog line\x1b[0m\r\n" * (UNFED_LIMIT // 10))  # more than is kept
    tracker.output(b"$ ")
    tracker.typed(b"rm -rf /")
    tracker.output(b"rm -rf /")
    line = tracker.submitted()
    assert (line.text, line.unsure) == ("rm -rf /", False)
    assert tracker.prompt == "$ "
