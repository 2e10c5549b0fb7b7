from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from bastion.config import (
    MaskingSinks,
    OnFailure,
    changed_settings,
    load_config,
    parse_config,
    parse_host_port,
    workers_for,
)
from bastion.core.durations import parse_duration
from bastion.errors import ConfigError

KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def base(**extra: object) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:2200",
        "users": {"alice": {"keys": [KEY], "groups": ["ops"]}},
        "targets": {"db-1": {"address": "10.0.0.5", "aliases": ["db-1.internal"],
                             "logins": ["root"], "groups": ["ops"]}},
        **extra,
    }


def test_minimal_config_and_defaults() -> None:
    config = parse_config(base(), path=Path("/etc/bastion/bastion.toml"))
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 2200)
    assert config.keys_dir == Path("/etc/bastion/hostkeys")
    assert config.recordings_dir == Path("/etc/bastion/recordings")
    target = config.targets["db-1"]
    assert (target.host, target.port, target.names) == ("10.0.0.5", 22, ("db-1", "db-1.internal"))
    assert config.certificates.ttl == 120 and config.certificates.backdate == 30
    assert config.users["alice"].groups == frozenset({"ops"})


def test_recording_and_masking_settings() -> None:
    config = parse_config(base())
    assert config.recording.on_failure is OnFailure.REFUSE
    assert (config.masking.hold_ms, config.masking.hold_seconds) == (30, 0.03)
    assert config.masking.sinks is MaskingSinks.BOTH
    config = parse_config(base(recording={"on_failure": "continue"},
                               masking={"hold_ms": 100, "disable": ["private-key", "card-number"],
                                        "sinks": "recording"}))
    assert config.recording.on_failure is OnFailure.CONTINUE
    assert config.masking.sinks is MaskingSinks.RECORDING
    assert config.masking.hold_seconds == 0.1 and not config.masking.pem
    assert "card-number" not in [d.name for d in config.masking.detectors()]
    with pytest.raises(ConfigError, match='on_failure: must be "refuse" or "continue"'):
        parse_config(base(recording={"on_failure": "ignore"}))
    with pytest.raises(ConfigError, match='sinks: must be "both" or "recording"'):
        parse_config(base(masking={"sinks": "screen"}))


def test_changed_settings_are_named_as_the_file_names_them() -> None:
    path = Path("/etc/bastion/bastion.toml")
    running = parse_config(base(), path=path)
    assert changed_settings(running, parse_config(base(), path=path)) == []  # keys compare by value
    fresh = parse_config(base(listen="0.0.0.0:2200", rules_file="rules.toml",
                              users={"alice": {"keys": [KEY], "groups": ["ops", "dba"]}}), path=path)
    assert changed_settings(running, fresh) == ["rules_file", "users", "listen"]


@pytest.mark.parametrize(
    ("host", "port", "found"),
    [("db-1", 22, "db-1"), ("DB-1.internal", 22, "db-1"), ("db-1.", 22, "db-1"),
     ("db-1", 2222, None), ("db-2", 22, None), ("10.0.0.5", 22, None)],
)
def test_find_target_by_name_or_alias(host: str, port: int, found: str | None) -> None:
    target = parse_config(base()).find_target(host, port)
    assert (target.name if target else None) == found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"listne": "x"}, "unknown key 'listne'"),
        ({"listen": "127.0.0.1:99999"}, "bad port"),
        ({"users": {"alice": {"keys": ["ssh-ed25519 garbage"]}}},
         "[users.alice].keys: not an OpenSSH public key"),
        ({"users": {"alice": {"keys": [KEY], "group": ["ops"]}}}, "[users.alice]: unknown key 'group'"),
        ({"targets": {"db-1": {"logins": ["root"]}}}, "[targets.db-1].address: missing"),
        ({"targets": {"db-1": {"address": "h", "logins": ["Root Login"]}}}, "not a valid login name"),
        ({"targets": {"db-1": {"address": "h", "logins": "root"}}}, "expected list"),
        ({"targets": {"a": {"address": "h", "aliases": ["x"]}, "b": {"address": "h", "aliases": ["x"]}}},
         "name 'x' is used by targets 'a' and 'b'"),
        ({"certificates": {"ttl": "1s"}}, "ttl: must be between"),
        ({"certificates": {"ttl": "soon"}}, "expected a duration"),
        ({"grace_period": True}, "grace_period: expected a duration"),
    ],
)
def test_mistakes_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(base(**change), path=Path("/x/bastion.toml"))
    assert message in err.value.reason
    assert "/x/bastion.toml" in err.value.reason


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('listen = "127.0.0.1:2200"\n[users.alice\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in err.value.reason and "line 2" in err.value.reason


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("text", "seconds"), [(90, 90), ("30s", 30), ("2m", 120), ("8h", 28800),
                                               ("90d", 7776000), ("1w", 604800), ("15", 15)])
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1", "2 minutes", "", "1.5h", -5])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "expected"), [("h", ("h", 22)), ("h:2222", ("h", 2222)),
                                                ("[::1]:2200", ("::1", 2200)), ("[::1]", ("::1", 22))])
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=22, where="t") == expected


def test_starter_config_from_init_is_valid(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bastion.cli.main import main

    result = CliRunner().invoke(main, ["init", str(tmp_path / "b.toml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "b.toml").read_text().replace("ssh-ed25519 AAAA... alice@laptop", KEY)
    (tmp_path / "b.toml").write_text(text)
    config = load_config(tmp_path / "b.toml")
    assert "db-1" in config.targets


def test_workers_one_by_default_a_number_or_one_per_core() -> None:
    assert parse_config(base()).workers == 1
    assert parse_config(base(workers=3)).workers == 3
    assert parse_config(base(workers="auto")).workers == (os.cpu_count() or 1)


@pytest.mark.parametrize(("value", "problem"), [
    (0, "expected a number from 1 to 64"), (65, "expected a number from 1 to 64"),
    ("many", "expected a number from 1 to 64"), (True, "expected a number from 1 to 64"),
])
def test_workers_out_of_range_are_named(value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"workers = {value!r}: {problem}"):
        parse_config(base(workers=value))


def test_workers_cannot_share_any_free_port() -> None:
    with pytest.raises(ConfigError, match=r"workers = 2: the workers share their ports, and listen asks for any free port"):
        parse_config(base(workers=2, listen="127.0.0.1:0"))
    web = {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080"}
    with pytest.raises(ConfigError, match=r"and \[web\] listen asks for any free port"):
        parse_config(base(workers=2, web=web))
    assert parse_config(base(listen="127.0.0.1:0")).workers == 1  # one process: any port will do
    with pytest.raises(ConfigError, match=r"--workers 2: the workers share their ports"):
        workers_for(parse_config(base(listen="127.0.0.1:0")), 2)
