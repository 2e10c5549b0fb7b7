"""The web service's pure parts and its peers one at a time: signed cookies, who an identity
acts as, config errors, the chat notifier against an HTTP receiver in this process (ID token
checks against the real OpenID provider are in tests/e2e/test_oidc_e2e.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from bastion.auth.identity import SignInRefused, resolve_approver
from bastion.auth.oidc import OIDCClient, ProviderIdentity
from bastion.config import NotifyDestination, OIDCSettings, UserConfig, parse_config
from bastion.core.masker import TextMasker
from bastion.errors import ConfigError
from bastion.state.approvals import ApprovalError, ApprovalState, ApprovalStore, Decision, command_hash
from bastion.web.notify import Notifier, slack_payload
from bastion.web.service import SignedCookies
from tests.support.idp import WebhookReceiver
from tests.support.stores import live_store

MASKER = TextMasker()  # the built-in detectors


def test_signed_cookies_round_trip_and_refuse_tampering(tmp_path: Path) -> None:
    cookies = SignedCookies.load_or_create(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    value = cookies.dumps("session", {"user": "carol"}, 60)
    assert cookies.loads("session", value)["user"] == "carol"  # type: ignore[index]
    assert cookies.loads("login", value) is None  # made for another purpose
    _, signature = value.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"user": "mallory", "exp": 2**40}).encode()).decode().rstrip("=")
    assert cookies.loads("session", f"{forged}.{signature}") is None
    assert cookies.loads("session", value[:-2] + "AA") is None
    assert cookies.loads("session", "") is None and cookies.loads("session", "a.b.c") is None
    assert cookies.loads("session", cookies.dumps("session", {"user": "carol"}, -1)) is None  # expired
    other = SignedCookies.load_or_create(tmp_path / "other-key")
    assert other.loads("session", value) is None
    assert SignedCookies.load_or_create(tmp_path / "key").loads("session", value) is not None  # key persists


def identity(sub: str, name: str, groups: tuple[str, ...] = ()) -> ProviderIdentity:
    return ProviderIdentity("https://idp.test", sub, name, frozenset(groups))


def test_identities_map_to_bastion_users() -> None:
    users = {
        "carol": UserConfig("carol", groups=frozenset({"dba"}), oidc_subject="sub-carol"),
        "bob": UserConfig("bob", groups=frozenset({"ops"})),
    }
    # A bound subject is that user whatever name the provider gives.
    assert resolve_approver(identity("sub-carol", "carol.smith", ("idp-group",)), users) == (
        "carol", frozenset({"dba", "idp-group"}))
    # Someone else calling themselves carol is refused: carol is bound to another subject.
    with pytest.raises(SignInRefused, match="bound to a different identity"):
        resolve_approver(identity("sub-mallory", "carol"), users)
    # Unbound config users take the provider's word for the name; groups add up.
    assert resolve_approver(identity("sub-bob", "bob", ("dev",)), users) == ("bob", frozenset({"ops", "dev"}))
    assert resolve_approver(identity("x", "zoe", ("dba",)), users) == ("zoe", frozenset({"dba"}))
    with pytest.raises(SignInRefused, match="not a valid bastion user name"):
        resolve_approver(identity("x", "../evil"), users)


def config(**extra: object) -> dict[str, object]:
    return {"users": {}, "targets": {}, **extra}


@pytest.mark.parametrize(("data", "message"), [
    (config(oidc={"issuer": "https://idp", "client_id": "b"}), r"\[oidc\] needs \[web\]"),
    (config(web={}, oidc={"client_id": "b"}), "issuer: missing"),
    (config(web={}, oidc={"issuer": "https://idp"}), "client_id: missing"),
    (config(web={}, oidc={"issuer": "https://idp", "client_id": "b", "scopes": ["profile"]}),
     'must include "openid"'),
    (config(web={}, oidc={"issuer": "https://idp", "client_id": "b", "client_secret": "x",
                          "client_secret_file": "y"}), "not both"),
    (config(web={}, oidc={"issuer": "https://idp", "client_id": "b", "client_secret_file": "missing"}),
     "cannot read missing"),
    (config(web={"tls_cert": "c.pem"}), "tls_cert and tls_key go together"),
    (config(web={"public_url": "ftp://x"}), "public_url"),
    (config(web={"session_ttl": "2d"}), "session_ttl"),
    (config(web={"colour": "red"}), "unknown key 'colour'"),
    (config(notify=[{"kind": "slack", "url": "https://x"}]), r"needs \[web\]"),
    (config(web={}, notify=[{"kind": "irc", "url": "https://x"}]), "kind: must be one of"),
    (config(web={}, notify=[{"kind": "slack"}]), "url: missing"),
    (config(web={}, notify=[{"kind": "slack", "url": "https://x", "channel": "#a"}]), "unknown key 'channel'"),
    (config(users={"a": {"oidc_subject": "s"}, "b": {"oidc_subject": "s"}}), "same oidc_subject"),
])
def test_web_config_errors_name_the_problem(data: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, path=tmp_path / "bastion.toml")


def test_web_config_defaults(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    parsed = parse_config(config(web={"listen": "0.0.0.0:9000", "public_url": "https://b.example/"},
                                 oidc={"issuer": "https://idp", "client_id": "b", "client_secret_file": "secret"},
                                 notify=[{"kind": "slack", "url": "https://hooks.slack.test/x"}]),
                          path=tmp_path / "bastion.toml")
    assert parsed.web is not None and parsed.web.listen_port == 9000
    assert parsed.web.public_url == "https://b.example" and parsed.web.session_ttl == 900
    assert parsed.oidc is not None and parsed.oidc.client_secret == "s3cret"
    assert parsed.notify == (NotifyDestination("slack", "https://hooks.slack.test/x", "slack"),)


def request(store: ApprovalStore, command: str = "rm -rf /srv/cache", approvals: int = 1):
    return store.create(session="s1", requester="alice", target="db-1", login="root", command=command,
                        rule="r", approvers=("dba",), approvals=approvals, timeout=60, screen="$ " + command)


def test_store_links_bind_and_single_use(tmp_path: Path) -> None:
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    assert len(made.token) >= 32 and store.by_token(made.token) == made and store.by_token("") is None
    assert made.screen == "$ rm -rf /srv/cache"
    with pytest.raises(ApprovalError, match="different command"):
        store.decide(made.id, "carol", Decision.APPROVE, groups=frozenset({"dba"}), digest="0" * 64)
    with pytest.raises(ApprovalError, match="not in an approver group"):
        store.decide(made.id, "erin", Decision.APPROVE, groups=frozenset({"dev"}))
    assert store.decide(made.id, "carol", Decision.APPROVE, groups=frozenset({"dba"}), identity="idp#carol") == "approved"
    with pytest.raises(ApprovalError, match="already approved by carol"):
        store.decide(made.id, "dave", Decision.DENY, groups=frozenset({"dba"}))
    assert store.state(made.id) == ("approved", [("carol", "approve", "idp#carol")])
    two = request(store, approvals=2)
    assert store.decide(two.id, "carol", Decision.APPROVE) == "pending"
    with pytest.raises(ApprovalError, match="carol has already decided"):
        store.decide(two.id, "carol", Decision.APPROVE)
    assert store.decide(two.id, "dave", Decision.APPROVE) == "approved"


def test_store_states_and_decisions_are_members_kept_as_their_names(tmp_path: Path) -> None:
    import sqlite3

    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    assert made.state is ApprovalState.PENDING
    with pytest.raises(ApprovalError, match="decision must be approve or deny"):  # a name is not a decision
        store.decide(made.id, "carol", "deny", groups=frozenset({"dba"}))  # type: ignore[arg-type]
    assert store.decide(made.id, "carol", Decision.DENY, groups=frozenset({"dba"})) is ApprovalState.DENIED
    state, [(_, decision, _)] = store.state(made.id)
    assert state is ApprovalState.DENIED and decision is Decision.DENY
    denied = store.get(made.id)
    assert denied is not None and denied.state is ApprovalState.DENIED
    rows = sqlite3.connect(tmp_path / "state.db").execute(
        "SELECT r.state, d.decision FROM approval_requests r JOIN approval_decisions d ON d.request = r.id")
    assert rows.fetchall() == [("denied", "deny")]
    assert store.cancel(request(store).id) and store.state(store.recent(1)[0].id)[0] is ApprovalState.CANCELLED


def test_store_keeps_commands_masked_and_binds_decisions_to_the_command_as_submitted(tmp_path: Path) -> None:
    import sqlite3

    command = "mysql --password=Tr0ub4dor-and-3 -e 'drop table users'"
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store, command)
    [(stored,)] = sqlite3.connect(tmp_path / "state.db").execute("SELECT command FROM approval_requests")
    assert stored == made.command == "mysql --password=*************** -e 'drop table users'"
    assert made.command_hash == command_hash(command)
    with pytest.raises(ApprovalError, match="different command"):  # what is shown is not what runs
        store.decide(made.id, "carol", Decision.APPROVE, groups=frozenset({"dba"}), digest=command_hash(made.command))
    assert store.decide(made.id, "carol", Decision.APPROVE, groups=frozenset({"dba"}), digest=command_hash(command)) == "approved"


def test_store_adds_new_columns_to_an_old_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE approval_requests (id TEXT PRIMARY KEY, session TEXT NOT NULL, requester TEXT NOT NULL,
            target TEXT NOT NULL, login TEXT NOT NULL, command TEXT NOT NULL, command_hash TEXT NOT NULL,
            rule TEXT NOT NULL, approvers TEXT NOT NULL, approvals_needed INTEGER NOT NULL, created REAL NOT NULL,
            expires REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending');
        CREATE TABLE approval_decisions (request TEXT NOT NULL, approver TEXT NOT NULL, decision TEXT NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (request, approver));
        INSERT INTO approval_requests VALUES ('ABC123','s','alice','db','root','ls','h','r','dba',1,0,1,'expired');
    """)
    old.close()
    store = live_store(path, masker=MASKER)
    assert store.get("ABC123") is not None and store.get("ABC123").token == ""  # type: ignore[union-attr]
    assert request(store).token


def test_notifier_retries_then_reports_what_failed(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    try:
        store_request = request(live_store(tmp_path / "state.db", masker=MASKER))
        receiver.fail_first["/flaky"] = 2
        receiver.status_for["/gone"] = 404
        receiver.status_for["/down"] = 503
        notifier = Notifier([NotifyDestination("slack", receiver.url("/flaky"), "flaky"),
                             NotifyDestination("webhook", receiver.url("/gone"), "gone"),
                             NotifyDestination("mattermost", receiver.url("/down"), "down"),
                             NotifyDestination("webhook", "http://127.0.0.1:1/nothing", "closed")],
                            masker=MASKER, backoff=0.01)
        failures = asyncio.run(notifier.notify(store_request, "https://bastion.test/approvals/t"))
        reasons = {f.destination: f.reason for f in failures}
        assert set(reasons) == {"gone", "down", "closed"}
        assert reasons["gone"] == "HTTP 404" and reasons["down"] == "HTTP 503"
        paths = [path for path, _ in receiver.posts]
        assert paths.count("/flaky") == 1  # delivered on the third try
        assert paths.count("/gone") == 1  # a 4xx is not retried (the receiver recorded it once)
        assert paths.count("/down") == 4  # a 5xx is retried: four attempts in all
    finally:
        receiver.close()


def test_slack_payload_keeps_secrets_and_fences_out(tmp_path: Path) -> None:
    made = request(live_store(tmp_path / "s.db", masker=MASKER),
                   command="PASSWORD=S3cretPassw0rd mysql -e 'drop table x' ```\n* <!channel>")
    payload = slack_payload(made, "https://b/approvals/t", MASKER)
    text = json.dumps(payload)
    assert "S3cretPassw0rd" not in text
    code = payload["blocks"][2]["text"]["text"]
    assert code.startswith("```\n") and code.endswith("\n```") and code.count("```") == 2


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_web_service_serves_tls_directly(tmp_path: Path) -> None:
    import ssl

    import aiohttp

    from bastion.demo.openssh import free_port
    from bastion.state.audit import AuditLog
    from bastion.web.service import WebService

    cert, _ = _self_signed(tmp_path)
    port = free_port()
    settings = parse_config(config(web={"listen": f"127.0.0.1:{port}", "tls_cert": "cert.pem", "tls_key": "key.pem"}),
                          path=tmp_path / "bastion.toml")
    assert settings.web is not None and settings.web.public_url == f"https://127.0.0.1:{port}"
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    service = WebService(settings, store, AuditLog(path=tmp_path / "log", masker=MASKER), SignedCookies.load_or_create(tmp_path / "k"),
                         None, masker=MASKER)

    async def run() -> tuple[int, dict[str, str], str]:
        await service.start()
        try:
            trust = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession() as http, http.get(service.link(made), ssl=trust) as response:
                return response.status, dict(response.headers), await response.text()
        finally:
            await service.stop()

    status, headers, body = asyncio.run(run())
    assert status == 200 and "Sign-in is not configured" in body and made.command not in body
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_the_approval_page_shows_session_text_escaped(tmp_path: Path) -> None:
    import html

    import aiohttp

    from bastion.demo.openssh import free_port
    from bastion.state.audit import AuditLog
    from bastion.web.service import SESSION_COOKIE, WebService

    port = free_port()
    settings = parse_config(config(web={"listen": f"127.0.0.1:{port}"}), path=tmp_path / "bastion.toml")
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store, "echo \u202e/ fr- mr \x1b]0;title\x07")
    cookies = SignedCookies.load_or_create(tmp_path / "k")
    service = WebService(settings, store, AuditLog(path=tmp_path / "log", masker=MASKER), cookies, None, masker=MASKER)
    carol = {"user": "carol", "groups": ["dba"], "id": "idp#carol", "csrf": "c"}
    headers = {"Cookie": f"{SESSION_COOKIE}={cookies.dumps(SESSION_COOKIE, carol, 60)}"}

    async def run() -> str:
        await service.start()
        try:
            async with aiohttp.ClientSession() as http, http.get(service.link(made), headers=headers) as response:
                return await response.text()
        finally:
            await service.stop()

    page = html.unescape(asyncio.run(run()))
    assert "Approve" in page and "\u202e" not in page and "\x1b" not in page
    assert page.count("echo \\u202e/ fr- mr \\x1b]0;title\\x07") == 2  # the command and the screen


def test_provider_groups_map_to_bastion_groups(tmp_path: Path) -> None:
    parsed = parse_config(config(web={}, oidc={"issuer": "https://idp", "client_id": "b",
                                               "groups_map": {"okta-dba": "dba", "okta-sre": ["ops", "oncall"]}}),
                          path=tmp_path / "bastion.toml")
    assert parsed.oidc is not None
    client = OIDCClient(parsed.oidc)
    identity = client.identity({"sub": "s", "preferred_username": "carol",
                                "groups": ["okta-dba", "okta-sre", "okta-everyone"]})
    assert identity.groups == {"dba", "ops", "oncall"}  # unmapped provider groups give nothing
    plain = OIDCClient(OIDCSettings(issuer="https://idp", client_id="b"))
    assert plain.identity({"sub": "s", "preferred_username": "c", "groups": "dba"}).groups == {"dba"}
    with pytest.raises(ConfigError, match=r"groups_map\.x: expected a group name"):
        parse_config(config(web={}, oidc={"issuer": "https://idp", "client_id": "b", "groups_map": {"x": 3}}),
                     path=tmp_path / "bastion.toml")
