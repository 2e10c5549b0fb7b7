"""Tell approvers in chat that a command waits for them, and moderators that a session waits for
one of them: Slack, Mattermost, or any JSON webhook.

A message says who, where, as which login, the command (masked, in a code block), the rule,
and carries the link to the request's page. Link previews are turned off where the service
allows it; the page itself changes nothing on GET either way. Each destination is retried
with backoff; what finally failed is returned so the waiting user can be told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bastion.config import NotifyDestination
from bastion.core.masker import TextMasker
from bastion.state.approvals import ApprovalRequest

ATTEMPTS = 4
FIRST_BACKOFF = 0.5
TIMEOUT = aiohttp.ClientTimeout(total=10)


def _fence(command: str) -> str:
    """The command in a code block no command can close early."""
    return "```\n" + command.replace("```", "`\u200b``") + "\n```"


def _minutes(request: ApprovalRequest) -> int:
    return max(1, round((request.expires - time.time()) / 60))


def _summary(request: ApprovalRequest) -> str:
    return (
        f"{request.requester} wants to run a command on {request.target} as {request.login}"
        f" (request {request.id}, rule {request.rule or '-'})"
    )


def slack_payload(request: ApprovalRequest, link: str, masker: TextMasker) -> dict[str, Any]:
    """Slack incoming webhook, Block Kit."""
    command = masker.mask(request.command)
    needed = f"{request.approvals_needed} approvals" if request.approvals_needed > 1 else "1 approval"
    return {
        "text": _summary(request),  # notifications and clients without blocks
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"Approval needed: request {request.id}"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*User*\n{request.requester}"},
                    {"type": "mrkdwn", "text": f"*Target*\n{request.target}"},
                    {"type": "mrkdwn", "text": f"*Login*\n{request.login}"},
                    {"type": "mrkdwn", "text": f"*Rule*\n{request.rule or '-'}"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _fence(command)}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Needs {needed} from {', '.join(request.approvers)};"
                        f" expires in {_minutes(request)} min.",
                    },
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review request"},
                        "url": link,
                        "style": "primary",
                        "action_id": "review",
                    },
                ],
            },
        ],
    }


def mattermost_payload(request: ApprovalRequest, link: str, masker: TextMasker) -> dict[str, Any]:
    """Mattermost incoming webhook: Markdown text plus an attachment with the fields."""
    command = masker.mask(request.command)
    return {
        "text": f"#### Approval needed: request {request.id}\n{_fence(command)}\n"
        f"[Review request {request.id}]({link})",
        "attachments": [
            {
                "fallback": _summary(request),
                "color": "#d97706",
                "fields": [
                    {"short": True, "title": "User", "value": request.requester},
                    {"short": True, "title": "Target", "value": request.target},
                    {"short": True, "title": "Login", "value": request.login},
                    {"short": True, "title": "Rule", "value": request.rule or "-"},
                    {
                        "short": False,
                        "title": "Approvers",
                        "value": f"{request.approvals_needed} of {', '.join(request.approvers)},"
                        f" expires in {_minutes(request)} min",
                    },
                ],
            }
        ],
    }


def webhook_payload(request: ApprovalRequest, link: str, masker: TextMasker) -> dict[str, Any]:
    """Any other receiver: one plain JSON object."""
    return {
        "event": "approval_requested",
        "request": request.id,
        "url": link,
        "user": request.requester,
        "target": request.target,
        "login": request.login,
        "command": masker.mask(request.command),
        "rule": request.rule,
        "approvers": list(request.approvers),
        "approvals_needed": request.approvals_needed,
        "expires": request.expires,
    }


PAYLOADS = {"slack": slack_payload, "mattermost": mattermost_payload, "webhook": webhook_payload}


@dataclass(frozen=True)
class ModeratorWanted:
    """A moderated session waits for a moderator: who, where, and how to join it."""

    session: str
    user: str
    target: str
    login: str
    moderated_by: tuple[str, ...]
    timeout: int  # seconds it waits

    @property
    def join(self) -> str:
        return f"ssh -t bastion join {self.session}"

    def summary(self) -> str:
        return (f"{self.user} waits for a moderator on {self.target} as {self.login}"
                f" (session {self.session}); join with: {self.join}")

    def context(self) -> str:
        minutes = max(1, round(self.timeout / 60))
        return (f"Moderators: {', '.join(self.moderated_by)}; the session ends if nobody joins"
                f" within {minutes} min.")


def slack_moderation(wanted: ModeratorWanted) -> dict[str, Any]:
    return {
        "text": wanted.summary(),
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "header",
             "text": {"type": "plain_text", "text": f"Moderator needed: session {wanted.session}"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*User*\n{wanted.user}"},
                {"type": "mrkdwn", "text": f"*Target*\n{wanted.target}"},
                {"type": "mrkdwn", "text": f"*Login*\n{wanted.login}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": "Join with:\n" + _fence(wanted.join)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": wanted.context()}]},
        ],
    }


def mattermost_moderation(wanted: ModeratorWanted) -> dict[str, Any]:
    return {
        "text": f"#### Moderator needed: session {wanted.session}\nJoin with:\n{_fence(wanted.join)}",
        "attachments": [{
            "fallback": wanted.summary(),
            "color": "#2563eb",
            "fields": [
                {"short": True, "title": "User", "value": wanted.user},
                {"short": True, "title": "Target", "value": wanted.target},
                {"short": True, "title": "Login", "value": wanted.login},
                {"short": False, "title": "Moderators", "value": wanted.context()},
            ],
        }],
    }


def webhook_moderation(wanted: ModeratorWanted) -> dict[str, Any]:
    return {
        "event": "moderator_requested",
        "session": wanted.session,
        "user": wanted.user,
        "target": wanted.target,
        "login": wanted.login,
        "moderated_by": list(wanted.moderated_by),
        "join": wanted.join,
        "timeout": wanted.timeout,
    }


MODERATION_PAYLOADS = {"slack": slack_moderation, "mattermost": mattermost_moderation,
                       "webhook": webhook_moderation}


@dataclass(frozen=True)
class Failure:
    destination: str
    reason: str


class Notifier:
    def __init__(self, destinations: Sequence[NotifyDestination], *, masker: TextMasker,
                 backoff: float = FIRST_BACKOFF) -> None:
        self.destinations = tuple(destinations)
        self.masker = masker  # the command in every message
        self.backoff = backoff

    async def notify(self, request: ApprovalRequest, link: str) -> list[Failure]:
        """Post to every destination at once; the ones that still failed after the retries."""
        return await self._send([(d, PAYLOADS[d.kind](request, link, self.masker))
                                 for d in self.destinations])

    async def notify_moderators(self, wanted: ModeratorWanted) -> list[Failure]:
        """Tell the moderators a session waits for one of them, as approvers are told."""
        return await self._send([(d, MODERATION_PAYLOADS[d.kind](wanted)) for d in self.destinations])

    async def _send(self, payloads: list[tuple[NotifyDestination, dict[str, Any]]]) -> list[Failure]:
        if not payloads:
            return []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            results = await asyncio.gather(*(self._post(http, d, payload) for d, payload in payloads))
        return [failure for failure in results if failure is not None]

    async def _post(
        self, http: aiohttp.ClientSession, destination: NotifyDestination, payload: dict[str, Any]
    ) -> Failure | None:
        reason = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with http.post(destination.url, json=payload) as response:
                    if 200 <= response.status < 300:
                        return None
                    reason = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status != 429:
                        break  # a wrong URL or payload does not get better by retrying
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
        return Failure(destination.name, reason)
