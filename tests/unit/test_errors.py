"""Errors that reach a user or an HTTP answer: each is a BastionError carrying what it maps to."""

from __future__ import annotations

import click
import pytest

from bastion.auth.directory import SSOError, TooManyCertificates
from bastion.auth.identity import SignInRefused
from bastion.auth.oidc import OIDCClient, OIDCError, SignInUnavailable
from bastion.cli.common import failure
from bastion.cli.screening import CannotCheck
from bastion.config import OIDCSettings
from bastion.errors import BastionError, ConfigError
from bastion.stages.pipeline import StageFailed
from bastion.state.approvals import ApprovalError


@pytest.mark.parametrize(("error", "exit_code", "http_status"), [
    (ConfigError, 1, 500),
    (SSOError, 1, 403),
    (TooManyCertificates, 1, 429),
    (OIDCError, 1, 403),
    (SignInUnavailable, 1, 502),
    (SignInRefused, 1, 403),
    (ApprovalError, 1, 409),
    (CannotCheck, 2, 500),
])
def test_each_error_says_what_it_maps_to(error: type[BastionError], exit_code: int, http_status: int) -> None:
    exc = error("what happened")
    assert isinstance(exc, BastionError) and (exc.exit_code, exc.http_status) == (exit_code, http_status)
    assert str(exc) == exc.reason == "what happened"


def test_a_failed_stage_ends_its_session_with_255_and_names_the_stage() -> None:
    exc = StageFailed("recorder", "recordings/ is not writable")
    assert (exc.exit_code, exc.stage, exc.reason) == (255, "recorder", "recordings/ is not writable")
    assert str(exc) == "recorder: recordings/ is not writable"


def test_the_cli_ends_with_the_errors_reason_and_exit_status() -> None:
    ended = failure(CannotCheck("bastion.toml sets no rules_file"))
    assert isinstance(ended, click.ClickException)
    assert (ended.message, ended.exit_code) == ("bastion.toml sets no rules_file", 2)
    assert failure(ConfigError("x")).exit_code == 1


async def test_a_sign_in_that_cannot_reach_its_provider_is_unavailable() -> None:
    client = OIDCClient(OIDCSettings(issuer="http://127.0.0.1:9", client_id="bastion"))
    with pytest.raises(SignInUnavailable) as err:
        await client.start_authorization("http://127.0.0.1/auth/callback")
    assert err.value.http_status == 502 and "openid-configuration" in err.value.reason
