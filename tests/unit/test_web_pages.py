"""The approval pages as rendered, and the cookies behind them, without a server: hostile
session text stays text, cookies survive a round trip and nothing else, refusals carry their
HTTP status, and the state database is asked off the event loop."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import re
import threading
import time
from pathlib import Path

import asyncssh
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bastion.auth.directory import CERT_RATE, Directory, SSOError, TooManyCertificates
from bastion.auth.identity import SignInRefused
from bastion.auth.oidc import OIDCError
from bastion.core.masker import TextMasker
from bastion.stages.decisions import CommandDecisions, ScreeningContext
from bastion.stages.pipeline import SessionInfo, Stream
from bastion.state.approvals import ApprovalError, ApprovalState, ApprovalStore
from bastion.state.audit import AuditLog
from bastion.state.dbthread import DatabaseThread
from bastion.web import pages
from bastion.web.approvals import ApprovalPages
from bastion.web.cookies import SignedCookies, same_secret
from bastion.web.sessions import LOGIN_COOKIE, SESSION_COOKIE, BrowserSessions, SignedIn
from recorder.transfers import SessionKind
from tests.support.stores import live_store

HOSTILE = "<script>alert('x')</script> \"quoted\" & \u202eevil\u2066 \x1b]0;title\x07"
MASKER = TextMasker()  # the built-in detectors
CAROL = SignedIn("carol", ("dba",), "https://idp#carol", 'c"sr<f>')


def test_autoescaping_is_on_for_every_template() -> None:
    assert pages.TEMPLATES.autoescape is True
    assert set(pages.TEMPLATES.list_templates()) >= {"base.html", "message.html", "request.html", "sign_in.html"}


def test_a_message_escapes_markup_and_quotes() -> None:
    text = pages.render("message.html", title=HOSTILE, heading=HOSTILE, text=HOSTILE)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "\"quoted\"" not in text and "&#34;quoted&#34;" in text and "&#39;x&#39;" in text
    assert html.unescape(text).count(HOSTILE) == 3  # shown as it was, only never as markup


def test_the_signed_in_header_escapes_names_and_attributes() -> None:
    who = SignedIn('<img src=x onerror="1">', ("<b>", '"ops"'), "idp#x", '"><script>x</script>')
    text = pages.render("message.html", title="t", heading="h", text="", who=who)
    assert "<img" not in text and "<script>" not in text
    assert "<b>&lt;img src=x onerror=&#34;1&#34;&gt;</b>" in text
    [csrf] = re.findall(r'name="csrf" value="([^"]*)"', text)
    assert html.unescape(csrf) == who.csrf  # the attribute holds the whole token and nothing more
    assert "(&lt;b&gt;, &#34;ops&#34;)" in text
    assert "(no groups)" in pages.render("message.html", title="t", heading="h", text="",
                                         who=SignedIn("u", (), "idp#u", "t"))


def request(store: ApprovalStore, command: str = HOSTILE, screen: str = "$ " + HOSTILE):
    return store.create(session="s1", requester="alice", target="db-1", login="root", command=command,
                        rule="r", approvers=("dba",), approvals=1, timeout=60, screen=screen)


def approval_pages(store: ApprovalStore, log: io.StringIO | None = None) -> ApprovalPages:
    audit = AuditLog(log or io.StringIO(), masker=MASKER)
    sessions = BrowserSessions(SignedCookies(b"k" * 32), secure=False, ttl=60)
    return ApprovalPages(store, sessions, pages.Refusals(audit), audit, masker=MASKER, public_url="http://b.test",
                         sign_in=True)


def test_the_request_page_shows_session_text_as_escaped_text(tmp_path: Path) -> None:
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    response = approval_pages(store)._page(made, ApprovalState.PENDING, [], CAROL, notice="<script>x</script>")
    assert response.content_type == "text/html"
    text = response.text
    assert text is not None
    assert "<script>" not in text and "\u202e" not in text and "\u2066" not in text and "\x1b" not in text
    # The command and the screen: bidi and control characters written out as escapes.
    shown = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &#34;quoted&#34; &amp; \\u202eevil\\u2066 \\x1b]0;title\\x07"
    assert f"<pre>{shown}</pre>" in text
    assert f'<pre class="screen">$ {shown}</pre>' in text
    assert "<p><b>&lt;script&gt;x&lt;/script&gt;</b></p>" in text
    # The form: the session's token and the command's hash, each whole inside its attribute.
    assert html.unescape(re.findall(r'name="csrf" value="([^"]*)"', text)[-1]) == CAROL.csrf
    assert f'name="command_hash" value="{made.command_hash}"' in text
    # One style element, allowed by the nonce the page's policy names; no scripts at all.
    [nonce] = re.findall(r'<style nonce="([^"]+)">', text)
    assert f"style-src 'nonce-{nonce}'" in response.headers["Content-Security-Policy"]
    assert "<script" not in text and "script-src" not in response.headers["Content-Security-Policy"]


def test_the_request_page_masks_secrets_and_offers_no_form_to_the_requester(tmp_path: Path) -> None:
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store, command="mysql --password=Tr0ub4dor-and-3 -e 'x'", screen="")
    alice = SignedIn("alice", ("dba",), "idp#alice", "t")
    text = approval_pages(store)._page(made, ApprovalState.PENDING, [], alice).text or ""
    assert "Tr0ub4dor" not in text and "(no terminal)" in text
    assert "You cannot approve your own request." in text and "<form method=\"post\"><input" not in text


def test_the_sign_in_page_names_nothing_but_the_request_id(tmp_path: Path) -> None:
    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    service = approval_pages(store)
    response = asyncio.run(service.show(make_mocked_request("GET", f"/approvals/{made.token}",
                                                            match_info={"token": made.token})))
    text = response.text or ""
    assert "Sign in" in text and "script" not in text and "db-1" not in text
    assert f'href="/auth/login?next=%2Fapprovals%2F{made.token}"' in text


def test_a_refusal_is_logged_and_its_reason_escaped() -> None:
    log = io.StringIO()
    refuse = pages.Refusals(AuditLog(log, masker=MASKER))
    response = refuse(make_mocked_request("POST", "/approvals/x"), 403, f"the form came from another site ({HOSTILE})")
    assert response.status == 403 and "<script>" not in (response.text or "")
    [event] = [json.loads(line) for line in log.getvalue().splitlines()]
    assert event["event"] == "web_request_refused" and event["path"] == "/approvals/x"


# -- cookies ------------------------------------------------------------------------------------


def test_cookies_round_trip_for_their_purpose_only(tmp_path: Path) -> None:
    cookies = SignedCookies.load_or_create(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    payload = {"user": "carol", "groups": ["dba"], "text": HOSTILE}
    value = cookies.dumps(SESSION_COOKIE, payload, 60)
    assert {k: v for k, v in cookies.loads(SESSION_COOKIE, value).items() if k != "exp"} == payload  # type: ignore[union-attr]
    assert cookies.loads(LOGIN_COOKIE, value) is None
    assert SignedCookies.load_or_create(tmp_path / "key").loads(SESSION_COOKIE, value) is not None
    assert SignedCookies(b"x" * 32).loads(SESSION_COOKIE, value) is None
    with pytest.raises(ValueError, match="32 bytes"):
        SignedCookies(b"short")


@pytest.mark.parametrize("tamper", [
    lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # the signature
    lambda v: ("e" if v[0] != "e" else "f") + v[1:],  # the payload
    lambda v: v.split(".")[0],  # no signature
    lambda v: v + ".x",  # three parts
    lambda v: v.replace(".", ".\u00e9"),  # non-ASCII (must not raise)
    lambda v: v.replace(".", ".\udcff"),  # a lone surrogate (must not raise)
    lambda v: "",
])
def test_a_tampered_cookie_reads_as_nothing(tamper) -> None:  # type: ignore[no-untyped-def]
    cookies = SignedCookies(b"k" * 32)
    value = cookies.dumps(SESSION_COOKIE, {"user": "carol"}, 60)
    assert cookies.loads(SESSION_COOKIE, tamper(value)) is None


def test_a_cookie_signed_over_something_else_than_a_payload_reads_as_nothing() -> None:
    cookies = SignedCookies(b"k" * 32)
    for body in (b"[1, 2]", b'{"user": "carol"}', b'{"exp": "later"}', b"\xff\xfe", b"not json"):
        encoded = base64.urlsafe_b64encode(body).rstrip(b"=")
        assert cookies.loads("p", f"{encoded.decode()}.{cookies._sign('p', encoded)}") is None
    assert cookies.loads("p", cookies.dumps("p", {}, -1)) is None  # expired


def test_secrets_compare_whatever_the_request_sent() -> None:
    assert same_secret("abc", "abc") and not same_secret("abd", "abc")
    assert not same_secret(None, "abc") and not same_secret(["abc"], "abc")
    assert not same_secret("\u00e9", "abc") and not same_secret("\udcff", "abc")


def test_browser_sessions_set_flagged_cookies_and_read_them_back() -> None:
    sessions = BrowserSessions(SignedCookies(b"k" * 32), secure=True, ttl=900)
    response = web.Response()
    sessions.sign_in(response, CAROL)
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/" and cookie["max-age"] == "900"
    assert response.cookies[LOGIN_COOKIE]["max-age"] == "0"  # the sign-in in progress is over
    request = make_mocked_request("GET", "/", headers={"Cookie": f"{SESSION_COOKIE}={cookie.value}"})
    assert sessions.who(request) == CAROL
    assert CAROL.posted({"csrf": CAROL.csrf}) and not CAROL.posted({"csrf": "x"}) and not CAROL.posted({})
    started = web.Response()
    sessions.remember_login(started, {"state": "s", "nonce": "n", "verifier": "v", "next": "/"})
    login = started.cookies[LOGIN_COOKIE]
    assert login["path"] == "/auth/" and login["httponly"] and login["max-age"] == "600"
    plain = BrowserSessions(SignedCookies(b"k" * 32), secure=False, ttl=900)
    plain.sign_in(started, CAROL)
    assert not started.cookies[SESSION_COOKIE]["secure"]


def test_a_session_payload_of_the_wrong_shape_is_no_session() -> None:
    good = CAROL.payload()
    assert SignedIn.from_payload(good) == CAROL
    for key, value in (("user", 1), ("groups", "dba"), ("groups", [1]), ("id", None), ("csrf", [])):
        assert SignedIn.from_payload({**good, key: value}) is None


# -- refusals carry their HTTP status ---------------------------------------------------------------


def test_refusals_carry_their_http_status(tmp_path: Path) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    directory = Directory(tmp_path / "state.db")
    for _ in range(CERT_RATE[0]):
        directory.issue(ca, key, user="alice", identity="idp#a", ttl=60)
    with pytest.raises(TooManyCertificates) as too_many:
        directory.issue(ca, key, user="alice", identity="idp#a", ttl=60)
    assert too_many.value.http_status == 429 and isinstance(too_many.value, SSOError)
    with pytest.raises(SSOError) as refused:
        directory.issue(ca, "not a key", user="alice", identity="idp#b", ttl=60)
    assert refused.value.http_status == 403
    assert ApprovalError("x").http_status == 409
    assert OIDCError("x").http_status == 403 and SignInRefused("x").http_status == 403


class RefusingSSO:
    """Stands in for the bastion's SSO: every certificate request is refused with `error`."""

    cli = object()

    def __init__(self, error: SSOError) -> None:
        self.error = error

    async def certify(self, tokens: dict[str, str], public_key: str, client: str) -> dict[str, str]:
        raise self.error


@pytest.mark.parametrize(("error", "status"), [
    (TooManyCertificates("too many certificates for this identity; try again in 60 s"), 429),
    (SSOError("ID token: too old"), 403),
])
async def test_the_certificate_endpoint_answers_with_the_refusals_status(error: SSOError, status: int) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bastion.web.ssoapi import SSOEndpoints

    app = web.Application()
    app.add_routes(SSOEndpoints(RefusingSSO(error)).routes())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/sso/certificate", json={"id_token": "t", "public_key": "k"})
        assert response.status == status and (await response.json()) == {"error": str(error)}
        assert (await client.post("/sso/certificate", data="id_token=t")).status == 415


# -- the state database, off the event loop ----------------------------------------------------------


async def test_database_calls_run_in_order_on_their_own_thread() -> None:
    thread, seen = DatabaseThread("test-db"), []
    loop_ran = threading.Event()
    waited: list[bool] = []

    def slow(n: int) -> str:
        if n == 0:  # blocks until the event loop has run meanwhile (it cannot if it is blocked)
            waited.append(loop_ran.wait(timeout=30))
        seen.append(n)
        return threading.current_thread().name

    async def ticker() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        loop_ran.set()

    ticking = asyncio.get_running_loop().create_task(ticker())
    names = await asyncio.gather(*(thread.run(slow, n) for n in range(3)))
    await ticking
    assert seen == [0, 1, 2] and waited == [True]  # the loop went on while the first call waited
    assert all(name.startswith("test-db") for name in names) and len(set(names)) == 1
    failures: list[BaseException] = []
    thread.later(failures.append, slow, 3)
    thread.later(failures.append, lambda: 1 / 0)
    assert thread.wait(slow, 4) == names[0] and seen[-2:] == [3, 4]
    await asyncio.sleep(0.01)
    assert len(failures) == 1 and isinstance(failures[0], ZeroDivisionError)


class Held:
    """What a hold says to the session."""

    def __init__(self) -> None:
        self.markers: list[str] = []

    def to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        pass

    def say(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        self.to_client(data, stream)

    def marker(self, kind: str, text: str = "") -> None:
        self.markers.append(kind)


async def test_a_session_ending_while_its_request_is_being_created_cancels_it_in_order(tmp_path: Path) -> None:
    from bastion.core.rules import parse_rules
    from bastion.rules_file import RulesHolder

    store = live_store(tmp_path / "state.db", masker=MASKER)
    create = store.create

    def slow_create(**kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.1)
        return create(**kwargs)

    store.create = slow_create  # type: ignore[method-assign]
    rules = parse_rules({"rule": [{"name": "r", "action": "approve", "command": "x", "approvers": ["dba"]}]})
    info = SessionInfo(session_id="s1", channel=1, user="alice", target="db-1", login="root",
                       client_address="127.0.0.1:1", client_version="SSH-2.0-test", kind=SessionKind.EXEC, command="x")
    log, session, notified = io.StringIO(), Held(), []

    async def notify(request):  # type: ignore[no-untyped-def]
        notified.append(request)
        return []

    context = ScreeningContext(RulesHolder(rules=rules), store, AuditLog(log, masker=MASKER), MASKER,
                               notify=notify)
    decisions = CommandDecisions(context, info, session)
    verdict = decisions.decide("exec", "x")
    hold = asyncio.get_running_loop().create_task(
        decisions.await_approval(verdict, "x", screen="", interactive=False))
    await asyncio.sleep(0.02)  # the request is being created on the store's thread
    decisions.end()  # the session ends before the hold heard back from the store
    [made] = store.recent(10)
    assert store.state(made.id)[0] == "cancelled"
    assert session.markers == ["approval-requested", "approval-cancelled"]
    events = [json.loads(line)["event"] for line in log.getvalue().splitlines()]
    assert events == ["command_decision", "approval_requested", "approval_cancelled"]
    assert await hold == (False, "cancelled") and notified == []  # nobody is asked to approve it


async def test_a_slow_store_query_stalls_only_the_request_that_waits_for_it(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bastion.config import parse_config
    from bastion.web.service import WebService

    store = live_store(tmp_path / "state.db", masker=MASKER)
    made = request(store)
    by_token = store.by_token

    def slow_by_token(token: str):  # type: ignore[no-untyped-def]
        time.sleep(0.5)  # a lock held by another process, a slow disk
        return by_token(token)

    store.by_token = slow_by_token  # type: ignore[method-assign]
    settings = parse_config({"users": {}, "targets": {}, "web": {}}, path=tmp_path / "bastion.toml")
    service = WebService(settings, store, AuditLog(io.StringIO(), masker=MASKER), SignedCookies(b"k" * 32), None,
                         masker=MASKER)
    async with TestClient(TestServer(service.app)) as client:
        page = asyncio.get_running_loop().create_task(client.get(f"/approvals/{made.token}"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert (await client.get("/healthz")).status == 200
        assert time.monotonic() - started < 0.3 and not page.done()
        assert (await page).status == 200
