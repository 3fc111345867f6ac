"""Beszel hub (PocketBase): password auth and the ``systems`` collection, one per agent.

Agents run on the nodes and on the first containers of the lab (30 in the default lab, like the
model homelab's "30 deployed agents"); stopped guests report ``down``.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import write_secret
from sandbox.web import fault_middleware, serve

AGENTS_IN_DEFAULT_LAB = 30


def _pb_id(seed: str) -> str:
    """PocketBase ids are 15 lowercase alphanumerics."""
    return hashlib.sha1(seed.encode()).hexdigest()[:15]


class BeszelService(Service):
    name = "beszel"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.email = "labops@lab.internal"
        self.password = secrets.token_urlsafe(16)
        self.tokens: set[str] = set()
        self.user_id = _pb_id("user:labops")
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[fault_middleware(self.ctx, self.name)])
        app.router.add_post("/api/collections/users/auth-with-password", self.auth)
        app.router.add_get("/api/collections/systems/records", self.systems)
        app.router.add_get("/api/health", self.health)
        self.port = self.ctx.port()
        self._runner = await serve(self.ctx, app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        return {
            "systems": {
                "beszel": {
                    "url": f"http://{self.ctx.host}:{self.port}",
                    "username": self.email,
                    "password": write_secret(self.ctx, "beszel_password", self.password),
                }
            }
        }

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"data": {}, "message": message, "status": status}, status=status)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 200, "message": "API is healthy.", "data": {}})

    async def auth(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Failed to authenticate.")
        if body.get("identity") != self.email or not secrets.compare_digest(
            str(body.get("password", "")), self.password
        ):
            # PocketBase answers a wrong password with 400, not 401.
            return self._error(400, "Failed to authenticate.")
        token = secrets.token_urlsafe(32)
        self.tokens.add(token)
        record = {
            "id": self.user_id,
            "collectionName": "users",
            "email": self.email,
            "verified": True,
        }
        return web.json_response({"token": token, "record": record})

    def _items(self) -> list[dict[str, Any]]:
        lab = self.ctx.lab
        with lab.lock:
            hosts: list[tuple[str, str, bool]] = [(n.name, n.ip, n.online) for n in lab.nodes]
            hosts += [
                (g.name, g.ip, g.status == "running")
                for g in lab.guests
                if g.type == "lxc" and not g.template
            ]
        count = AGENTS_IN_DEFAULT_LAB if len(hosts) >= AGENTS_IN_DEFAULT_LAB else len(hosts)
        return [
            {
                "collectionId": "2hz5ncl8tizk5nx",
                "collectionName": "systems",
                "id": _pb_id(f"system:{name}"),
                "name": name,
                "host": ip,
                "port": "45876",
                "status": "up" if up else "down",
                "users": [self.user_id],
                "info": {"u": 864000, "cpu": 3.2, "mp": 41.5, "dp": 62.0, "v": "0.18.8"},
                "created": "2026-11-01 10:00:00.000Z",
                "updated": "2026-11-27 06:00:00.000Z",
            }
            for name, ip, up in hosts[:count]
        ]

    async def systems(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        # The list rule hides every system from an anonymous caller: an empty page, not a 401.
        items = self._items() if token in self.tokens else []
        try:
            page = max(1, int(request.query.get("page", "1")))
            per_page = min(400, max(1, int(request.query.get("perPage", "30"))))
        except ValueError:
            return self._error(400, "Something went wrong while processing your request.")
        total_pages = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        return web.json_response(
            {
                "page": page,
                "perPage": per_page,
                "totalItems": len(items),
                "totalPages": total_pages,
                "items": chunk,
            }
        )


SERVICE = BeszelService
