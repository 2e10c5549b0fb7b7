"""Approvals on chat links, end to end: a real `ssh -J` session holds a command, the bastion
posts to a webhook receiver, headless Chromium signs in at a real OpenID provider
(node oidc-provider) and clicks Approve or Deny on the bastion's page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bastion.core.masker import TextMasker
from bastion.demo.openssh import free_port
from bastion.demo.sandbox import Sandbox
from bastion.state.approvals import ApprovalStore, command_hash
from tests.support.idp import OpenIDProvider, WebhookReceiver, browser, sign_in
from tests.support.lab import LOGIN, eventually, need
from tests.support.recordings import recording_for
from tests.support.sessions import start_ssh, unique
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e

RULES = """
[defaults]
action = "allow"

[[rule]]
name = "needs-approval"
action = "approve"
command = "needs-approval"
approvers = ["dba"]
timeout = "2m"

[[rule]]
name = "two-approvals"
action = "approve"
command = "two-approvals"
approvers = ["dba"]
approvals = 2

[[rule]]
name = "short-lived"
action = "approve"
command = "short-lived"
approvers = ["dba"]
timeout = "3s"
"""

ACCOUNTS = {
    "alice": {"groups": ["ops"]},  # the requester
    "carol": {"groups": ["dba"]},
    "dave": {"groups": ["dba"]},
    "erin": {"groups": ["dev"]},  # signed in, but no approver
}


@dataclass
class Web:
    box: Sandbox
    idp: OpenIDProvider
    chat: WebhookReceiver
    chromium: Any
    url: str

    def ssh(self, command: str) -> subprocess.Popen[bytes]:
        return start_ssh(self.box, command)

    def slack_post(self, text: str) -> dict[str, Any]:
        return self.chat.wait_for(lambda path, p: path == "/slack" and text in json.dumps(p))

    def link(self, text: str) -> str:
        post = self.slack_post(text)
        buttons = [e for block in post["blocks"] if block["type"] == "actions" for e in block["elements"]]
        return str(buttons[0]["url"])

    def page_as(self, login: str, link: str) -> Any:
        page = self.chromium.new_context().new_page()
        sign_in(page, link, login)
        return page

    def state(self, request_id: str) -> str:
        return ApprovalStore(self.box.directory / "bastion.db", masker=TextMasker()).state(request_id)[0]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.box.events() if e["event"] == name]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    need("ssh", "sshd", "tmux")
    directory = tmp_path_factory.mktemp("web")
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}"
    idp = OpenIDProvider(directory, ACCOUNTS, [f"{url}/auth/callback"]).start()
    chat = WebhookReceiver()
    (directory / "rules.toml").write_text(RULES)
    (directory / "client_secret").write_text(idp.client_secret + "\n")
    box = Sandbox(directory, extra={
        "rules_file": "rules.toml",
        "web": {"listen": f"127.0.0.1:{web_port}", "public_url": url},
        "oidc": {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret_file": "client_secret"},
        "notify": [{"kind": "slack", "url": chat.url("/slack")},
                   {"kind": "mattermost", "url": chat.url("/mattermost")},
                   {"kind": "webhook", "name": "pager", "url": chat.url("/hook")}],
    })
    box.add_user("alice", ["ops"])
    box.add_target("db-1", logins=[LOGIN], groups=["ops"])
    box.write_ssh_config("alice")
    box.start_bastion()
    try:
        with browser() as chromium:
            yield Web(box, idp, chat, chromium, url)
    finally:
        box.stop()
        idp.stop()
        chat.close()


def request_id(page: Any) -> str:
    return page.locator("h1").inner_text().split()[2]


def test_approver_signs_in_and_approves_then_the_command_runs(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker} && echo ran-it")
    link = web.link(str(marker))
    page = web.page_as("carol", link)
    body = page.locator("body").inner_text()
    assert "Approval request" in body and "pending" in body
    assert f"touch {marker}" in body and "alice" in body and "needs-approval" in body
    assert proc.poll() is None and not marker.exists()  # opening the page changed nothing
    second_tab = page.context.new_page()
    second_tab.goto(link)
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("You approved this request.").wait_for()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"ran-it" in out and marker.exists()
    assert b"waiting for approval" in err
    # A second click (another tab still showing the form) says it was decided, and by whom.
    second_tab.get_by_role("button", name="Approve").click()
    assert "was already approved by carol" in second_tab.locator("body").inner_text()
    decision = [e for e in web.events("approval_decision") if e["request"] == request_id(page)]
    assert decision and decision[0]["by"] == "carol" and decision[0]["identity"] == f"{web.idp.issuer}#carol"
    assert any(e["by"] == "carol" for e in web.events("approval_viewed"))
    shown = subprocess.run([sys.executable, "-m", "bastion", "approvals", "show", request_id(page), "-c",
                            str(web.box.config_path)], capture_output=True, text=True, timeout=60, check=True)
    assert f"decision  approve by carol ({web.idp.issuer}#carol)" in shown.stdout
    assert f"$ touch {marker}" in shown.stdout and "(approved)" in shown.stdout
    # ... and the recording says who approved, with the identity.
    cast = recording_for(web.box, lambda e: str(e.get("command", "")).startswith(f"touch {marker}"))
    assert f"approve by carol ({web.idp.issuer}#carol)" in cast.read_text()


def test_chat_payloads_have_the_documented_shape(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker}")
    slack = web.slack_post(str(marker))
    assert slack["unfurl_links"] is False and slack["unfurl_media"] is False
    kinds = [block["type"] for block in slack["blocks"]]
    assert kinds[0] == "header" and "actions" in kinds
    code = next(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section" and "text" in b)
    assert code.startswith("```") and f"touch {marker}" in code
    fields = next(b["fields"] for b in slack["blocks"] if b["type"] == "section" and "fields" in b)
    assert {f["text"].split("\n")[0] for f in fields} == {"*User*", "*Target*", "*Login*", "*Rule*"}
    link = web.link(str(marker))
    assert link.startswith(web.url + "/approvals/") and len(link.rsplit("/", 1)[1]) >= 32
    mattermost = web.chat.wait_for(lambda path, p: path == "/mattermost" and str(marker) in p["text"])
    assert link in mattermost["text"] and mattermost["attachments"][0]["fields"][0]["value"] == "alice"
    hook = web.chat.wait_for(lambda path, p: path == "/hook" and str(marker) in p["command"])
    assert hook["event"] == "approval_requested" and hook["url"] == link and hook["user"] == "alice"
    proc.kill()
    proc.wait()


def test_denied_in_the_browser(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker}")
    page = web.page_as("dave", web.link(str(marker)))
    page.get_by_role("button", name="Deny").click()
    page.get_by_text("You denied this request.").wait_for()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and b"was not approved (denied by dave)" in err
    assert not marker.exists()


def test_requester_and_outsiders_cannot_approve(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker}")
    link = web.link(str(marker))
    own = web.page_as("alice", link)
    assert "You cannot approve your own request." in own.locator("body").inner_text()
    assert own.get_by_role("button", name="Approve").count() == 0
    # Not through a hand-made POST either: alice's own valid session and token.
    csrf = own.locator("input[name=csrf]").first.get_attribute("value")
    forged = own.request.post(link, form={"csrf": csrf, "decision": "approve",
                                          "command_hash": command_hash(f"touch {marker}")})
    assert forged.status == 409
    outsider = web.page_as("erin", link)
    assert "Only members of dba can decide." in outsider.locator("body").inner_text()
    assert outsider.get_by_role("button", name="Approve").count() == 0
    time.sleep(0.5)
    assert proc.poll() is None and not marker.exists()
    refused = [e for e in web.events("approval_decision_refused") if e["by"] == "alice"]
    assert refused and "cannot approve their own request" in refused[-1]["reason"]
    web.page_as("carol", link).get_by_role("button", name="Deny").click()
    assert proc.wait(30) == 1


def test_two_of_n_waits_for_two_distinct_approvers(web: Web) -> None:
    marker = unique("two-approvals")
    proc = web.ssh(f"touch {marker} && echo both-said-yes")
    link = web.link(str(marker))
    carol = web.page_as("carol", link)
    carol.get_by_role("button", name="Approve").click()
    carol.get_by_text("You approved this request.").wait_for()
    assert "1 of 2" in carol.locator("body").inner_text()
    time.sleep(1)
    assert proc.poll() is None and not marker.exists()  # one approval is not enough
    carol.reload()
    assert "You have already decided on this request." in carol.locator("body").inner_text()
    web.page_as("dave", link).get_by_role("button", name="Approve").click()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"both-said-yes" in out and marker.exists()


def test_get_only_previews_change_nothing(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker}")
    link = web.link(str(marker))
    for _ in range(3):  # what a chat unfurler or mail scanner does: plain GETs, no cookies
        with urllib.request.urlopen(link, timeout=10) as response:
            page = response.read().decode()
            headers = response.headers
        assert "Sign in" in page and str(marker) not in page  # nothing about the request without sign-in
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    signed_in = web.page_as("carol", link)
    signed_in.reload()
    request = request_id(signed_in)
    assert web.state(request) == "pending" and proc.poll() is None
    signed_in.get_by_role("button", name="Deny").click()
    assert proc.wait(30) == 1


def _post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> int:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_forged_posts_are_refused_and_logged(web: Web) -> None:
    marker = unique("needs-approval")
    proc = web.ssh(f"touch {marker}")
    link = web.link(str(marker))
    carol = web.page_as("carol", link)
    request = request_id(carol)
    csrf = carol.locator("input[name=csrf]").first.get_attribute("value")
    digest = carol.locator("input[name=command_hash]").get_attribute("value")
    cookie = next(c for c in carol.context.cookies() if c["name"] == "bastion_session")["value"]
    form = {"csrf": csrf, "decision": "approve", "command_hash": digest}
    assert _post(link, form) == 403  # no sign-in
    assert _post(link, form, {"Cookie": f"bastion_session={cookie[:-3]}abc"}) == 403  # tampered cookie
    assert _post(link, {**form, "csrf": "x" * 32}, {"Cookie": f"bastion_session={cookie}"}) == 403
    assert _post(link, form, {"Cookie": f"bastion_session={cookie}", "Origin": "https://evil.example"}) == 403
    assert _post(link, {**form, "command_hash": "0" * 64}, {"Cookie": f"bastion_session={cookie}"}) == 409
    assert _post(web.url + "/approvals/not-a-token", form, {"Cookie": f"bastion_session={cookie}"}) == 404
    assert web.state(request) == "pending" and proc.poll() is None and not marker.exists()
    refused = web.events("web_request_refused")
    assert {"sign in first", "no such request"} <= {e["reason"] for e in refused}
    assert any("token is missing or wrong" in e["reason"] for e in refused)
    assert any("another site" in e["reason"] for e in refused)
    # The same signed-in approver, through the page: works.
    carol.reload()
    carol.get_by_role("button", name="Deny").click()
    assert proc.wait(30) == 1


def test_expiry_and_a_session_that_ends_first(web: Web) -> None:
    marker = unique("short-lived")
    proc = web.ssh(f"touch {marker}")
    link = web.link(str(marker))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and b"was not approved (expired)" in err
    page = web.page_as("carol", link)
    assert "expired" in page.locator("h1").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0
    gone = unique("needs-approval")
    proc = web.ssh(f"touch {gone}")
    link = web.link(str(gone))
    proc.kill()  # the user gives up: the request is cancelled, not left to be approved
    proc.wait()
    page = web.page_as("carol", link)

    def cancelled() -> bool:
        page.reload()
        return "cancelled" in page.locator("h1").inner_text()

    eventually(cancelled, "the request shown as cancelled")
    assert "the session ended" in page.locator("body").inner_text()


def test_failed_notification_is_told_and_the_request_still_waits(web: Web) -> None:
    web.chat.status_for["/hook"] = 500
    try:
        marker = unique("needs-approval")
        proc = web.ssh(f"touch {marker} && echo ran-anyway")
        link = web.link(str(marker))  # slack still got it
        eventually(lambda: [e for e in web.events("approval_notified") if e.get("failed")],
                   "the failed notification", timeout=30)
        web.page_as("carol", link).get_by_role("button", name="Approve").click()
        out, err = proc.communicate(timeout=30)
    finally:
        web.chat.status_for.pop("/hook")
    assert b"could not notify approvers (pager: HTTP 500)" in err and b"still waits" in err
    assert proc.returncode == 0 and b"ran-anyway" in out


def test_interactive_line_approved_from_chat_shows_the_screen(web: Web) -> None:
    p = TmuxPane(["ssh", "-F", str(web.box.directory / "ssh_config-alice"), "-J", "bastion", f"{LOGIN}@db-1"])
    try:
        p.type("PS1='we''b> '")
        p.send("Enter")
        p.wait_for("web>")
        token = uuid.uuid4().hex[:8]
        p.type(f"echo needs-approval-{token}-$((40+2))")
        p.send("Enter")
        p.wait_for("waiting for approval")
        page = web.page_as("carol", web.link(token))
        screen = page.locator("pre.screen").inner_text()
        assert "web>" in screen and f"echo needs-approval-{token}" in screen
        page.get_by_role("button", name="Approve").click()
        p.wait_for(f"needs-approval-{token}-42")
    finally:
        p.close()
