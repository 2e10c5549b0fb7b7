"""The OpenID Connect client against the real provider (node oidc-provider): ID token checks
and device codes."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bastion.auth.oidc import OIDCClient, OIDCError
from bastion.config import OIDCSettings
from tests.support.idp import OpenIDProvider

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory):
    provider = OpenIDProvider(tmp_path_factory.mktemp("idp"), {"carol": {"groups": ["dba"]}},
                              ["http://127.0.0.1:9/auth/callback"], device_code_ttl=2).start()
    yield provider
    provider.stop()


def test_id_tokens_are_checked_against_the_provider(idp: OpenIDProvider) -> None:
    client = OIDCClient(OIDCSettings(issuer=idp.issuer, client_id=idp.client_id, client_secret=idp.client_secret))
    metadata = asyncio.run(client.metadata())
    assert metadata["issuer"] == idp.issuer
    key = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    now = int(time.time())
    claims = {"iss": idp.issuer, "sub": "carol", "aud": idp.client_id, "iat": now, "exp": now + 300,
              "preferred_username": "carol", "groups": ["dba"]}
    forged = jwt.encode({"alg": "RS256", "kid": "attacker"}, claims, key)
    with pytest.raises(OIDCError, match="signature"):
        asyncio.run(client.verify_id_token(forged))
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    unsigned = f"{b64({'alg': 'none'})}.{b64(claims)}."
    with pytest.raises(OIDCError):
        asyncio.run(client.verify_id_token(unsigned))
    with pytest.raises(OIDCError, match="no ID token"):
        asyncio.run(client.verify_id_token(""))
    wrong = OIDCClient(OIDCSettings(issuer=idp.issuer + "/other", client_id="b"))
    with pytest.raises(OIDCError):
        asyncio.run(wrong.metadata())


def test_an_unused_device_code_expires(idp: OpenIDProvider) -> None:
    client = OIDCClient(OIDCSettings(issuer=idp.issuer, client_id=idp.cli_client_id))
    device = asyncio.run(client.start_device())
    assert device.user_code and device.verification_uri.startswith(idp.issuer)
    with pytest.raises(OIDCError, match="expired"):
        asyncio.run(client.finish_device(device))
