"""Proxmox VE: the cluster API on one port plus one port per node (each with the node's own
certificate, closed while the node is offline), all serving the same cluster API like pveproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import ssl
import uuid
from typing import Any

from aiohttp import web

from sandbox.pve.api import PveApi, router
from sandbox.pve.state import NodeCerts
from sandbox.service import Context, Service
from sandbox.services import ca_bundle_path, write_secret
from sandbox.tls import server_ssl_context


def node_names(node: str, domain: str) -> list[str]:
    return [node, f"{node}.{domain}", "localhost"]


class PveService(Service):
    name = "pve"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.token_secret = str(uuid.uuid4())
        self.password = secrets.token_urlsafe(18)
        self.certs: dict[str, NodeCerts] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._sites: dict[str, web.TCPSite] = {}
        self.node_ports: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.api: PveApi | None = None
        # The control API (faults changed) and the watch loop both open and close node ports;
        # unserialised, both could start the same node's site and the second fails in use.
        self._sync_lock: asyncio.Lock | None = None
        self.token_ref = ""
        self._held: dict[str, asyncio.Event] = {}  # control "task": runs until "end_task"
        self.password_ref = ""

    # The router is module level so tests can introspect it without starting anything.
    routes = staticmethod(router.routes)

    def _issue_node_certs(self) -> None:
        lab, ca = self.ctx.lab, self.ctx.ca
        now = dt.datetime.now(dt.UTC)
        for node in lab.nodes:
            pve_ssl = ca.issue_server_cert(
                node_names(node.name, lab.domain),
                [node.ip, "127.0.0.1"],
                days=730,
                not_before=now - dt.timedelta(days=200),
                common_name=f"{node.name}.{lab.domain}",
            )
            certs = NodeCerts(pve_ssl=pve_ssl)
            # ACME nodes carry a custom cert: pve2's is close to expiry so a cert flow flags it.
            left = {"pve1": 61, "pve2": 12}.get(node.name)
            if left is not None:
                certs.pveproxy_ssl = ca.issue_server_cert(
                    node_names(node.name, lab.domain),
                    ["127.0.0.1"],
                    not_before=now - dt.timedelta(days=90 - left),
                    days=90,
                    common_name=f"{node.name}.{lab.domain}",
                )
            self.certs[node.name] = certs

    def issue_acme_cert(self, node: str, domain: str) -> None:
        """A fresh 90-day pveproxy cert, served on the node's port from the next handshake."""
        issued = self.ctx.ca.issue_server_cert(
            [domain, node, "localhost"], ["127.0.0.1"], days=90, common_name=domain
        )
        self.certs[node].pveproxy_ssl = issued
        ctx = self._contexts.get(node)
        if ctx is not None:
            from sandbox.tls import reload_cert

            reload_cert(ctx, issued.chain_pem, issued.key_pem)

    async def start(self) -> None:
        lab = self.ctx.lab
        self._issue_node_certs()
        self.api = PveApi(self)
        app = web.Application(client_max_size=4 * 1024**2)
        app.router.add_route("*", "/api2/json/{tail:.*}", self.api.handle)
        app.router.add_route("*", "/api2/json", self.api.handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        names = [n for node in lab.nodes for n in node_names(node.name, lab.domain)]
        cluster = self.ctx.ca.issue_server_cert(
            sorted(set(names)), ["127.0.0.1"], days=730, common_name=f"{lab.cluster_name}"
        )
        self.port = self.ctx.port()
        site = web.TCPSite(
            self._runner,
            self.ctx.host,
            self.port,
            ssl_context=server_ssl_context(cluster.chain_pem, cluster.key_pem),
        )
        await site.start()
        for node in lab.nodes:
            self.node_ports[node.name] = self.ctx.port()
            eff = self.certs[node.name].effective
            self._contexts[node.name] = server_ssl_context(eff.chain_pem, eff.key_pem)
        await self.sync_nodes()
        self.token_ref = write_secret(self.ctx, "pve_token", self.token_secret)
        self.password_ref = write_secret(self.ctx, "pve_password", self.password)
        self._watch = asyncio.get_running_loop().create_task(self._watch_nodes())

    async def sync_nodes(self) -> None:
        """Open the ports of online nodes and close those of offline ones."""
        assert self.api is not None and self._runner is not None
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            await self._sync_nodes()

    async def _sync_nodes(self) -> None:
        assert self.api is not None and self._runner is not None
        for node in self.ctx.lab.nodes:
            online = self.api.node_online(node.name)
            site = self._sites.get(node.name)
            if online and site is None:
                site = web.TCPSite(
                    self._runner,
                    self.ctx.host,
                    self.node_ports[node.name],
                    ssl_context=self._contexts[node.name],
                )
                await site.start()
                self._sites[node.name] = site
            elif not online and site is not None:
                del self._sites[node.name]
                await site.stop()

    async def on_faults_changed(self) -> None:
        await self.sync_nodes()

    async def _watch_nodes(self) -> None:
        # Node.online may also be flipped directly in the lab (by the fleet or a test).
        while True:
            await asyncio.sleep(0.25)
            with contextlib.suppress(OSError):
                await self.sync_nodes()

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
        if self.api:
            await self.api.tasks.close()
        if self._runner:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        host = self.ctx.host
        return {
            "systems": {
                "proxmox": {
                    "url": f"https://{host}:{self.port}",
                    "token_id": "root@pam!labops",
                    "token_secret": self.token_ref,
                    "tls": {"ca_bundle": str(ca_bundle_path(self.ctx))},
                    "nodes": {
                        n: {"url": f"https://{host}:{p}"} for n, p in self.node_ports.items()
                    },
                },
            },
        }

    def state(self) -> dict[str, Any]:
        assert self.api is not None
        return {
            "port": self.port,
            "node_ports": dict(self.node_ports),
            "offline_nodes": sorted(self.api.offline_nodes()),
            "guests": len(self.ctx.lab.guests),
            "running_tasks": [t.upid for t in self.api.tasks.running()],
            "locked": {g.vmid: g.lock for g in self.ctx.lab.guests if g.lock},
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.api is not None
        lab = self.ctx.lab
        if action == "guest":  # change a guest: {"vmid": 101, "status": "stopped", "lock": ...}
            g = lab.guest(int(payload["vmid"]))
            if g is None:
                raise KeyError(f"no guest {payload['vmid']}")
            for key in ("status", "lock", "node", "tags", "name"):
                if key in payload:
                    setattr(g, key, payload[key])
            return {"vmid": g.vmid, "status": g.status, "lock": g.lock, "node": g.node}
        if action == "node":  # {"node": "pve3", "online": false}
            n = lab.node(str(payload["node"]))
            if n is None:
                raise KeyError(f"no node {payload['node']}")
            n.online = bool(payload.get("online", True))
            return {"node": n.name, "online": n.online}
        if action == "access-reset":  # users, tokens, roles, ACL and pools back to root alone
            self.api.access.reset()
            for pool in sorted({g.pool for g in lab.guests if g.pool}):
                self.api.access.add_pool(pool)
            return {"pools": sorted(self.api.access.pools)}
        if action == "password":
            return {"user": "root@pam", "password": self.password}
        if action == "tasks":
            return {
                "tasks": [
                    {"upid": t.upid, "status": t.status, "exitstatus": t.exitstatus}
                    for t in self.api.tasks.tasks.values()
                ]
            }
        if action == "task":  # a worker task that runs until "end_task": {"node", "type", ...}
            release = asyncio.Event()

            async def body(task: Any) -> int | None:
                for vmid in task.vmids:
                    task.log(f"INFO: Starting Backup of VM {vmid} (lxc)")
                await release.wait()
                return None

            vmids = [int(v) for v in payload.get("vmids", [])]
            task = self.api.tasks.spawn(
                str(payload["node"]),
                str(payload.get("type", "vzdump")),
                str(payload.get("id", "")),
                "root@pam",
                body,
                vmids=vmids,
            )
            self._held[task.upid] = release
            return {"upid": task.upid}
        if action == "end_task":  # {"upid"}
            self._held.pop(str(payload["upid"]), asyncio.Event()).set()
            return {"upid": payload["upid"]}
        if action == "starts":  # guest starts, each with the config it started with
            vmid = payload.get("vmid")
            return {
                "starts": [s for s in self.api.starts if vmid is None or s["vmid"] == int(vmid)]
            }
        if action == "expire_cert":  # {"node": "pve1", "days_left": 5}
            node = str(payload["node"])
            days_left = float(payload.get("days_left", 5))
            now = dt.datetime.now(dt.UTC)
            issued = self.ctx.ca.issue_server_cert(
                node_names(node, lab.domain),
                ["127.0.0.1"],
                not_before=now - dt.timedelta(days=90 - days_left),
                days=90,
                common_name=f"{node}.{lab.domain}",
            )
            self.certs[node].pveproxy_ssl = issued
            from sandbox.tls import reload_cert

            reload_cert(self._contexts[node], issued.chain_pem, issued.key_pem)
            return {"node": node, "notafter": int(issued.cert.not_valid_after_utc.timestamp())}
        raise KeyError(action)


SERVICE = PveService
