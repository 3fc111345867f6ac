"""Proxmox Backup Server on a port of its own, over the datastore PVE's vzdump writes to."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from sandbox.pbs.api import PbsApi
from sandbox.pbs.store import Datastore, shared_store
from sandbox.service import Context, Service
from sandbox.services import ca_bundle_path, write_secret
from sandbox.tls import server_ssl_context


class PbsService(Service):
    name = "pbs"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.token_secret = secrets.token_hex(16)
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.api: PbsApi | None = None
        self._runner: web.AppRunner | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.token_ref = ""
        self._site: web.TCPSite | None = None
        self._ssl: ssl.SSLContext | None = None

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    host_name = "pbs"  # its certificate's names: pbs, pbs.<domain>

    def datastore(self) -> Datastore:
        """The one datastore it serves."""
        return shared_store(self.ctx.lab)

    async def start(self) -> None:
        self.api = PbsApi(self, self.datastore())
        app = web.Application(client_max_size=4 * 1024**2)
        app.router.add_route("*", "/api2/json/{tail:.*}", self.api.handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        domain = self.ctx.lab.domain
        host = self.host_name
        cert = self.ctx.ca.issue_server_cert(
            [host, f"{host}.{domain}", "localhost"],
            ["127.0.0.1"],
            days=730,
            common_name=f"{host}.{domain}",
        )
        self.port = self.ctx.port()
        self._ssl = server_ssl_context(cert.chain_pem, cert.key_pem)
        await self.on_faults_changed()
        self.token_ref = write_secret(self.ctx, f"{self.name}_token", self.token_secret)
        write_secret(self.ctx, f"{self.name}_password", self.password)

    async def on_faults_changed(self) -> None:
        """Fault ``extra.offline`` of system pbs: the port refuses connections (PVE's storage
        ``pbs`` turns inactive and backups to it fail)."""
        assert self._runner is not None
        offline = bool(self.ctx.faults_for(self.name).extra.get("offline"))
        if offline and self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        elif not offline and self._site is None:
            self._site = web.TCPSite(self._runner, self.ctx.host, self.port, ssl_context=self._ssl)
            await self._site.start()

    async def stop(self) -> None:
        for t in list(self._bg):
            t.cancel()
        if self.api:
            await self.api.tasks.close()
        if self._runner:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        return {
            "systems": {
                "pbs": {
                    "url": f"https://{self.ctx.host}:{self.port}",
                    "token_id": "root@pam!labops",
                    "token_secret": self.token_ref,
                    "tls": {"ca_bundle": str(ca_bundle_path(self.ctx))},
                    "datastore": "store1",
                    "pve_storage": "pbs",
                },
            },
        }

    def state(self) -> dict[str, Any]:
        store = self.datastore()
        return {
            "port": self.port,
            "datastore": store.name,
            "snapshots": len(store.snapshots),
            "gc_running": store.gc_running,
            "seed": store.seed,
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        store = self.datastore()
        if action == "corrupt":  # {"backup-type": "ct", "backup-id": "101"} (all its snapshots)
            btype, bid = str(payload["backup-type"]), str(payload["backup-id"])
            keys = [s.key for s in store.listing(btype, bid)]
            if "backup-time" in payload:
                keys = [k for k in keys if k[2] == int(payload["backup-time"])]
            store.corrupt.update(keys)
            return {"corrupt": len(keys)}
        if action == "seed":
            return dict(store.seed)
        raise KeyError(action)


SERVICE = PbsService
