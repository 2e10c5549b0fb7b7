"""`bastion login`'s side of the web service: JSON in, JSON out (/sso/...).

The certificate endpoint takes JSON only: a cross-site form cannot send it without the
browser asking us first. Refusals answer with the status the refusal carries (403, or 429
when an identity asked for too many certificates).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from bastion.auth.directory import SSOError
from bastion.auth.sso import SSO


class SSOEndpoints:
    def __init__(self, sso: SSO | None) -> None:
        self.sso = sso

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/sso/config", self.config),
            web.post("/sso/certificate", self.certificate),
            web.get("/sso/krl", self.krl),
        ]

    def _ready(self) -> SSO:
        if self.sso is None or self.sso.cli is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "single sign-on is not configured"}),
                                   content_type="application/json")
        return self.sso

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response(self._ready().client_settings())

    async def certificate(self, request: web.Request) -> web.Response:
        sso = self._ready()
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        tokens = {k: body[k] for k in ("id_token", "access_token") if isinstance(body.get(k), str)}
        try:
            answer = await sso.certify(tokens, body.get("public_key", ""), str(request.remote))
        except SSOError as exc:
            return web.json_response({"error": str(exc)}, status=exc.http_status)
        return web.json_response(answer)

    async def krl(self, request: web.Request) -> web.Response:
        sso = self._ready()
        try:
            data = await asyncio.to_thread(sso.krl_path.read_bytes)
        except OSError:
            return web.json_response({"error": "no revocation list yet"}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")
