"""Technitium DNS Server HTTP API: token auth, zones, records; errors come with HTTP 200.

Records of the internal zone follow the lab: one A record per node and per guest, and the
wildcard ``*.<domain>`` on Traefik's address, the way a homelab routes every service name. A
second zone, ``home.arpa``, holds the home network's devices: the router and a wildcard on it.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import write_secret
from sandbox.web import fault_middleware, serve

_EPOCH = "2026-11-01T08:00:00Z"
HOME_ZONE = "home.arpa"
HOME_ROUTER = "192.168.1.1"


class TechnitiumService(Service):
    name = "technitium"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.token = secrets.token_hex(32)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.extra_records: list[dict[str, Any]] = []

    async def start(self) -> None:
        app = web.Application(middlewares=[fault_middleware(self.ctx, self.name)])
        app.router.add_route("*", "/api/zones/list", self.zones_list)
        app.router.add_route("*", "/api/zones/records/get", self.records_get)
        app.router.add_route("*", "/api/user/login", self.login)
        app.router.add_route("*", "/api/{tail:.*}", self.not_found)
        self.port = self.ctx.port()
        self._runner = await serve(self.ctx, app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        return {
            "systems": {
                "technitium": {
                    "url": f"http://{self.ctx.host}:{self.port}",
                    "token": write_secret(self.ctx, "technitium_token", self.token),
                    "zone": self.ctx.lab.domain,
                }
            }
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "add_record":
            self.extra_records.append(payload)
            return {"records": len(self.extra_records)}
        raise KeyError(action)

    # -- handlers -------------------------------------------------------------------------

    @staticmethod
    def _ok(response: dict[str, Any]) -> web.Response:
        return web.json_response({"response": response, "server": "dns1", "status": "ok"})

    @staticmethod
    def _error(status: str, message: str) -> web.Response:
        # Technitium reports every API error with HTTP 200 and a status field.
        return web.json_response({"status": status, "errorMessage": message, "server": "dns1"})

    async def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not token:
            token = request.query.get("token", "")
        if not token and request.method == "POST":
            token = str((await request.post()).get("token", ""))
        return secrets.compare_digest(token, self.token)

    async def login(self, request: web.Request) -> web.Response:
        return self._error("error", "Invalid username or password.")

    async def not_found(self, request: web.Request) -> web.Response:
        if not await self._authorised(request):
            return self._error("invalid-token", "Invalid token or session expired.")
        return web.Response(status=404)

    async def zones_list(self, request: web.Request) -> web.Response:
        if not await self._authorised(request):
            return self._error("invalid-token", "Invalid token or session expired.")
        zones = [
            {
                "name": name,
                "type": "Primary",
                "internal": False,
                "dnssecStatus": "Unsigned",
                "soaSerial": 42,
                "notifyFailed": False,
                "notifyFailedFor": [],
                "lastModified": _EPOCH,
                "disabled": False,
            }
            for name in (self.ctx.lab.domain, HOME_ZONE)
        ]
        return self._ok(
            {"pageNumber": 1, "totalPages": 1, "totalZones": len(zones), "zones": zones}
        )

    def _records(self, zone: str) -> list[dict[str, Any]]:
        lab = self.ctx.lab
        domain = zone

        def a(name: str, ip: str) -> dict[str, Any]:
            return {
                "name": name,
                "type": "A",
                "ttl": 3600,
                "rData": {"ipAddress": ip},
                "dnssecStatus": "Unknown",
                "disabled": False,
                "lastUsedOn": "0001-01-01T00:00:00",
            }

        soa = {
            "name": domain,
            "type": "SOA",
            "ttl": 900,
            "disabled": False,
            "dnssecStatus": "Unknown",
            "rData": {
                "primaryNameServer": f"dns1.{domain}",
                "responsiblePerson": f"hostadmin.{domain}",
                "serial": 42,
                "refresh": 900,
                "retry": 300,
                "expire": 604800,
                "minimum": 900,
            },
        }
        if zone == HOME_ZONE:
            return [soa, a(f"router.{zone}", HOME_ROUTER), a(f"*.{zone}", HOME_ROUTER)]
        with lab.lock:
            traefik = next((g for g in lab.guests if g.name == "traefik"), None)
            records = [soa]
            records += [a(f"{n.name}.{domain}", n.ip) for n in lab.nodes]
            records += [a(f"{g.name}.{domain}", g.ip) for g in lab.guests if not g.template]
        if traefik is not None:
            records.append(a(f"*.{domain}", traefik.ip))
        for extra in self.extra_records:
            records.append(a(str(extra["name"]), str(extra["ip"])))
        return records

    async def records_get(self, request: web.Request) -> web.Response:
        if not await self._authorised(request):
            return self._error("invalid-token", "Invalid token or session expired.")
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        domain = params.get("domain", "").lower().rstrip(".")
        zone = params.get("zone", domain).lower().rstrip(".")
        if not domain:
            return self._error("error", "Parameter 'domain' missing.")
        if zone not in (self.ctx.lab.domain, HOME_ZONE):
            return self._error("error", f"No such zone was found: {zone}")
        records = self._records(zone)
        if params.get("listZone", "false").lower() != "true":
            records = [r for r in records if r["name"] == domain]
        zone_info = {
            "name": zone,
            "type": "Primary",
            "internal": False,
            "dnssecStatus": "Unsigned",
            "disabled": False,
        }
        return self._ok({"zone": zone_info, "records": records})


SERVICE = TechnitiumService
