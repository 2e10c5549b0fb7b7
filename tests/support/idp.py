"""Real peers for the web tests: an OpenID provider (node oidc-provider), a chat webhook
receiver, and headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.openssh import free_port, stop_process, wait_for_port

PROVIDER_DIR = Path(__file__).parents[1] / "oidc"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_provider() -> None:
    if shutil.which("node") is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").exists():
        pytest.fail("the test OpenID provider needs node and `npm ci` in tests/oidc (scripts/test does both)")


def need_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("needs Debian's chromium (scripts/test installs it)")


@dataclass
class OpenIDProvider:
    """node oidc-provider on loopback with fixed accounts; sign in with any password."""

    directory: Path
    accounts: dict[str, dict[str, Any]]
    redirect_uris: list[str]
    port: int = 0
    client_id: str = "bastion"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cli_client_id: str = "bastion-cli"
    device_code_ttl: int = 300
    # As a CI platform: job name -> the claims its tokens carry (client_credentials clients).
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    workload_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def signing_key_file(self) -> Path:
        return self.directory / "provider-signing-key.json"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenIDProvider:
        need_provider()
        self.port = self.port or free_port()
        config = {
            "port": self.port,
            "accounts": self.accounts,
            "signing_key_file": str(self.signing_key_file),
            "device_code_ttl": self.device_code_ttl,
            "clients": [{
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
                "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
                "response_types": ["code"],
            }, {
                # `bastion login`: a public client that only runs the device flow.
                "client_id": self.cli_client_id,
                "token_endpoint_auth_method": "none",
                "application_type": "native",
                "redirect_uris": [],
                "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
                "response_types": [],
            }, *({
                "client_id": f"job-{name}",
                "client_secret": self.workload_secret,
                "token_endpoint_auth_method": "client_secret_post",
                "redirect_uris": [],
                "grant_types": ["client_credentials"],
                "response_types": [],
                "workload": claims,
            } for name, claims in self.workloads.items())],
        }
        path = self.directory / "provider.json"
        path.write_text(json.dumps(config))
        log = open(self.directory / "provider.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(["node", str(PROVIDER_DIR / "provider.mjs"), str(path)],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", self.port, timeout=20)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"OpenID provider did not start:\n{(self.directory / 'provider.log').read_text()}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=5)

    def workload_token(self, job: str, audience: str = "bastion") -> str:
        """A signed token for `job` (a key of `workloads`), as its CI platform would mint it."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": f"job-{job}",
            "client_secret": self.workload_secret, "resource": f"urn:aud:{audience}",
        }).encode()
        with urllib.request.urlopen(f"{self.issuer}/token", data=form, timeout=30) as response:
            token = json.loads(response.read())["access_token"]
        assert isinstance(token, str) and token.count(".") == 2, token
        return token


class WebhookReceiver:
    """Stands in for Slack/Mattermost: records every JSON POST by path; can fail the first N."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.fail_first: dict[str, int] = {}
        self.status_for: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status_for.get(self.path, 200)
                if receiver.fail_first.get(self.path, 0) > 0:
                    receiver.fail_first[self.path] -= 1
                    status = 500
                else:
                    receiver.posts.append((self.path, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, predicate: Any, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path, payload in list(self.posts):
                if predicate(path, payload):
                    return payload
            time.sleep(0.05)
        raise AssertionError(f"no matching webhook post; got {self.posts!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def browser() -> Iterator[Any]:
    """A Playwright Browser on Debian's chromium (headless, no network beyond loopback)."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(page: Any, link: str, login: str) -> None:
    """Open an approval link and sign in at the provider's login form as `login`."""
    page.goto(link)
    page.get_by_role("link", name="Sign in").click()
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    try:
        page.wait_for_url(link, timeout=20000)
    except Exception as exc:
        raise AssertionError(f"sign-in as {login} ended at {page.url}:\n{page.locator('body').inner_text()}") from exc


def complete_device_sign_in(page: Any, verification_uri: str, user_code: str, login: str) -> None:
    """What a user does in their browser for a device code: enter it, sign in, confirm."""
    page.goto(verification_uri)
    try:
        page.locator("input[name=user_code]").fill(user_code)
        page.get_by_role("button", name="Continue").click()
        page.get_by_text("Confirm Device").wait_for(timeout=15000)
        page.get_by_role("button", name="Continue").click()
        page.locator("input[name=login]").fill(login, timeout=15000)
        page.locator("input[name=password]").fill("any password")
        page.get_by_role("button", name="Sign-in").click()
        done = page.get_by_text("Sign-in Success")
        consent = page.get_by_text("Authorize")
        done.or_(consent).first.wait_for(timeout=15000)
        if consent.count():  # a native client's consent screen
            page.get_by_role("button", name="Continue").click()
        done.wait_for(timeout=15000)
    except Exception as exc:
        raise AssertionError(f"device sign-in as {login} stuck at {page.url}:\n{page.locator('body').inner_text()}") from exc
