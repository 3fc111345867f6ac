"""A Traefik-like reverse proxy: the API (``/api/http/routers`` and friends) and a websecure
entrypoint that presents each router's certificate by SNI.

The routers are the lab's HTTPS services (24 h step-ca certificates issued by the lab's
intermediate, renewed by "Traefik" at two thirds of their lifetime) plus one router per
certificate case a checker must recognise: long-lived, expiring in 3 and 20 days, expired,
24 h certs with 3 h and 20 h left, wrong host name, self-signed, untrusted root, missing
intermediate, and an intermediate that expires before its leaves. Two direct endpoints (in the
inventory) cover an unreachable host (a closed port) and one that accepts TCP but never answers
the TLS handshake.

API facts reproduced: list endpoints return bare arrays, sorted by name, paginated with
``per_page``/``page`` and the ``X-Next-Page`` header (``1`` on the last page), 400 on a page out
of range; errors are ``{"message": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services.stepca import lab_intermediate
from sandbox.tls import (
    IssuedCert,
    SandboxCA,
    reload_cert,
    self_signed_server_cert,
    server_ssl_context,
)

HOUR = 3600.0
DAY = 86400.0

# Which status and reason a correct checker gives each case router (tests read this).
CASES: dict[str, str] = {
    "longlived": "ok",
    "expiring-3d": "critical",
    "expiring-20d": "warning",
    "expired": "expired",
    "short-3h": "renewal overdue",
    "short-20h": "ok",
    "wrong-host": "hostname mismatch",
    "self-signed": "untrusted",
    "untrusted-root": "untrusted",
    "missing-intermediate": "incomplete chain",
    "short-intermediate": "critical",
}
DIRECT_CASES = {"offline": "unreachable", "stalled": "unreachable"}


@dataclass
class RouterDef:
    name: str  # without @provider
    rule: str
    host: str | None  # host whose certificate this router serves (None: no TLS / no cert)
    tls: bool = True
    status: str = "enabled"
    provider: str = "docker"

    def api(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "entryPoints": ["websecure" if self.tls else "web"],
            "service": self.name,
            "rule": self.rule,
            "status": self.status,
            "using": ["websecure" if self.tls else "web"],
            "name": f"{self.name}@{self.provider}",
            "provider": self.provider,
        }
        if self.tls:
            item["tls"] = {"certResolver": "stepca"}
        if self.status == "disabled":
            item["error"] = ['the service "missing@docker" does not exist']
        return item


class TraefikService(Service):
    name = "traefik"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.api_port = 0
        self.entry_port = 0
        self.closed_port = 0
        self.stall_port = 0
        self.routers: list[RouterDef] = []
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.certs: dict[str, IssuedCert] = {}
        self._default: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._stalled: set[asyncio.StreamWriter] = set()

    # -- certificates -------------------------------------------------------------------------

    def host(self, short: str) -> str:
        return f"{short}.{self.ctx.lab.domain}"

    def _issue(
        self, host: str, lifetime_s: float, left_s: float, issuer: SandboxCA | None = None
    ) -> IssuedCert:
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(seconds=lifetime_s - left_s)
        return self.ctx.ca.issue_server_cert(
            [host],
            not_before=start,
            not_after=start + dt.timedelta(seconds=lifetime_s),
            issuer=issuer or lab_intermediate(self.ctx),
        )

    def _case_cert(self, case: str, host: str) -> IssuedCert:
        inter = lab_intermediate(self.ctx)
        if case == "longlived":
            return self._issue(host, 365 * DAY, 300 * DAY)
        if case == "expiring-3d":
            return self._issue(host, 365 * DAY, 3 * DAY)
        if case == "expiring-20d":
            return self._issue(host, 365 * DAY, 20 * DAY)
        if case == "expired":
            return self._issue(host, 90 * DAY, -2 * DAY)
        if case == "short-3h":
            return self._issue(host, 24 * HOUR, 3 * HOUR)
        if case == "short-20h":
            return self._issue(host, 24 * HOUR, 20 * HOUR)
        if case == "wrong-host":
            return self._issue(self.host("other-host"), 24 * HOUR, 20 * HOUR)
        if case == "self-signed":
            return self_signed_server_cert([host], days=365)
        if case == "untrusted-root":
            foreign = SandboxCA.create("Foreign Root CA").issue_intermediate("Foreign Issuing CA")
            return self._issue(host, 90 * DAY, 60 * DAY, issuer=foreign)
        if case == "missing-intermediate":
            full = self._issue(host, 24 * HOUR, 20 * HOUR, issuer=inter)
            return IssuedCert(cert=full.cert, key=full.key, chain_pem=full.cert_pem)
        if case == "short-intermediate":
            # A 3-year intermediate in its last 5 days, signing 90-day leaves with 60 days left.
            short = self.ctx.ca.issue_intermediate(
                "Sandbox Expiring Intermediate",
                days=3 * 365,
                not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3 * 365 - 5),
            )
            return self._issue(host, 90 * DAY, 60 * DAY, issuer=short)
        raise KeyError(case)

    def _set_cert(self, host: str, issued: IssuedCert) -> None:
        self.certs[host] = issued
        ctx = self.contexts.get(host)
        if ctx is None:
            self.contexts[host] = server_ssl_context(issued.chain_pem, issued.key_pem)
        else:
            reload_cert(ctx, issued.chain_pem, issued.key_pem)

    def _build(self) -> None:
        lab = self.ctx.lab
        rng = self.ctx.rng
        for case in CASES:
            host = self.host(case)
            self.routers.append(RouterDef(case, f"Host(`{host}`)", host))
            self._set_cert(host, self._case_cert(case, host))
        # The lab's services: a 24 h step-ca cert each, renewed on time (0-15 h old).
        apps = [g.name for g in lab.guests if g.type == "lxc" and "app" in g.tags][:26]
        for name in apps:
            host = self.host(name)
            self.routers.append(RouterDef(name, f"Host(`{host}`)", host))
            self._set_cert(host, self._issue(host, 24 * HOUR, (9 + rng.random() * 14) * HOUR))
        # Rule shapes: two hosts in one rule, a path router sharing a host, TLS off, disabled.
        grafana, auth = self.host("grafana"), self.host("auth")
        self.routers.append(RouterDef("grafana", f"Host(`{grafana}`) || Host(`{auth}`)", grafana))
        self._set_cert(
            grafana,
            self.ctx.ca.issue_server_cert(
                [grafana, auth],
                days=1,
                not_before=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
                issuer=lab_intermediate(self.ctx),
            ),
        )
        self.contexts[auth] = self.contexts[grafana]
        self.routers.append(
            RouterDef("grafana-api", f"Host(`{grafana}`) && PathPrefix(`/api`)", grafana)
        )
        self.routers.append(RouterDef("dashboard", "PathPrefix(`/dashboard`)", None))
        self.routers.append(
            RouterDef("legacy-http", f"Host(`{self.host('legacy')}`)", None, tls=False)
        )
        self.routers.append(
            RouterDef("broken", f"Host(`{self.host('broken')}`)", None, status="disabled")
        )
        self.routers.sort(key=lambda r: r.api()["name"])

    # -- servers ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._build()
        app = web.Application()
        app.router.add_get("/api/http/routers", self.list_routers)
        app.router.add_get("/api/http/routers/{name}", self.get_router)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/overview", self.overview)
        app.router.add_get("/api/entrypoints", self.entrypoints)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.api_port = self.ctx.port()
        await web.TCPSite(self._runner, self.ctx.host, self.api_port).start()

        default = self_signed_server_cert(["TRAEFIK DEFAULT CERT"])
        self._default = server_ssl_context(default.chain_pem, default.key_pem)
        self._default.sni_callback = self._pick
        self.entry_port = self.ctx.port()
        self._servers.append(
            await asyncio.start_server(
                self._serve_https,
                self.ctx.host,
                self.entry_port,
                ssl=self._default,
                ssl_handshake_timeout=10,
            )
        )
        self.closed_port = self.ctx.port()  # never bound: "connection refused"
        self.stall_port = self.ctx.port()
        self._servers.append(
            await asyncio.start_server(self._stall, self.ctx.host, self.stall_port)
        )

    def _pick(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = self.contexts.get((server_name or "").lower())
        if chosen is not None:
            sslobj.context = chosen

    async def _serve_https(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                )
                await writer.drain()
        finally:
            writer.close()

    async def _stall(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Accept TCP, never answer the ClientHello; hang up only when the client does.
        self._stalled.add(writer)
        try:
            with contextlib.suppress(Exception):
                while await reader.read(4096):
                    pass
        finally:
            self._stalled.discard(writer)
            writer.close()

    async def stop(self) -> None:
        for w in list(self._stalled):
            w.close()
        for server in self._servers:
            server.close()
        if self._runner:
            await self._runner.cleanup()

    # -- API ------------------------------------------------------------------------------------

    def _faulty(self) -> web.Response | None:
        faults = self.ctx.faults_for(self.name)
        if faults.roll(faults.error_rate, self.ctx.rng):
            return web.json_response({"message": "internal error"}, status=500)
        return None

    async def list_routers(self, req: web.Request) -> web.Response:
        bad = self._faulty()
        if bad:
            return bad
        items = [r.api() for r in self.routers]
        search = req.query.get("search", "").lower()
        if search:
            items = [i for i in items if search in i["rule"].lower() or search in i["name"]]
        status = req.query.get("status")
        if status:
            items = [i for i in items if i["status"] == status]
        try:
            per_page = int(req.query.get("per_page", "100"))
            page = int(req.query.get("page", "1"))
        except ValueError:
            return web.json_response({"message": "invalid request: bad pagination"}, status=400)
        start = (page - 1) * per_page
        if page < 1 or per_page < 1 or (start >= len(items) and page != 1):
            return web.json_response(
                {"message": f"invalid request: page: {page}, per_page: {per_page}"}, status=400
            )
        end = start + per_page
        nxt = page + 1 if end < len(items) else 1
        return web.json_response(items[start:end], headers={"X-Next-Page": str(nxt)})

    async def get_router(self, req: web.Request) -> web.Response:
        name = req.match_info["name"]
        for r in self.routers:
            if r.api()["name"] == name:
                return web.json_response(r.api())
        return web.json_response({"message": f"router not found: {name}"}, status=404)

    async def version(self, req: web.Request) -> web.Response:
        return web.json_response(
            {"Version": "3.3.4", "Codename": "saintnectaire", "startDate": "2026-01-01T00:00:00Z"}
        )

    async def overview(self, req: web.Request) -> web.Response:
        items = [r.api() for r in self.routers]
        counts = {
            "total": len(items),
            "warnings": sum(i["status"] == "warning" for i in items),
            "errors": sum(i["status"] == "disabled" for i in items),
        }
        zero = {"total": 0, "warnings": 0, "errors": 0}
        return web.json_response(
            {
                "http": {"routers": counts, "services": dict(counts), "middlewares": zero},
                "tcp": {"routers": zero, "services": zero, "middlewares": zero},
                "udp": {"routers": zero, "services": zero},
                "features": {"tracing": "", "metrics": "prometheus", "accessLog": False},
                "providers": ["Docker", "File"],
            }
        )

    async def entrypoints(self, req: web.Request) -> web.Response:
        return web.json_response(
            [
                {"address": f":{self.entry_port}", "name": "websecure"},
                {"address": ":80", "name": "web"},
            ]
        )

    # -- config and control ---------------------------------------------------------------------

    def config_fragment(self) -> dict[str, Any]:
        host = self.ctx.host
        return {
            "systems": {
                "traefik": {
                    "url": f"http://{host}:{self.api_port}",
                    "entrypoint": f"{host}:{self.entry_port}",
                }
            },
            "inventory": {
                "endpoints": [
                    {"name": self.host("offline"), "address": host, "port": self.closed_port},
                    {"name": self.host("stalled"), "address": host, "port": self.stall_port},
                ]
            },
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``reissue`` {host, lifetime_h, left_h}: a new cert from the lab CA for a router's host
        (what a renewal by Traefik looks like); ``cases``: the expected status per host."""
        if action == "reissue":
            host = str(payload["host"]).lower()
            if host not in self.contexts:
                raise KeyError(f"no router serves {host}")
            lifetime = float(payload.get("lifetime_h", 24)) * HOUR
            left = float(payload.get("left_h", 20)) * HOUR
            issued = self._issue(host, lifetime, left)
            self._set_cert(host, issued)
            return {"host": host, "not_after": issued.cert.not_valid_after_utc.isoformat()}
        if action == "cases":
            return {
                "routers": {self.host(c): s for c, s in CASES.items()},
                "direct": {self.host(c): s for c, s in DIRECT_CASES.items()},
                "entrypoint": f"{self.ctx.host}:{self.entry_port}",
            }
        raise KeyError(action)


SERVICE = TraefikService
