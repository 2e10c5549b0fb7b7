"""Machines' side of the web service: POST /machines/token exchanges a CI platform's (or an
identity provider's) signed token and a public key for a short-lived login certificate.

JSON only, like the SSO certificate endpoint. Refusals carry their status: 403 for a token that
signs nobody in, 429 over the certificate rate, 502 when the issuer cannot be read.
"""

from __future__ import annotations

from aiohttp import web

from bastion.auth.directory import SSOError
from bastion.auth.machines import Machines


class MachineEndpoints:
    def __init__(self, machines: Machines | None) -> None:
        self.machines = machines

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/machines/token", self.exchange)]

    async def exchange(self, request: web.Request) -> web.Response:
        if self.machines is None:
            return web.json_response({"error": "no machines are configured on this bastion"}, status=404)
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        try:
            answer = await self.machines.exchange(body.get("token"), body.get("public_key"),
                                                  str(request.remote), body.get("machine"))
        except SSOError as exc:
            return web.json_response({"error": str(exc)}, status=exc.http_status)
        return web.json_response(answer)
