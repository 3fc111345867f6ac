"""A step-ca-like certificate authority: the lab's intermediate CA and its public endpoints.

Answers like smallstep/certificates: ``/health``, ``/version``, ``/roots`` and ``/intermediates``
with **201 Created**, ``/roots.pem``, ``/intermediates.pem``, ``/provisioners``, and the ACME
directory at ``/acme/<provisioner>/directory`` (also under ``/2.0``). Served over HTTPS with a
leaf issued by the intermediate (leaf + intermediate in the chain, as step-ca does).

The intermediate lives in ``lab.shared["step_ca"]`` so that the Traefik-like service issues the
services' certificates from the same CA that this one publishes.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import ca_bundle_path
from sandbox.tls import SandboxCA, server_ssl_context

PROVISIONER = "acme"


def lab_intermediate(ctx: Context) -> SandboxCA:
    """The lab's issuing CA (created once, shared by every service that issues certificates)."""
    with ctx.lab.lock:
        shared = ctx.lab.shared.setdefault("step_ca", {})
        if "intermediate" not in shared:
            # Older than any leaf it signed, as a real CA's intermediate is.
            shared["intermediate"] = ctx.ca.issue_intermediate(
                "Sandbox Homelab Intermediate CA",
                days=3650,
                not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400),
            )
        inter: SandboxCA = shared["intermediate"]
        return inter


class StepCaService(Service):
    name = "step_ca"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.intermediate: SandboxCA | None = None

    @property
    def base(self) -> str:
        return f"https://{self.ctx.host}:{self.port}"

    async def start(self) -> None:
        self.intermediate = lab_intermediate(self.ctx)
        leaf = self.ctx.ca.issue_server_cert(
            ["ca.lab.internal", "step-ca", "localhost"],
            [self.ctx.host],
            days=1,
            issuer=self.intermediate,
            common_name="Step Online CA",
        )
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/roots", self.roots)
        app.router.add_get("/roots.pem", self.roots_pem)
        app.router.add_get("/intermediates", self.intermediates)
        app.router.add_get("/intermediates.pem", self.intermediates_pem)
        app.router.add_get("/provisioners", self.provisioners)
        for prefix in ("", "/2.0"):
            app.router.add_get(prefix + "/acme/{prov}/directory", self.directory)
            app.router.add_get(prefix + "/acme/{prov}/new-nonce", self.nonce)  # + HEAD
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.port = self.ctx.port()
        site = web.TCPSite(
            self._runner,
            self.ctx.host,
            self.port,
            ssl_context=server_ssl_context(leaf.chain_pem, leaf.key_pem),
        )
        await site.start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _faulty(self) -> web.Response | None:
        faults = self.ctx.faults_for(self.name)
        if faults.roll(faults.error_rate, self.ctx.rng):
            return web.json_response(
                {
                    "status": 500,
                    "message": "The certificate authority encountered an Internal Server Error.",
                },
                status=500,
            )
        return None

    async def health(self, req: web.Request) -> web.Response:
        return self._faulty() or web.json_response({"status": "ok"})

    async def version(self, req: web.Request) -> web.Response:
        return web.json_response({"version": "0.30.2"})

    def _pems(self, which: str) -> list[str]:
        assert self.intermediate is not None
        if which == "roots":
            return [self.ctx.ca.root_pem.decode()]
        return [self.intermediate.cert_pem.decode()]

    async def roots(self, req: web.Request) -> web.Response:
        # step-ca answers these with 201 Created (render.JSONStatus(..., http.StatusCreated)).
        return self._faulty() or web.json_response({"crts": self._pems("roots")}, status=201)

    async def intermediates(self, req: web.Request) -> web.Response:
        return self._faulty() or web.json_response(
            {"crts": self._pems("intermediates")}, status=201
        )

    async def roots_pem(self, req: web.Request) -> web.Response:
        return web.Response(
            body="".join(self._pems("roots")).encode(), content_type="application/x-pem-file"
        )

    async def intermediates_pem(self, req: web.Request) -> web.Response:
        return web.Response(
            body="".join(self._pems("intermediates")).encode(),
            content_type="application/x-pem-file",
        )

    async def provisioners(self, req: web.Request) -> web.Response:
        return web.json_response(
            {
                "provisioners": [
                    {
                        "type": "JWK",
                        "name": "admin@lab.internal",
                        "key": {"kty": "EC"},
                        "encryptedKey": "eyJhbGciOi...",
                    },
                    {
                        "type": "ACME",
                        "name": PROVISIONER,
                        "forceCN": False,
                        "claims": {"defaultTLSCertDuration": "24h0m0s"},
                    },
                ],
                "nextCursor": "",
            }
        )

    async def directory(self, req: web.Request) -> web.Response:
        prov = req.match_info["prov"]
        if prov != PROVISIONER:
            return web.json_response(
                {
                    "type": "urn:ietf:params:acme:error:accountDoesNotExist",
                    "detail": f"provisioner '{prov}' not found",
                },
                status=404,
            )
        base = f"{self.base}/acme/{prov}"
        return web.json_response(
            {
                "newNonce": f"{base}/new-nonce",
                "newAccount": f"{base}/new-account",
                "newOrder": f"{base}/new-order",
                "revokeCert": f"{base}/revoke-cert",
                "keyChange": f"{base}/key-change",
            }
        )

    async def nonce(self, req: web.Request) -> web.Response:
        status = 200 if req.method == "HEAD" else 204
        return web.Response(
            status=status,
            headers={
                "Replay-Nonce": secrets.token_urlsafe(16),
                "Cache-Control": "no-store",
            },
        )

    def config_fragment(self) -> dict[str, Any]:
        ca = str(ca_bundle_path(self.ctx))
        return {
            "systems": {"step_ca": {"url": self.base, "tls": {"ca_bundle": ca}}},
            "certificates": {"trusted_roots": [ca]},
        }


SERVICE = StepCaService
