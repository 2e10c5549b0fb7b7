"""HTML pages from the Jinja2 templates in `templates/`, with autoescaping always on.

Every value a template prints is escaped; nothing here marks text as safe. Session text (a
command, a terminal screen) is passed through `session_text` first, which shows control and
bidirectional-override characters as escapes, as the player and the CLI do. Each page names
a fresh nonce for its one style element in its Content-Security-Policy; no page has scripts.
"""

from __future__ import annotations

import secrets
from typing import Any

import jinja2
from aiohttp import web

from bastion.state.audit import AuditLog
from bastion.state.events import WebRequestRefused
from bastion.web.sessions import SignedIn
from recorder.printable import printable

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bastion.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def session_text(text: str) -> str:
    """Session text line by line with what is unsafe to show escaped: a right-to-left override
    or a control character must not rearrange what the approver reads."""
    return "\n".join(printable(line) for line in text.split("\n"))


def csp(style_nonce: str) -> str:
    """No scripts, no frames, forms only to ourselves; styles only from the page's own tag."""
    return (f"default-src 'none'; style-src 'nonce-{style_nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def render(template: str, *, title: str, who: SignedIn | None = None, nonce: str = "", **context: Any) -> str:
    """A page as text (the base template wraps it: style, header, sign-out form)."""
    return TEMPLATES.get_template(template).render(title=title, who=who, nonce=nonce, **context)


def page(template: str, *, title: str, status: int = 200, who: SignedIn | None = None,
         **context: Any) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    text = render(template, title=title, who=who, nonce=nonce, **context)
    response = web.Response(text=text, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = csp(nonce)
    return response


def message(title: str, heading: str, text: str = "", *, status: int = 200) -> web.Response:
    """A page that only says something: a heading and a paragraph."""
    return page("message.html", title=title, status=status, heading=heading, text=text)


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


class Refusals:
    """Requests refused: logged as `web_request_refused`, answered with a page saying why."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def __call__(self, request: web.Request, status: int, reason: str, *, request_id: str | None = None,
                 by: str | None = None) -> web.Response:
        self._audit.write(WebRequestRefused(method=request.method, path=request.path, reason=reason,
                                            client=request.remote, request_id=request_id, by=by))
        return message("Refused", "Refused", reason, status=status)
