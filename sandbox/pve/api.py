"""The Proxmox VE REST API (``/api2/json``) over the shared lab state.

Quirks reproduced on purpose (homelab-api-facts.md §1, §15): errors in the reason phrase,
0/1 booleans out and only "1"/"0" in, 501 for unknown methods, delayed 401s, ``"OK"`` from a vzdump
that has nothing to do on the node, 8-field UPIDs, task exit status from the last log line.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.lab import Guest, Node
from sandbox.pbs.store import (
    HOME_NS,
    Snapshot,
    backup_type,
    prune_marks,
    shared_store,
    snapshot_files,
)
from sandbox.pve import propstring
from sandbox.pve.access import ROOT, Access, AccessError, Denied, Pool, split_list
from sandbox.pve.http import (
    ApiError,
    Dropped,
    Result,
    Router,
    abort_connection,
    inject_faults,
    param_error,
    parse_bool,
    read_args,
)
from sandbox.pve.params import check as check_params
from sandbox.pve.params import declaration
from sandbox.pve.state import (
    DAY,
    LocalVolume,
    ReplicationJob,
    SnapshotRec,
    guest_stats,
    seed_apt,
    seed_jobs,
    seed_local,
    seed_replication,
)
from sandbox.pve.tasks import Task, TaskError, TaskManager
from sandbox.tls import cert_info

if TYPE_CHECKING:
    from sandbox.pve import PveService

API = "/api2/json"
VERSION = {"version": "9.1.1", "release": "9.1", "repoid": "42db4a6cf33dac83", "console": "xtermjs"}
# PVE's storages of type pbs: the one datastore, each in its namespace ("" the root one).
PBS_STORAGES = {"pbs": "", "pbs-home": HOME_NS}
_PBS_FINGERPRINT = (
    "ab:13:9d:6e:2c:01:7f:44:90:3b:5e:c8:21:0a:77:f2:"
    "1c:d9:43:88:6b:02:e5:3f:91:ad:c4:58:7e:10:b6:29"
)
_STORAGE_CFG_DIGEST = "6c2b0a3de9f1f04b7e5d3c08a1f2e9b47c6d5a10"
_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$", re.IGNORECASE)
_UPID = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):"
    r"(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s]+):"
    r"(?P<id>[^:\s]*):(?P<user>[^:\s]+):$"
)

router = Router()
route = router.route


def pve_upid(t: Task) -> str:
    return f"UPID:{t.node}:{t.pid:08X}:{t.pstart:08X}:{t.starttime:08X}:{t.type}:{t.id}:{t.authid}:"


def _fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Req:
    """One API call: path parameters, merged arguments, who is calling."""

    def __init__(self, params: dict[str, str], args: dict[str, Any], authid: str) -> None:
        self.params = params
        self.args = args
        self.authid = authid

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.args.get(name)
        return default if value is None else bool(parse_bool(value))

    def int(self, name: str, default: int | None = None) -> int | None:
        value = self.args.get(name)
        return default if value is None or value == "" else int(value)

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.args.get(name)
        return default if value is None else str(value)


class PveApi:
    """State and handlers; :class:`sandbox.pve.PveService` owns the listeners."""

    def __init__(self, service: PveService) -> None:
        self.svc = service
        ctx = service.ctx
        self.ctx = ctx
        self.lab = ctx.lab
        self.token_id = "root@pam!labops"
        self.token_secret = service.token_secret
        self.password = service.password
        self._ticket_key = secrets.token_bytes(32)
        self.tasks = TaskManager(pve_upid)
        # Users, tokens, roles, ACL and pools (user.cfg); the lab's guests carry their pool.
        self.access = Access(lambda: {g.vmid: g.pool for g in self.lab.guests if g.pool})
        self.access.add_token(ROOT, "labops", privsep=False, secret=self.token_secret)
        for pool in sorted({g.pool for g in self.lab.guests if g.pool}):
            self.access.pools[pool] = Pool()
        now = time.time()
        self.store = shared_store(self.lab)
        self.jobs = seed_jobs(self.lab)
        self.local: list[LocalVolume] = seed_local(self.lab, now)
        self.replication = seed_replication(self.lab, now)
        self.snapshots: dict[int, list[SnapshotRec]] = {}
        self.apt = {n.name: seed_apt(n.name, ctx.rng) for n in self.lab.nodes}
        self.apt_checked = {n.name: int(now - 5 * 3600) for n in self.lab.nodes}
        self.node_acme = {"pve1": "domains=pve1.lab.internal", "pve2": "domains=pve2.lab.internal"}
        # Guest configs are made up from the lab's Guest records; what a PUT .../config set
        # (value) or deleted (None) is kept here, by vmid, until the guest is destroyed.
        self.config_edits: dict[int, dict[str, Any]] = {}
        # (vmid, backup time) -> deep copy of the guest's host state when vzdump read it: a
        # restore over the guest puts that state back (packages, as a real restore would)
        self.backed_up_states: dict[tuple[int, int], Any] = {}
        # Each guest start with the config it started with (control action "starts").
        self.starts: list[dict[str, Any]] = []
        self._seed_tasks(now)

    # ---- plumbing -----------------------------------------------------------------------

    @property
    def faults(self) -> Any:
        return self.ctx.faults_for("pve")

    def offline_nodes(self) -> set[str]:
        extra = set(self.faults.extra.get("offline_nodes") or [])
        return extra | {n.name for n in self.lab.nodes if not n.online}

    def node_online(self, name: str) -> bool:
        return name not in self.offline_nodes()

    def guest_lock(self, guest: Guest) -> str | None:
        locked = self.faults.extra.get("locked_vmids") or {}
        if isinstance(locked, list):
            locked = {str(v): "snapshot" for v in locked}
        return guest.lock or locked.get(str(guest.vmid)) or locked.get(guest.vmid)  # type: ignore[call-overload]

    def pbs_down(self) -> str | None:
        """Why PBS cannot be reached (fault ``offline`` of system pbs), or None."""
        if not self.ctx.faults_for("pbs").extra.get("offline"):
            return None
        return (
            "error fetching datastores - 500 Can't connect to pbs.lab.internal:8007 "
            "(Connection refused)"
        )

    def warns(self, vmid: int) -> bool:
        """Fault ``warning_vmids``: the backup succeeds with a WARN: line (``WARNINGS: n``)."""
        listed = self.faults.extra.get("warning_vmids") or []
        return vmid in listed or str(vmid) in listed

    def failing(self, vmid: int) -> str | None:
        failing = self.faults.extra.get("failing_vmids") or []
        if isinstance(failing, dict):
            msg = failing.get(str(vmid)) or failing.get(vmid)  # type: ignore[call-overload]
            return str(msg) if msg else None
        if vmid in failing or str(vmid) in failing:
            return "command '/usr/bin/proxmox-backup-client backup' failed: exit code 255"
        return None

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.ctx.time_scale)

    def knob(self, name: str, vmid: int) -> Any:
        """Take a one-shot per-vmid fault knob (``extra[name]``, a list or a vmid -> value map)."""
        table = self.faults.extra.get(name)
        if isinstance(table, list):
            if vmid in table or str(vmid) in table:
                table[:] = [v for v in table if str(v) != str(vmid)]
                return True
            return None
        if isinstance(table, dict):
            for key in (str(vmid), vmid):
                if key in table:
                    return table.pop(key)  # type: ignore[call-overload]
        return None

    # ---- permissions the handlers check themselves (routes declared "user": "all") ----------

    def can(self, req: Req, path: str, privs: list[str], any_: bool = False) -> bool:
        return self.access.has(req.authid, path, privs, any_)

    def volume_access(self, req: Req, vmid: int | None, volid: str, owner: int | None) -> None:
        """PVE::Storage::check_volume_access for a backup volume (the only kind served)."""
        sid = volid.split(":", 1)[0]
        if self.can(req, f"/storage/{sid}", ["Datastore.Allocate"]):
            return
        if owner is not None and vmid is not None and owner == vmid:
            return
        if owner:
            self.access.check(req.authid, f"/storage/{sid}", ["Datastore.AllocateSpace"])
            self.access.check(req.authid, f"/vms/{owner}", ["VM.Backup"])
            return
        raise ApiError(500, f"missing privileges to access {volid}")

    def task_visible(self, req: Req, task: Task) -> bool:
        """A token sees its own tasks, a user its own and its tokens' (pve-manager Tasks.pm)."""
        return req.authid in (task.authid, task.user)

    def check_task_access(self, req: Req, task: Task) -> None:
        if not self.task_visible(req, task):
            self.access.check(req.authid, f"/nodes/{task.node}", ["Sys.Audit"])

    def check_bridge(self, authid: str, value: str | None) -> None:
        """check_vnet_access: SDN.Use on the bridge, or on each VLAN of it the interface uses."""
        if not value:
            return
        parts = dict(p.split("=", 1) for p in str(value).split(",") if "=" in p)
        bridge = parts.get("bridge")
        if not bridge:
            return
        base = f"/sdn/zones/localnetwork/{bridge}"
        vlans = [parts["tag"]] if parts.get("tag") else []
        vlans += [t for t in re.split(r"[;]", parts.get("trunks", "")) if t]
        for vlan in vlans:
            self.access.check(authid, f"{base}/{vlan}", ["SDN.Use"])
        if not vlans:
            self.access.check(authid, base, ["SDN.Use"])

    def check_config_key(
        self, authid: str, g: Guest, pool: str | None, key: str, old: Any, new: Any
    ) -> None:
        """The privilege one config option needs (check_ct_modify_config_perm for containers,
        check_vm_modify_config_perm for VMs); ``pool`` only while the guest is being created."""
        vm = g.vmid
        if key == "tags":
            # assert_tag_permissions: always on the guest's own path, never the pool named at
            # create time; with the default user-tag-access (free) any tag is allowed then.
            self.access.check_vm(authid, vm, None, ["VM.Config.Options"])
            return
        if re.fullmatch(r"net\d+", key):
            self.access.check_vm(authid, vm, pool, ["VM.Config.Network"])
            if g.type == "lxc":
                self.check_bridge(authid, old)
            self.check_bridge(authid, new)
            return
        privs, any_ = _config_privs(g.type, key)
        if not privs:
            raise Denied(f"only root@pam may set '{key}'")
        self.access.check_vm(authid, vm, pool, privs, any_)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("tail", "")
        path = "/" + path.strip("/") if path.strip("/") else "/"
        try:
            injected = await inject_faults(request, self.faults, self.ctx.rng, path)
            if injected:
                raise injected
            self._fail_first(path)
            if path == "/access/ticket":
                return await self._ticket_endpoint(request)
            authid = await self._authenticate(request)
            args = await read_args(request)
            found = router.match(request.method, path)
            if found is None:
                raise ApiError(501, f"Method '{request.method} {path}' not implemented")
            r, params = found
            self._validate(request.method, params, args, r.template)
            node = params.get("node")
            if node is not None:
                self._check_node(node)
            if request.method != "GET":
                self.ctx.journal.http("pve", request.method, path, args)
            self.access.check_route(request.method, r.template, {**args, **params}, authid)
            late = self._matching(self.faults.extra.get("act_late"), path)
            if late:  # a busy daemon: the request is taken now, acted on later
                await asyncio.sleep(float(late))
            result = await r.handler(self, Req(params, args, authid))
            if self._matching(self.faults.extra.get("drop_answer"), path):
                abort_connection(request)  # acted on, but the answer never leaves
                raise Dropped
            failed_after = request.method != "GET" and self._matching(
                self.faults.extra.get("error_after"), path
            )
            if failed_after:  # acted on, then PVE's 500 (an error raised after the work began)
                text = failed_after if isinstance(failed_after, str) else "got timeout"
                raise ApiError(500, text)
        except Dropped:
            return web.Response(status=500)  # the connection is gone; nobody reads this
        except Denied as exc:
            return self._error(ApiError(403, exc.message))
        except AccessError as exc:
            return self._error(ApiError(500, str(exc)))
        except ApiError as err:
            return self._error(err)
        if isinstance(result, Result):
            body = {"data": result.data, **result.extra}
        else:
            body = {"data": result}
        return web.Response(
            text=json.dumps(body),
            content_type="application/json",
            charset="utf-8",
            headers={"Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0"},
        )

    def _fail_first(self, path: str) -> None:
        """``fail_first`` (``{"/agent/exec-status": 2}``): the next 2 requests on such a path
        are answered 500 before anything is done (a transient fault; the count goes down)."""
        table = self.faults.extra.get("fail_first")
        if not isinstance(table, dict):
            return
        key = next((k for k in table if k in path), None)
        if key is not None and int(table[key]) > 0:
            table[key] = int(table[key]) - 1
            raise ApiError(500, "internal error - sandbox injected fault")

    @staticmethod
    def _matching(knob: Any, path: str) -> Any:
        """Fault knobs keyed by path substring: ``{"/vzdump": 3}`` (a value) or ``["/vzdump"]``
        (True); the value for the first key found in ``path``, else None."""
        if isinstance(knob, dict):
            return next((v for k, v in knob.items() if k in path), None)
        if isinstance(knob, list):
            return True if any(k in path for k in knob) else None
        return None

    def _error(self, err: ApiError) -> web.Response:
        reason = err.message.splitlines()[0] if err.message else "error"
        if err.status == 401:
            return web.Response(status=401, reason=reason)
        body: dict[str, Any] = {"data": None, "message": err.message + "\n"}
        if err.errors:
            body["errors"] = err.errors
        return web.Response(
            status=err.status,
            reason=reason,
            text=json.dumps(body),
            content_type="application/json",
            charset="utf-8",
            headers={"Server": "pve-api-daemon/3.0"},
        )

    def _validate(
        self, method: str, params: dict[str, str], args: dict[str, Any], template: str
    ) -> None:
        errors = check_params(method, template, params, args)
        if "vmid" in params:
            try:
                int(params["vmid"])
            except ValueError:
                errors["vmid"] = f"type check ('integer') failed - got '{params['vmid']}'"
        if errors:
            raise ApiError(400, "Parameter verification failed.", errors)

    def _check_node(self, node: str) -> None:
        if self.lab.node(node) is None:
            raise ApiError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                "Name or service not known",
            )
        if not self.node_online(node):
            # pveproxy forwards calls for another node; an unreachable one gives AnyEvent's 595.
            raise ApiError(595, f"Connection refused - no route to host {node}")

    async def _auth_delay(self) -> None:
        await asyncio.sleep(max(0.3, 3.0 * self.ctx.time_scale))

    async def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        m = re.search(r"PVEAPIToken(?:=| )([^;]*)", header)
        if m:
            value = m.group(1).strip()
            tokenid, sep, secret = value.rpartition("=")
            known = self.access.token_secret(tokenid) if sep else None
            if known is not None and hmac.compare_digest(secret, known):
                return tokenid
            await self._auth_delay()
            raise ApiError(401, "Authentication failed!")
        ticket = request.cookies.get("PVEAuthCookie")
        if ticket is None:
            m = re.search(r"PVEAuthCookie=([^;]*)", header)
            ticket = m.group(1) if m else None
        if ticket is None:
            await self._auth_delay()
            raise ApiError(401, "No ticket")
        user = self._verify_ticket(ticket)
        if user is None:
            await self._auth_delay()
            raise ApiError(401, "Authentication failed!")
        if request.method != "GET":
            csrf = request.headers.get("CSRFPreventionToken", "")
            if not hmac.compare_digest(csrf, self._csrf(user, ticket.split(":")[2])):
                await self._auth_delay()
                raise ApiError(401, "Permission denied - invalid csrf token")
        return user

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._ticket_key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode().rstrip("=")

    def _make_ticket(self, user: str) -> tuple[str, str]:
        stamp = f"{int(time.time()):08X}"
        plain = f"PVE:{user}:{stamp}"
        return f"{plain}::{self._sign(plain)}", self._csrf(user, stamp)

    def _csrf(self, user: str, stamp: str) -> str:
        return f"{stamp}:{self._sign('csrf:' + user + ':' + stamp)}"

    def _verify_ticket(self, ticket: str) -> str | None:
        parts = ticket.split(":")
        if len(parts) != 5 or parts[0] != "PVE" or parts[3] != "":
            return None
        plain = ":".join(parts[:3])
        if not hmac.compare_digest(parts[4], self._sign(plain)):
            return None
        try:
            age = time.time() - int(parts[2], 16)
        except ValueError:
            return None
        return parts[1] if age < 7200 else None

    async def _ticket_endpoint(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response({"data": None})
        if request.method != "POST":
            raise ApiError(501, f"Method '{request.method} /access/ticket' not implemented")
        if "PVEAPIToken" in request.headers.get("Authorization", ""):
            return self._error(
                ApiError(
                    403,
                    "Permission check failed (URI '/access/ticket' not available with API "
                    "token, need proper ticket.)",
                )
            )
        args = await read_args(request)
        username = str(args.get("username") or "")
        password = str(args.get("password") or "")
        realm = args.get("realm")
        if realm and "@" not in username:
            username = f"{username}@{realm}"
        user: str | None = None
        if username == "root@pam" and hmac.compare_digest(password, self.password):
            user = username
        elif password.startswith("PVE:"):
            user = self._verify_ticket(password)
            user = user if user == username else None
        if user is None:
            await self._auth_delay()
            return self._error(ApiError(401, "authentication failure"))
        ticket, csrf = self._make_ticket(user)
        data = {
            "username": user,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "clustername": self.lab.cluster_name,
            "cap": {"nodes": {"Sys.Audit": 1}, "vms": {"VM.Backup": 1}},
        }
        return web.json_response({"data": data})

    # ---- helpers over the lab -----------------------------------------------------------

    def guest_on(self, node: str, vmid: int, kind: str) -> Guest:
        guest = self.lab.guest(vmid)
        if guest is None or guest.node != node or guest.type != kind:
            conf = (
                f"nodes/{node}/lxc/{vmid}.conf"
                if kind == "lxc"
                else f"nodes/{node}/qemu-server/{vmid}.conf"
            )
            raise ApiError(500, f"Configuration file '{conf}' does not exist")
        return guest

    def guest_item(self, guest: Guest, now: float, full: bool = True) -> dict[str, Any]:
        """A guest as /nodes/{node}/lxc|qemu list it (schema fields only)."""
        st = guest_stats(guest, self.lab, now)
        item: dict[str, Any] = {
            "vmid": guest.vmid,
            "status": guest.status,
            "name": guest.name,
            "cpus": st["cpus"],
            "cpu": st["cpu"],
            "maxmem": guest.maxmem,
            "mem": st["mem"],
            "maxdisk": guest.maxdisk,
            "netin": st["netin"],
            "netout": st["netout"],
            "diskread": st["diskread"],
            "diskwrite": st["diskwrite"],
            "uptime": st["uptime"],
        }
        if guest.type == "lxc":
            item["disk"] = guest.disk_used
            item["maxswap"] = 512 * 1024**2
        else:
            item["memhost"] = st["mem"]
            if guest.status == "running":
                item["pid"] = 10000 + guest.vmid
                item["qmpstatus"] = "running"
        if guest.tags:
            item["tags"] = ";".join(guest.tags)
        lock = self.guest_lock(guest)
        if lock:
            item["lock"] = lock
        if guest.template:
            item["template"] = 1
        return item

    def resource_item(self, guest: Guest, now: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": f"{guest.type}/{guest.vmid}",
            "vmid": guest.vmid,
            "node": guest.node,
            "type": guest.type,
            "name": guest.name,
            "template": int(guest.template),
        }
        if self.node_online(guest.node):
            st = guest_stats(guest, self.lab, now)
            item.update(
                {
                    "status": guest.status,
                    "uptime": st["uptime"],
                    "maxcpu": st["cpus"],
                    "cpu": st["cpu"],
                    "maxmem": guest.maxmem,
                    "mem": st["mem"],
                    "maxdisk": guest.maxdisk,
                    "disk": guest.disk_used if guest.type == "lxc" else 0,
                    "netin": st["netin"],
                    "netout": st["netout"],
                    "diskread": st["diskread"],
                    "diskwrite": st["diskwrite"],
                }
            )
            if guest.type == "qemu":
                item["memhost"] = st["mem"]
        else:
            item["status"] = "unknown"
        if guest.tags:
            item["tags"] = ";".join(guest.tags)
        lock = self.guest_lock(guest)
        if lock:
            item["lock"] = lock
        if guest.pool:
            item["pool"] = guest.pool
        return item

    def node_stats(self, node: Node, now: float) -> dict[str, Any]:
        used = [g for g in self.lab.guests if g.node == node.name and g.status == "running"]
        mem = 2 * 1024**3 + sum(guest_stats(g, self.lab, now)["mem"] for g in used)
        return {
            "cpu": round(0.02 + 0.01 * len(used) / max(node.maxcpu, 1), 4),
            "maxcpu": node.maxcpu,
            "mem": min(mem, node.maxmem),
            "maxmem": node.maxmem,
            "uptime": int(now - self.lab.created) + 86400 * (3 + int(node.name[-1])),
        }

    def fingerprint(self, node: str) -> str:
        info = cert_info(self.svc.certs[node].effective.cert)
        return str(info["fingerprint"])

    def storages(self, node: str) -> list[dict[str, Any]]:
        local_used = sum(v.size for v in self.local if v.node == node) + 18 * 1024**3
        return [
            {
                "storage": "local",
                "type": "dir",
                "content": "backup,iso,vztmpl",
                "shared": 0,
                "total": 100 * 1024**3,
                "used": local_used,
                "avail": 100 * 1024**3 - local_used,
            },
            {
                "storage": "local-lvm",
                "type": "lvmthin",
                "content": "images,rootdir",
                "shared": 0,
                "total": 800 * 1024**3,
                "used": 310 * 1024**3,
                "avail": 490 * 1024**3,
            },
        ] + [
            {
                "storage": name,
                "type": "pbs",
                "content": "backup",
                "shared": 1,
                "total": self.store.total,
                "used": self.store.used,
                "avail": self.store.total - self.store.used,
            }
            for name in PBS_STORAGES
        ]

    def storage_configs(self) -> list[dict[str, Any]]:
        """``storage.cfg`` as ``GET /storage`` returns it (the PBS password is never listed)."""
        pbs: dict[str, Any] = {
            "type": "pbs",
            "content": "backup",
            "server": "pbs.lab.internal",
            "datastore": self.store.name,
            "username": "pve@pbs",
            "fingerprint": _PBS_FINGERPRINT,
            "prune-backups": _DEFAULT_PRUNE["pbs"],
        }
        out: list[dict[str, Any]] = [
            {
                "storage": "local",
                "type": "dir",
                "path": "/var/lib/vz",
                "content": "backup,iso,vztmpl",
                "prune-backups": _DEFAULT_PRUNE["local"],
            },
            {
                "storage": "local-lvm",
                "type": "lvmthin",
                "thinpool": "data",
                "vgname": "pve",
                "content": "images,rootdir",
            },
            {"storage": "pbs", **pbs},
            {"storage": "pbs-home", **pbs, "namespace": HOME_NS},
        ]
        for item in out:  # PVE adds the digest of the whole file to every entry
            item["digest"] = _STORAGE_CFG_DIGEST
        return out

    def storage_conf(self, node: str, storage: str) -> dict[str, Any]:
        for s in self.storages(node):
            if s["storage"] == storage:
                return s
        raise ApiError(500, f"storage '{storage}' does not exist")

    def backup_volumes(self, node: str, storage: str, vmid: int | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if storage == "local":
            for v in self.local:
                if v.node != node or (vmid is not None and v.vmid != vmid):
                    continue
                item: dict[str, Any] = {
                    "volid": v.volid,
                    "content": "backup",
                    "subtype": v.subtype,
                    "format": v.format,
                    "vmid": v.vmid,
                    "ctime": v.ctime,
                    "size": v.size,
                }
                if v.notes:
                    item["notes"] = v.notes
                if v.protected:
                    item["protected"] = 1
                out.append(item)
        elif storage in PBS_STORAGES:
            # PVE lists a PBS storage's content in the namespace of its config only
            for s in self.store.listing(ns=PBS_STORAGES[storage]):
                if s.btype not in ("ct", "vm") or not s.bid.isdigit():
                    continue
                if vmid is not None and int(s.bid) != vmid:
                    continue
                item = {
                    "volid": f"{storage}:backup/{s.btype}/{s.bid}/{s.iso()}",
                    "content": "backup",
                    "subtype": "lxc" if s.btype == "ct" else "qemu",
                    "format": f"pbs-{s.btype}",
                    "vmid": int(s.bid),
                    "ctime": s.btime,
                    "size": s.size or 1,
                }
                if s.comment:
                    item["notes"] = s.comment.splitlines()[0]
                if s.protected:
                    item["protected"] = 1
                if s.verification:
                    item["verification"] = dict(s.verification)
                out.append(item)
        return sorted(out, key=lambda i: str(i["volid"]).lower())

    def find_volume(self, volid: str) -> tuple[str, Any] | None:
        storage = volid.split(":", 1)[0]
        if storage in PBS_STORAGES:
            m = re.match(r"^[\w-]+:backup/(ct|vm)/(\d+)/(\S+Z)$", volid)
            if not m:
                return None
            try:
                btime = calendar.timegm(time.strptime(m.group(3), "%Y-%m-%dT%H:%M:%SZ"))
            except ValueError:
                return None
            snap = self.store.snapshots.get((m.group(1), m.group(2), btime))
            found = snap is not None and snap.ns == PBS_STORAGES[storage]
            return ("pbs", snap) if found else None
        for v in self.local:
            if v.volid == volid:
                return ("local", v)
        return None

    def _seed_tasks(self, now: float) -> None:
        """Last nights' finished vzdump runs, so task history is not empty at start."""
        night0 = int(now // DAY * DAY + 2 * 3600)
        if night0 > now:
            night0 -= DAY
        for back in range(3):
            for node in self.lab.nodes:
                vmids = [
                    g.vmid
                    for g in self.lab.guests
                    if g.node == node.name and not g.template and "nobackup" not in g.tags
                ]
                if not vmids:
                    continue
                start = night0 - back * DAY
                t = self.tasks.new(
                    node.name, "vzdump", "", "root@pam", starttime=start, vmids=vmids
                )
                t.log(
                    f"INFO: starting new backup job: vzdump {' '.join(map(str, vmids))} "
                    "--storage pbs --mode snapshot --node " + node.name
                )
                for v in vmids:
                    t.log(f"INFO: Starting Backup of VM {v} ({self.lab.guest(v).type})")  # type: ignore[union-attr]
                    t.log(f"INFO: Finished Backup of VM {v} (00:00:{10 + v % 40:02d})")
                t.log("INFO: Backup job finished successfully")
                t.finish("OK")
                t.endtime = start + 60 * len(vmids)


# ---- version, nodes, cluster ----------------------------------------------------------------


@route("GET", "/version")
async def version(api: PveApi, req: Req) -> Any:
    return dict(VERSION)


@route("GET", "/nodes")
async def nodes(api: PveApi, req: Req) -> Any:
    now = time.time()
    out = []
    for n in api.lab.nodes:
        audit = api.can(req, f"/nodes/{n.name}", ["Sys.Audit"])  # else no numbers
        if api.node_online(n.name):
            out.append(
                {
                    "node": n.name,
                    "status": "online",
                    **(api.node_stats(n, now) if audit else {}),
                    "level": "",
                    "ssl_fingerprint": api.fingerprint(n.name),
                }
            )
        else:
            out.append(
                {
                    "node": n.name,
                    "status": "offline",
                    "level": "",
                    "ssl_fingerprint": api.fingerprint(n.name),
                }
            )
    return out


@route("GET", "/nodes/{node}")
async def node_index(api: PveApi, req: Req) -> Any:
    return [
        {"name": n}
        for n in (
            "apt",
            "certificates",
            "config",
            "lxc",
            "qemu",
            "status",
            "storage",
            "tasks",
            "version",
            "vzdump",
        )
    ]


@route("GET", "/nodes/{node}/status")
async def node_status(api: PveApi, req: Req) -> Any:
    node = api.lab.node(req.params["node"])
    assert node is not None
    st = api.node_stats(node, time.time())
    return {
        "cpu": st["cpu"],
        "uptime": st["uptime"],
        "loadavg": ["0.42", "0.51", "0.48"],
        "memory": {
            "total": node.maxmem,
            "used": st["mem"],
            "free": node.maxmem - st["mem"],
            "available": node.maxmem - st["mem"],
        },
        "swap": {"total": 8 * 1024**3, "used": 0, "free": 8 * 1024**3},
        "rootfs": {
            "total": 100 * 1024**3,
            "used": 21 * 1024**3,
            "free": 79 * 1024**3,
            "avail": 74 * 1024**3,
        },
        "cpuinfo": {
            "model": "Intel(R) Core(TM) i5-12500T",
            "cores": node.maxcpu // 2,
            "cpus": node.maxcpu,
            "sockets": 1,
            "mhz": "2000.000",
        },
        "pveversion": f"pve-manager/{VERSION['version']}/{VERSION['repoid'][:8]}",
        "kversion": "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
        "current-kernel": {
            "sysname": "Linux",
            "release": "6.17.2-1-pve",
            "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
            "machine": "x86_64",
        },
        "boot-info": {"mode": "efi", "secureboot": 0},
        "ksm": {"shared": 0},
    }


@route("GET", "/nodes/{node}/version")
async def node_version(api: PveApi, req: Req) -> Any:
    return {k: VERSION[k] for k in ("version", "release", "repoid")}


@route("GET", "/cluster/status")
async def cluster_status(api: PveApi, req: Req) -> Any:
    out: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "name": api.lab.cluster_name,
            "nodes": len(api.lab.nodes),
            "version": 7,
            "quorate": int(
                sum(api.node_online(n.name) for n in api.lab.nodes) > len(api.lab.nodes) // 2
            ),
        }
    ]
    for i, n in enumerate(api.lab.nodes, 1):
        out.append(
            {
                "type": "node",
                "id": f"node/{n.name}",
                "name": n.name,
                "ip": n.ip,
                "local": int(i == 1),
                "nodeid": i,
                "online": int(api.node_online(n.name)),
                "level": "",
            }
        )
    return out


@route("GET", "/cluster/resources")
async def cluster_resources(api: PveApi, req: Req) -> Any:
    kind = req.str("type")
    if kind is not None and kind not in ("vm", "storage", "node", "sdn"):
        raise param_error(
            "type",
            f"value '{kind}' does not have a value in the enumeration 'vm, storage, node, sdn'",
        )
    now = time.time()
    out: list[dict[str, Any]] = []
    if kind in (None, "vm"):
        # PVE walks `sort keys %$idlist`: a string sort of the vmids; a guest is listed only
        # with VM.Audit on it, its pool only with Pool.Audit on that pool.
        for g in sorted(api.lab.guests, key=lambda g: str(g.vmid)):
            if not api.can(req, f"/vms/{g.vmid}", ["VM.Audit"]):
                continue
            entry = api.resource_item(g, now)
            if "pool" in entry and not api.can(req, f"/pool/{entry['pool']}", ["Pool.Audit"]):
                del entry["pool"]
            out.append(entry)
    if kind in (None, "node"):
        for n in api.lab.nodes:
            item: dict[str, Any] = {
                "id": f"node/{n.name}",
                "type": "node",
                "node": n.name,
                "level": "",
                "cgroup-mode": 2,
            }
            if not api.can(req, f"/nodes/{n.name}", ["Sys.Audit"]):
                item["status"] = "online" if api.node_online(n.name) else "offline"
            elif api.node_online(n.name):
                item.update(
                    status="online",
                    **api.node_stats(n, now),
                    disk=21 * 1024**3,
                    maxdisk=100 * 1024**3,
                )
            else:
                item["status"] = "offline"
            out.append(item)
    if kind in (None, "storage"):
        for n in api.lab.nodes:
            for s in api.storages(n.name):
                if not api.can(req, f"/storage/{s['storage']}", ["Datastore.Audit"]):
                    continue
                item = {
                    "id": f"storage/{n.name}/{s['storage']}",
                    "type": "storage",
                    "storage": s["storage"],
                    "node": n.name,
                    "content": s["content"],
                    "plugintype": s["type"],
                    "shared": s["shared"],
                }
                if api.node_online(n.name):
                    item.update(status="available", disk=s["used"], maxdisk=s["total"])
                else:
                    item["status"] = "unknown"
                out.append(item)
    return out


# ---- guests -----------------------------------------------------------------------------


@route("GET", "/nodes/{node}/lxc")
async def lxc_list(api: PveApi, req: Req) -> Any:
    now = time.time()
    node = req.params["node"]
    return [
        api.guest_item(g, now)
        for g in api.lab.guests
        if g.node == node and g.type == "lxc" and api.can(req, f"/vms/{g.vmid}", ["VM.Audit"])
    ]


@route("GET", "/nodes/{node}/qemu")
async def qemu_list(api: PveApi, req: Req) -> Any:
    now = time.time()
    node = req.params["node"]
    return [
        api.guest_item(g, now)
        for g in api.lab.guests
        if g.node == node and g.type == "qemu" and api.can(req, f"/vms/{g.vmid}", ["VM.Audit"])
    ]


def _mac(vmid: int) -> str:
    return f"BC:24:11:{vmid >> 16 & 0xFF:02X}:{vmid >> 8 & 0xFF:02X}:{vmid & 0xFF:02X}"


def _gw(ip: str) -> str:
    return ".".join(ip.split(".")[:3]) + ".1"


@route("GET", "/nodes/{node}/lxc/{vmid}")
async def lxc_index(api: PveApi, req: Req) -> Any:
    api.guest_on(req.params["node"], int(req.params["vmid"]), "lxc")
    return [{"subdir": s} for s in ("config", "status", "snapshot")]


@route("GET", "/nodes/{node}/qemu/{vmid}")
async def qemu_index(api: PveApi, req: Req) -> Any:
    api.guest_on(req.params["node"], int(req.params["vmid"]), "qemu")
    return [{"subdir": s} for s in ("config", "status")]


def _digest(conf: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(conf, sort_keys=True).encode()).hexdigest()


def _lxc_base(api: PveApi, g: Guest) -> dict[str, Any]:
    ostype = {
        "debian12": "debian",
        "debian13": "debian",
        "ubuntu2404": "ubuntu",
        "alpine320": "alpine",
    }[g.os]
    return {
        "arch": "amd64",
        "cores": 2,
        "hostname": g.name,
        "memory": g.maxmem // 1024**2,
        "swap": 512,
        "ostype": ostype,
        "unprivileged": 1,
        "onboot": 1,
        "features": "nesting=1",
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,gw={_gw(g.ip)},hwaddr={_mac(g.vmid)},"
        f"ip={g.ip}/24,type=veth",
        "rootfs": f"local-lvm:vm-{g.vmid}-disk-0,size={g.maxdisk // 1024**3}G",
        "nameserver": "192.168.1.100",
        "searchdomain": api.lab.domain,
        "description": f"{g.name} ({g.os})\n",
    }


def _qemu_base(api: PveApi, g: Guest) -> dict[str, Any]:
    return {
        "name": g.name,
        "cores": 4,
        "sockets": 1,
        "memory": str(g.maxmem // 1024**2),
        "ostype": "l26",
        "boot": "order=scsi0;net0",
        "agent": "1",
        "scsihw": "virtio-scsi-single",
        "net0": f"virtio={_mac(g.vmid)},bridge=vmbr0,firewall=1",
        "ipconfig0": f"ip={g.ip}/24,gw={_gw(g.ip)}",
        "scsi0": f"local-lvm:vm-{g.vmid}-disk-0,iothread=1,size={g.maxdisk // 1024**3}G",
        "vmgenid": f"6b1f3f4e-0f0e-4d0b-9b59-6f2d0c3f{g.vmid % 10000:04d}",
        "smbios1": f"uuid=00000000-0000-4000-8000-{g.vmid:012d}",
    }


def guest_config(api: PveApi, g: Guest) -> dict[str, Any]:
    """The guest's config as GET .../config returns it, ``digest`` last (over the rest)."""
    conf = _lxc_base(api, g) if g.type == "lxc" else _qemu_base(api, g)
    for key, value in api.config_edits.get(g.vmid, {}).items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    if g.tags:
        conf["tags"] = ";".join(g.tags)
    lock = api.guest_lock(g)
    if lock:
        conf["lock"] = lock
    if g.template:
        conf["template"] = 1
    snaps = api.snapshots.get(g.vmid)
    if snaps:
        conf["parent"] = snaps[-1].name
    conf["digest"] = _digest(conf)
    return conf


@route("GET", "/nodes/{node}/lxc/{vmid}/config")
async def lxc_config(api: PveApi, req: Req) -> Any:
    return guest_config(api, api.guest_on(req.params["node"], int(req.params["vmid"]), "lxc"))


@route("GET", "/nodes/{node}/qemu/{vmid}/config")
async def qemu_config(api: PveApi, req: Req) -> Any:
    return guest_config(api, api.guest_on(req.params["node"], int(req.params["vmid"]), "qemu"))


def _random_mac() -> str:
    # datacenter.cfg's default mac_prefix, as PVE::Tools::random_ether_addr uses it
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in secrets.token_bytes(3))


def _net_value(api: PveApi, kind: str, name: str, value: str) -> str:
    """A netN value as PVE stores it: parsed, a MAC made up when none is given (a container
    interface is always type veth), printed in PVE's key order."""
    fmt = _net_format(kind)
    net = propstring.parse(fmt, value, name)
    if kind == "lxc":
        net["type"] = "veth"
        net.setdefault("hwaddr", _random_mac())
    else:
        net.setdefault("macaddr", _random_mac())
    return propstring.render(fmt, net)


def _net_format(kind: str) -> dict[str, Any]:
    decl = declaration("PUT", f"/nodes/{{node}}/{kind}/{{vmid}}/config", "net0")
    assert decl is not None and isinstance(decl.get("format"), dict), "regenerate params.json"
    fmt: dict[str, Any] = decl["format"]
    return fmt


_CONFIG_CONTROL = {"digest", "delete", "revert", "skiplock", "force", "node", "vmid"}
_CT_CPU = {"cores", "cpuunits", "cpulimit"}
_QM_CPU = {"cores", "sockets", "cpu", "cpulimit", "cpuunits", "vcpus", "affinity", "numa"}
_QM_CLOUDINIT = {"ciuser", "cipassword", "citype", "ciupgrade", "nameserver", "searchdomain"}


def _config_privs(kind: str, key: str) -> tuple[list[str], bool]:
    """(privileges, any of them) an option needs; nothing: only root may set it."""
    disk = re.fullmatch(
        r"(rootfs|mp\d+|unused\d+|(ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0)", key
    )
    if disk:
        return ["VM.Config.Disk"], False
    if kind == "lxc":
        if key in _CT_CPU:
            return ["VM.Config.CPU"], False
        if key in ("memory", "swap"):
            return ["VM.Config.Memory"], False
        if key in ("nameserver", "searchdomain", "hostname"):
            return ["VM.Config.Network"], False
        if re.fullmatch(r"dev\d+|hookscript|lxc", key):
            return [], False
        if key == "features":
            return ["VM.Allocate"], False
        return ["VM.Config.Options"], False
    if key in _QM_CPU or re.fullmatch(r"numa\d+", key):
        return ["VM.Config.CPU"], False
    if key in ("memory", "balloon", "shares"):
        return ["VM.Config.Memory"], False
    if key in _QM_CLOUDINIT or key == "sshkeys" or re.fullmatch(r"ipconfig\d+", key):
        return ["VM.Config.Cloudinit", "VM.Config.Network"], True
    if re.fullmatch(r"(serial|usb|hostpci|virtiofs)\d+|args|hookscript", key):
        return [], False
    return ["VM.Config.Options"], False


async def _set_config(api: PveApi, req: Req, kind: str) -> Any:
    """PUT .../config: set and delete options at once; the guest is not restarted. PVE writes a
    running VM's changes that cannot be hotplugged as pending; here every change applies at
    once (the drill changes stopped guests only)."""
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), kind)
    values = {k: v for k, v in req.args.items() if k not in _CONFIG_CONTROL}
    delete = [d for d in re.split(r"[,;\s]+", req.str("delete") or "") if d]
    if not values and not delete and not req.str("revert"):
        raise ApiError(500, "no options specified")
    for key in delete:
        if key in values:
            raise param_error(
                "delete", f"you can't use '-{key}' and '-delete {key}' at the same time"
            )
    # PVE::Tools::assert_if_modified, then AbstractConfig::check_lock (qemu: unless skiplock)
    digest = req.str("digest")
    if digest and digest != guest_config(api, g)["digest"]:
        raise ApiError(
            500, "detected modified configuration - file changed by other user? Try again."
        )
    lock = api.guest_lock(g)
    if lock and not (kind == "qemu" and req.bool("skiplock")):
        raise ApiError(500, f"{'CT' if kind == 'lxc' else 'VM'} is locked ({lock})")
    changes: dict[str, Any] = {**values, **dict.fromkeys(delete)}
    current = guest_config(api, g)
    for key, value in changes.items():
        if key == "tags" and value:
            _check_tags(str(value))
        api.check_config_key(req.authid, g, None, key, current.get(key), value)
    edits = api.config_edits.setdefault(g.vmid, {})
    for key, value in changes.items():
        # These live on the lab's Guest record (they show in /cluster/resources too).
        if key == "tags":
            g.tags = [t for t in re.split(r"[;,\s]+", str(value or "")) if t]
        elif key == "lock":
            g.lock = str(value) if value else None
        elif key == ("hostname" if kind == "lxc" else "name") and value:
            g.name = str(value)
        elif value is not None and re.fullmatch(r"net\d+", key):
            edits[key] = _net_value(api, kind, key, str(value))
        else:
            edits[key] = value
    return None


_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)


def _check_tags(value: str) -> None:
    """The pve-tag-list format: tags split on ``;``, ``,`` or spaces, each a pve-tag."""
    for tag in split_list(value):
        if not _TAG.match(tag):
            raise param_error("tags", f"invalid format - invalid tag '{tag}'")


def _restored_config(api: PveApi, orig: Guest, unique: bool) -> dict[str, Any]:
    """The config edits a restore of ``orig``'s backup starts from: its edits and its network
    interfaces as they are (the backup's config), with new MACs when ``unique``."""
    edits = dict(api.config_edits.get(orig.vmid, {}))
    for key, value in guest_config(api, orig).items():
        if not re.fullmatch(r"net\d+", key):
            continue
        if unique:
            fmt = _net_format(orig.type)
            net = propstring.parse(fmt, value, key)
            net["hwaddr" if orig.type == "lxc" else "macaddr"] = _random_mac()
            value = propstring.render(fmt, net)
        edits[key] = value
    return edits


@route("PUT", "/nodes/{node}/lxc/{vmid}/config")
async def lxc_set_config(api: PveApi, req: Req) -> Any:
    return await _set_config(api, req, "lxc")


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
async def qemu_set_config(api: PveApi, req: Req) -> Any:
    return await _set_config(api, req, "qemu")


async def _status_current(api: PveApi, req: Req, kind: str) -> Any:
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), kind)
    item = api.guest_item(g, time.time())
    item["ha"] = {"managed": 0}
    return item


@route("GET", "/nodes/{node}/lxc/{vmid}/status/current")
async def lxc_status(api: PveApi, req: Req) -> Any:
    return await _status_current(api, req, "lxc")


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
async def qemu_status(api: PveApi, req: Req) -> Any:
    return await _status_current(api, req, "qemu")


def _locked_error(api: PveApi, g: Guest) -> None:
    lock = api.guest_lock(g)
    if lock:
        kind = "CT" if g.type == "lxc" else "VM"
        raise TaskError(f"{kind} {g.vmid} is locked ({lock})")


async def _power(api: PveApi, req: Req, kind: str, action: str) -> Any:
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), kind)
    label = "CT" if kind == "lxc" else "VM"
    if g.template:
        raise ApiError(500, f"{label} {g.vmid} is a template - operation not allowed")
    if action == "start" and g.status == "running":
        raise ApiError(500, f"{label} {g.vmid} already running")
    if action in ("stop", "shutdown", "reboot") and g.status != "running":
        raise ApiError(500, f"{label} {g.vmid} not running")
    prefix = "vz" if kind == "lxc" else "qm"

    async def body(task: Task) -> int | None:
        _locked_error(api, g)
        if action == "start":
            started = {"vmid": g.vmid, "node": g.node, "upid": task.upid, "time": time.time()}
            api.starts.append({**started, "config": guest_config(api, g)})
            # Fault on_start: another actor edits the guest as it starts ({"tags": "x"}).
            edits = api.knob("on_start", g.vmid)
            if isinstance(edits, dict):
                for key, value in edits.items():
                    if key == "tags":
                        g.tags = split_list(str(value))
                    else:
                        api.config_edits.setdefault(g.vmid, {})[key] = value
        if action == "reboot":
            # PVE's reboot is a shutdown and a start in one task, the guest keeping its node.
            g.status = "stopped"
            await api.sleep(1.0)
            g.status = "running"
            g.boots += 1
            if kind == "qemu":
                _agent.booted(api, g)
            await api.sleep(1.0)
            return None
        await api.sleep(2.0 if action != "stop" else 0.5)
        g.status = "running" if action == "start" else "stopped"
        if action == "start":
            g.boots += 1
        if kind == "qemu" and action == "start":
            _agent.booted(api, g)
        elif kind == "qemu":
            _agent.runtime(api).end_jobs(g.name)  # the VM's processes end with it
        return None

    return api.tasks.spawn(
        g.node, f"{prefix}{action}", str(g.vmid), req.authid, body, vmids=[g.vmid]
    ).upid


for _kind in ("lxc", "qemu"):
    for _action in ("start", "stop", "shutdown", "reboot"):

        async def _handler(api: PveApi, req: Req, _k: str = _kind, _a: str = _action) -> Any:
            return await _power(api, req, _k, _a)

        router.add("POST", f"/nodes/{{node}}/{_kind}/{{vmid}}/status/{_action}", _handler)


# ---- migrate ---------------------------------------------------------------------------------


async def _migrate(api: PveApi, req: Req, kind: str) -> Any:
    """``POST /nodes/{node}/{lxc|qemu}/{vmid}/migrate``: a running VM needs ``online=1`` (live),
    a running container ``restart=1`` (stopped, moved, started on the target). Faults:
    ``pinned_vmids`` (a local device or bind mount: the task ends in PVE's error) and
    ``failing_migrations`` (the task fails: "migration aborted")."""
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), kind)
    target = req.str("target") or ""
    if api.lab.node(target) is None:
        raise param_error("target", f"no such cluster node '{target}'")
    if target == g.node:
        raise ApiError(500, f"target is local node '{target}'")
    if not api.node_online(target):
        raise ApiError(500, f"target node '{target}' is not online")
    running = g.status == "running"
    if kind == "qemu" and running and not req.bool("online"):
        raise ApiError(500, "can't migrate running VM without --online")
    if kind == "lxc" and running and req.bool("online"):
        raise ApiError(500, "lxc live migration is currently not implemented")
    if kind == "lxc" and running and not req.bool("restart"):
        raise ApiError(500, "running container can only be restarted")
    restart = kind == "lxc" and running

    async def body(task: Task) -> int | None:
        _locked_error(api, g)
        pinned = api.faults.extra.get("pinned_vmids") or []
        if g.vmid in pinned or str(g.vmid) in pinned:
            raise TaskError(
                "can't migrate VM which uses local devices: hostpci0"
                if kind == "qemu"
                else "cannot migrate local bind mount point 'mp0'"
            )
        failing = api.faults.extra.get("failing_migrations") or []
        g.lock = "migrate"
        try:
            label = "CT" if kind == "lxc" else "VM"
            task.log(f"starting migration of {label} {g.vmid} to node '{target}'")
            if restart:
                g.status = "stopped"
            await api.sleep(1.0)
            if g.vmid in failing or str(g.vmid) in failing:
                if restart:
                    g.status = "running"
                raise TaskError("migration aborted")
            g.node = target
            if restart:
                await api.sleep(0.5)
                g.status = "running"
                g.boots += 1
            task.log("migration finished successfully")
        finally:
            g.lock = None
        return None

    task_type = "vzmigrate" if kind == "lxc" else "qmigrate"
    return api.tasks.spawn(g.node, task_type, str(g.vmid), req.authid, body, vmids=[g.vmid]).upid


for _kind in ("lxc", "qemu"):

    async def _migrate_handler(api: PveApi, req: Req, _k: str = _kind) -> Any:
        return await _migrate(api, req, _k)

    router.add("POST", f"/nodes/{{node}}/{_kind}/{{vmid}}/migrate", _migrate_handler)


# ---- create / restore / destroy -----------------------------------------------------------


# Parameters the create handlers take out before the remaining ones are checked as config
# options (pve-container's and qemu-server's create_vm).
_CREATE_EXTRACTED = {
    "lxc": {
        "node",
        "vmid",
        "ostemplate",
        "storage",
        "force",
        "restore",
        "unique",
        "pool",
        "password",
        "ssh-public-keys",
        "ignore-unpack-errors",
        "bwlimit",
        "start",
        "ha-managed",
        "unprivileged",
    },
    "qemu": {
        "node",
        "vmid",
        "archive",
        "storage",
        "force",
        "unique",
        "pool",
        "bwlimit",
        "start",
        "ha-managed",
        "live-restore",
        "import-working-storage",
    },
}


def _create_checks(
    api: PveApi, req: Req, kind: str, vmid: int, source: str, restore: bool
) -> tuple[Guest | None, str | None]:
    """What create_vm checks before it forks its worker, in its order; the guest at ``vmid``
    (force) and the pool to add the new guest to."""
    node, force, pool = req.params["node"], req.bool("force"), req.str("pool")
    existing = api.lab.guest(vmid)

    def unused() -> None:
        if existing is not None and not (restore and force):
            label = "CT" if existing.type == "lxc" else "VM"
            raise ApiError(500, f"{label} {vmid} already exists on node '{existing.node}'")

    if kind == "lxc":
        unused()  # PVE::Cluster::check_vmid_unused comes first for containers
    if pool is not None and pool not in api.access.pools:
        raise Denied(f"pool '{pool}' does not exist")
    storage = req.str("storage")
    if kind == "qemu" and storage is not None:
        api.access.check(req.authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
    if not (
        api.can(req, f"/vms/{vmid}", ["VM.Allocate"])
        or (pool and api.can(req, f"/pool/{pool}", ["VM.Allocate"]))
        or (restore and force and existing and api.can(req, f"/vms/{vmid}", ["VM.Backup"]))
    ):
        raise Denied()
    probe = Guest(vmid=vmid, name="", node=node, type=kind, os="debian12", ip="")  # type: ignore[arg-type]
    if kind == "lxc":
        for key, value in req.args.items():
            if key not in _CREATE_EXTRACTED[kind]:
                api.check_config_key(req.authid, probe, pool, key, None, value)
    if restore:
        vol = api.find_volume(source)
        owner = (int(vol[1].bid) if vol[0] == "pbs" else vol[1].vmid) if vol else None
        api.volume_access(req, vmid, source, owner)
    if kind == "lxc":
        api.access.check(
            req.authid, f"/storage/{storage or 'local-lvm'}", ["Datastore.AllocateSpace"]
        )
    else:
        for key, value in req.args.items():
            if key not in _CREATE_EXTRACTED[kind] and key != "tags":
                api.check_config_key(req.authid, probe, pool, key, None, value)
        if existing is not None and not force:
            label = "CT" if existing.type == "lxc" else "VM"
            raise ApiError(
                500,
                f"unable to restore VM {vmid} - {label} {vmid} already exists on node "
                f"'{existing.node}'",
            )
    return existing, pool


def _occupy(api: PveApi, node: str, kind: str, vmid: int) -> None:
    """Fault ``occupy_on_restore``: another actor creates a guest at ``vmid`` just before this
    create request is handled (the race between choosing a free vmid and using it)."""
    name = api.knob("occupy_on_restore", vmid)
    if not name or api.lab.guest(vmid) is not None:
        return
    with api.lab.lock:
        api.lab.guests.append(
            Guest(
                vmid=vmid,
                name=name if isinstance(name, str) else f"someone-else-{vmid}",
                node=node,
                type=kind,  # type: ignore[arg-type]
                os="debian12",
                ip="192.168.9.99",
                status="stopped",
            )
        )


async def _create(api: PveApi, req: Req, kind: str) -> Any:
    node = req.params["node"]
    vmid = req.int("vmid")
    if vmid is None:
        raise param_error("vmid", "property is missing and it is not optional")
    source = req.str("ostemplate" if kind == "lxc" else "archive")
    if not source:
        name = "ostemplate" if kind == "lxc" else "archive"
        raise param_error(name, "property is missing and it is not optional")
    if req.str("tags"):
        _check_tags(req.str("tags") or "")
    _occupy(api, node, kind, vmid)
    restore = kind == "qemu" or req.bool("restore")
    existing, pool = _create_checks(api, req, kind, vmid, source, restore)
    storage = req.str("storage", "local-lvm")
    api.storage_conf(node, storage or "local-lvm")
    vol = api.find_volume(source) if restore else None
    if restore and vol is None:
        raise ApiError(500, f"volume '{source}' does not exist")
    if existing is not None and existing.status == "running":
        label = "CT" if kind == "lxc" else "VM"
        raise ApiError(500, f"unable to restore {label} {vmid} - {label} is running")
    orig: Guest | None = None
    size = 1024**3
    backed_up: Any = None
    if vol is not None:
        kind_of, obj = vol
        orig_vmid = int(obj.bid) if kind_of == "pbs" else obj.vmid
        orig = api.lab.guest(orig_vmid)
        size = obj.size
        when = obj.btime if kind_of == "pbs" else obj.ctime
        backed_up = api.backed_up_states.get((orig_vmid, when))
    name = req.str("hostname") or (orig.name if orig else f"restored-{vmid}")
    given_tags = req.str("tags")
    guest = Guest(
        vmid=vmid,
        name=name,
        node=node,
        type=kind,  # type: ignore[arg-type]
        os=orig.os if orig else "debian12",
        ip=orig.ip if orig else "192.168.9.9",
        status="stopped",
        # Tags are config (a restore brings the backed-up ones unless given); the pool is not:
        # pools live in user.cfg and the new guest joins only the one named here.
        tags=split_list(given_tags)
        if given_tags is not None
        else (list(orig.tags) if orig else []),
        pool=None,
        lock="create",
        maxmem=orig.maxmem if orig else 1024**3,
        maxdisk=orig.maxdisk if orig else 8 * 1024**3,
        disk_used=max(size, 1),
    )
    with api.lab.lock:
        if existing is not None:
            api.lab.guests.remove(existing)
        api.lab.guests.append(guest)
        api.config_edits.pop(vmid, None)
        if orig is not None and orig.type == kind:
            api.config_edits[vmid] = _restored_config(api, orig, req.bool("unique"))
    task_type = ("vzrestore" if restore else "vzcreate") if kind == "lxc" else "qmrestore"
    label = "CT" if kind == "lxc" else "VM"
    authid = req.authid

    async def body(task: Task) -> int | None:
        leave = False
        try:
            if restore:
                if kind == "lxc":
                    task.log(f"recovering backed-up configuration from '{source}'")
                # The backed-up interfaces need SDN.Use on their bridges (VLANs) unless given.
                for key, value in guest_config(api, guest).items():
                    if re.fullmatch(r"net\d+", key) and key not in req.args:
                        try:
                            api.check_bridge(authid, str(value))
                        except Denied as exc:
                            raise TaskError(
                                f"unable to restore {label} {vmid} - {exc.message}"
                            ) from None
                task.log(f"restoring '{source}' now..")
                await api.sleep(1.0 + size / (400 * 1024**2))
                failing = api.knob("failing_restores", vmid)
                if failing:
                    leave = failing == "keep"
                    raise TaskError(
                        f"unable to restore {label} {vmid} - command 'zstd -q -d -c' failed: "
                        "exit code 1"
                    )
                task.log(f"Total bytes read: {size} ({_fmt_size(size)})")
                if kind == "lxc":
                    task.log("merging backed-up and given configuration..")
            else:
                task.log(f"extracting archive '{source}'")
                await api.sleep(3.0)
            guest.lock = None
            if existing is not None and backed_up is not None and orig is existing:
                with api.lab.lock:  # restored over itself: back to what its backup holds
                    api.lab.hosts[guest.name] = copy.deepcopy(backed_up)
            if pool:
                guest.pool = pool  # add_vm_to_pool, once the guest exists
            if req.bool("start"):
                guest.status = "running"
        except BaseException:
            if leave:  # a failed restore whose own cleanup failed too: its config stays
                guest.lock = None
                raise
            with api.lab.lock:
                if guest in api.lab.guests:
                    api.lab.guests.remove(guest)
                    api.config_edits.pop(vmid, None)
            raise
        return None

    return api.tasks.spawn(node, task_type, str(vmid), req.authid, body, vmids=[vmid]).upid


@route("POST", "/nodes/{node}/lxc")
async def lxc_create(api: PveApi, req: Req) -> Any:
    return await _create(api, req, "lxc")


@route("POST", "/nodes/{node}/qemu")
async def qemu_create(api: PveApi, req: Req) -> Any:
    return await _create(api, req, "qemu")


async def _destroy(api: PveApi, req: Req, kind: str) -> Any:
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), kind)
    if g.status == "running" and not req.bool("force"):
        what = "container" if kind == "lxc" else "VM"
        raise ApiError(
            500, f"unable to destroy {'CT' if kind == 'lxc' else 'VM'} {g.vmid} - {what} is running"
        )

    async def body(task: Task) -> int | None:
        _locked_error(api, g)
        await api.sleep(1.5)
        with api.lab.lock:
            if g in api.lab.guests:
                api.lab.guests.remove(g)
                api.config_edits.pop(g.vmid, None)
        api.snapshots.pop(g.vmid, None)
        api.access.remove_vm_access(g.vmid)  # its ACL entries go, purge or not
        if req.bool("purge"):
            for job in api.jobs:
                if g.vmid in job.vmids:
                    job.vmids.remove(g.vmid)
        task.log(f'Logical volume "vm-{g.vmid}-disk-0" successfully removed.')
        return None

    prefix = "vz" if kind == "lxc" else "qm"
    return api.tasks.spawn(
        g.node, f"{prefix}destroy", str(g.vmid), req.authid, body, vmids=[g.vmid]
    ).upid


@route("DELETE", "/nodes/{node}/lxc/{vmid}")
async def lxc_destroy(api: PveApi, req: Req) -> Any:
    return await _destroy(api, req, "lxc")


@route("DELETE", "/nodes/{node}/qemu/{vmid}")
async def qemu_destroy(api: PveApi, req: Req) -> Any:
    return await _destroy(api, req, "qemu")


# ---- snapshots (LXC and QEMU) -------------------------------------------------------------
# One implementation for both kinds, as PVE's AbstractConfig does it: a snapshot keeps a deep copy
# of the guest's simulated OS state; rollback puts it back. A QEMU snapshot is taken without RAM
# (``vmstate`` 0), so a running VM is stopped for its rollback and started again only with
# ``start`` (as qemu-server's rollback does); its agent's processes end with it.

_SNAP_TASKS = {
    "lxc": ("vzsnapshot", "vzrollback", "vzdelsnapshot"),
    "qemu": ("qmsnapshot", "qmrollback", "qmdelsnapshot"),
}


def _snap_guest(api: PveApi, req: Req, kind: str) -> Guest:
    return api.guest_on(req.params["node"], int(req.params["vmid"]), kind)


async def _snapshot_list(api: PveApi, req: Req, kind: str) -> Any:
    g = _snap_guest(api, req, kind)
    snaps = api.snapshots.get(g.vmid, [])
    out: list[dict[str, Any]] = []
    for s in snaps:
        item: dict[str, Any] = {
            "name": s.name,
            "snaptime": s.snaptime,
            "description": s.description,
        }
        if kind == "qemu":
            item["vmstate"] = 0
        if s.parent:
            item["parent"] = s.parent
        out.append(item)
    current: dict[str, Any] = {
        "name": "current",
        "description": "You are here!",
        "running": int(g.status == "running"),
    }
    if snaps:
        current["parent"] = snaps[-1].name
    out.append(current)
    return out


async def _snapshot_create(api: PveApi, req: Req, kind: str) -> Any:
    g = _snap_guest(api, req, kind)
    name = req.str("snapname") or ""
    if not name:
        raise param_error("snapname", "property is missing and it is not optional")
    if not _CONFIGID.match(name) or len(name) > 40:
        raise param_error("snapname", f"invalid format - invalid configuration ID '{name}'")
    description = req.str("description", "") or ""
    if kind == "qemu" and req.bool("vmstate"):
        raise ApiError(500, "the sandbox does not save RAM (vmstate) in snapshots")

    async def body(task: Task) -> int | None:
        _locked_error(api, g)
        # fault ``no_snapshot_vmids``: a container with a bind mount (or on storage without
        # snapshots); PVE's snapshot task ends with this error
        unsnappable = api.faults.extra.get("no_snapshot_vmids") or []
        if g.vmid in unsnappable or str(g.vmid) in unsnappable:
            raise TaskError("snapshot feature is not available")
        snaps = api.snapshots.setdefault(g.vmid, [])
        if any(s.name == name for s in snaps) or name == "current":
            raise TaskError(f"snapshot name '{name}' already used")
        g.lock = "snapshot"
        try:
            if kind == "lxc":
                task.log(f"create storage snapshot '{name}'")
            else:
                task.log(f"snapshotting 'drive-scsi0' (local-lvm:vm-{g.vmid}-disk-0)")
            await api.sleep(1.0)
            with api.lab.lock:
                had = g.name in api.lab.hosts
                state = copy.deepcopy(api.lab.hosts.get(g.name))
            snaps.append(
                SnapshotRec(
                    name,
                    int(time.time()),
                    description,
                    snaps[-1].name if snaps else None,
                    state,
                    had,
                )
            )
        finally:
            g.lock = None
        return None

    task_type = _SNAP_TASKS[kind][0]
    return api.tasks.spawn(g.node, task_type, str(g.vmid), req.authid, body, vmids=[g.vmid]).upid


def _find_snap(api: PveApi, g: Guest, name: str) -> SnapshotRec:
    for s in api.snapshots.get(g.vmid, []):
        if s.name == name:
            return s
    raise ApiError(500, f"snapshot '{name}' does not exist")


async def _snapshot_rollback(api: PveApi, req: Req, kind: str) -> Any:
    g = _snap_guest(api, req, kind)
    snap = _find_snap(api, g, req.params["snapname"])

    async def body(task: Task) -> int | None:
        _locked_error(api, g)
        g.lock = "rollback"
        try:
            was_running = g.status == "running"
            if kind == "qemu" and was_running:
                g.status = "stopped"  # no RAM in the snapshot: the VM is stopped for it
                _agent.runtime(api).end_jobs(g.name)
            await api.sleep(1.5)
            with api.lab.lock:
                if snap.had_state:
                    api.lab.hosts[g.name] = copy.deepcopy(snap.host_state)
                else:
                    api.lab.hosts.pop(g.name, None)
            if req.bool("start") and was_running:
                g.status = "running"
                if kind == "qemu":
                    g.boots += 1
                    _agent.booted(api, g)
        finally:
            g.lock = None
        return None

    task_type = _SNAP_TASKS[kind][1]
    return api.tasks.spawn(g.node, task_type, str(g.vmid), req.authid, body, vmids=[g.vmid]).upid


async def _snapshot_delete(api: PveApi, req: Req, kind: str) -> Any:
    g = _snap_guest(api, req, kind)
    snap = _find_snap(api, g, req.params["snapname"])

    async def body(task: Task) -> int | None:
        if not req.bool("force"):
            _locked_error(api, g)
        await api.sleep(0.8)
        snaps = api.snapshots.get(g.vmid, [])
        for s in snaps:
            if s.parent == snap.name:
                s.parent = snap.parent
        if snap in snaps:
            snaps.remove(snap)
        return None

    task_type = _SNAP_TASKS[kind][2]
    return api.tasks.spawn(g.node, task_type, str(g.vmid), req.authid, body, vmids=[g.vmid]).upid


def _snapshot_routes(kind: str) -> tuple[Any, Any, Any, Any]:
    async def listing(api: PveApi, req: Req) -> Any:
        return await _snapshot_list(api, req, kind)

    async def create(api: PveApi, req: Req) -> Any:
        return await _snapshot_create(api, req, kind)

    async def rollback(api: PveApi, req: Req) -> Any:
        return await _snapshot_rollback(api, req, kind)

    async def delete(api: PveApi, req: Req) -> Any:
        return await _snapshot_delete(api, req, kind)

    base = f"/nodes/{{node}}/{kind}/{{vmid}}/snapshot"
    router.add("GET", base, listing)
    router.add("POST", base, create)
    router.add("POST", f"{base}/{{snapname}}/rollback", rollback)
    router.add("DELETE", f"{base}/{{snapname}}", delete)
    return listing, create, rollback, delete


snapshot_list, snapshot_create, snapshot_rollback, snapshot_delete = _snapshot_routes("lxc")
_snapshot_routes("qemu")


# ---- vzdump --------------------------------------------------------------------------------


def _vzdump_targets(api: PveApi, req: Req) -> list[Guest]:
    if req.bool("all"):
        exclude = {int(v) for v in re.split(r"[,;\s]+", req.str("exclude", "") or "") if v}
        return [g for g in api.lab.guests if g.vmid not in exclude]
    if req.str("pool"):
        return [g for g in api.lab.guests if g.pool == req.str("pool")]
    raw = req.args.get("vmid")
    if raw is None or raw == "":
        raise ApiError(
            400,
            "Parameter verification failed.",
            {"vmid": "at least one of 'all', 'pool' or 'vmid' must be set"},
        )
    text = str(raw) if not isinstance(raw, list) else ",".join(map(str, raw))
    vmids: list[int] = []
    for part in re.split(r"[,;\s]+", text.strip()):
        if not part:
            continue
        if not part.isdigit():
            raise param_error("vmid", f"value '{part}' does not look like a valid VM ID")
        vmids.append(int(part))
    missing = [v for v in vmids if api.lab.guest(v) is None]
    if missing:
        raise ApiError(500, f"Guest(s) {', '.join(map(str, missing))} do not exist")
    return [g for g in (api.lab.guest(v) for v in vmids) if g is not None]


@route("POST", "/nodes/{node}/vzdump")
async def vzdump(api: PveApi, req: Req) -> Any:
    node = req.params["node"]
    storage = req.str("storage", "local") or "local"
    if storage == "local-lvm":
        raise ApiError(500, "storage 'local-lvm' does not support backups")
    api.storage_conf(node, storage)
    if (req.bool("protected") or req.str("notes-template")) and "storage" not in req.args:
        raise param_error("storage", "'storage' is required for 'protected' and 'notes-template'")
    mode = req.str("mode", "snapshot") or "snapshot"
    if mode not in ("snapshot", "suspend", "stop"):
        raise param_error(
            "mode",
            f"value '{mode}' does not have a value in the enumeration 'snapshot, suspend, stop'",
        )
    targets = _vzdump_targets(api, req)
    local = [g for g in targets if g.node == node]
    if not local:
        return "OK"
    task_id = str(local[0].vmid) if len(local) == 1 else ""
    cmdline = " ".join(str(g.vmid) for g in local)
    opts = " ".join(
        f"--{k} {v}"
        for k, v in sorted(req.args.items())
        if k not in ("vmid", "node") and v is not None
    )

    async def body(task: Task) -> int | None:
        task.log(f"INFO: starting new backup job: vzdump {cmdline} {opts} --node {node}".strip())
        errors = 0
        for g in local:
            errors += await _backup_one(api, task, g, storage, mode, req)
        if errors:
            task.log("INFO: Backup job finished with errors")
            raise TaskError("job errors")
        task.log("INFO: Backup job finished successfully")
        # PVE counts the WARN: lines of the log for "TASK WARNINGS: n".
        return sum(line.startswith("WARN: ") for line in task.lines) or None

    return api.tasks.spawn(
        node, "vzdump", task_id, req.authid, body, vmids=[g.vmid for g in local]
    ).upid


async def _backup_one(api: PveApi, task: Task, g: Guest, storage: str, mode: str, req: Req) -> int:
    """One guest of a vzdump job; returns its error count (0 or 1)."""
    label = "CT" if g.type == "lxc" else "VM"
    task.log(f"INFO: Starting Backup of VM {g.vmid} ({g.type})")
    task.log(f"INFO: Backup started at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    task.log(f"INFO: status = {g.status}")
    lock = api.guest_lock(g)
    if lock:
        task.log(f"ERROR: Backup of VM {g.vmid} failed - {label} {g.vmid} is locked ({lock})")
        return 1
    g.lock = "backup"
    try:
        task.log(f"INFO: {label} Name: {g.name}")
        if g.type == "lxc":
            task.log("INFO: including mount point rootfs ('/') in backup")
        else:
            task.log(
                f"INFO: include disk 'scsi0' 'local-lvm:vm-{g.vmid}-disk-0' {g.maxdisk // 1024**3}G"
            )
        effective_mode = mode if g.status == "running" else "stop"
        task.log(f"INFO: backup mode: {effective_mode}")
        task.log("INFO: ionice priority: 7")
        btime = int(time.time())
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(btime))
        btype = backup_type(g)
        if storage in PBS_STORAGES:
            if g.type == "lxc" and effective_mode == "snapshot":
                task.log("INFO: create storage snapshot 'vzdump'")
            task.log(f"INFO: creating Proxmox Backup Server archive '{btype}/{g.vmid}/{iso}'")
            task.log(f"INFO: Starting backup: {btype}/{g.vmid}/{iso}")
            task.log(f"INFO: Client name: {g.node}")
        else:
            ext = "tar.zst" if g.type == "lxc" else "vma.zst"
            stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(btime))
            task.log(
                f"INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-{g.type}-"
                f"{g.vmid}-{stamp}.{ext}'"
            )
        duration = 1.5 + g.disk_used / (150 * 1024**2)
        failure = api.failing(g.vmid)
        if storage in PBS_STORAGES and api.pbs_down():
            failure = f"could not activate storage '{storage}': {storage}: {api.pbs_down()}"
        if failure:
            await api.sleep(duration / 3)
            task.log(f"ERROR: Backup of VM {g.vmid} failed - {failure}")
            return 1
        await api.sleep(duration)
        if api.warns(g.vmid):
            task.log(
                "WARN: some files changed while reading - archive may be inconsistent "
                "(/var/log/journal/system.journal)"
                if g.type == "lxc"
                else "WARN: unable to freeze guest filesystems - guest-agent not running"
            )
        size = int(g.disk_used * 0.62)
        if storage in PBS_STORAGES:
            task.log(
                f"INFO: root.pxar: had to backup {_fmt_size(size / 9)} of "
                f"{_fmt_size(g.disk_used)} (compressed {_fmt_size(size / 25)}) in "
                f"{duration:.2f}s"
            )
            task.log(f"INFO: Duration: {duration:.2f}s")
        else:
            task.log(
                f"INFO: Total bytes written: {g.disk_used} ({_fmt_size(g.disk_used)}, "
                f"{_fmt_size(g.disk_used / duration)}/s)"
            )
            task.log(f"INFO: archive file size: {_fmt_size(size)}")
        notes = _notes(api, req.str("notes-template"), g)
        if notes:
            task.log("INFO: adding notes to backup")
        protected = req.bool("protected")
        if protected:
            task.log("INFO: marking backup as protected")
        if storage in PBS_STORAGES:
            api.store.add(
                Snapshot(
                    btype=btype,
                    bid=str(g.vmid),
                    btime=btime,
                    files=snapshot_files(btype, size),
                    comment=notes,
                    protected=protected,
                    ns=PBS_STORAGES[storage],
                )
            )
        else:
            api.local.append(
                LocalVolume(
                    node=g.node,
                    vmid=g.vmid,
                    subtype=g.type,
                    ctime=btime,
                    size=size,
                    notes=notes,
                    protected=protected,
                )
            )
        if g.name in api.lab.hosts:
            api.backed_up_states[(g.vmid, btime)] = copy.deepcopy(api.lab.hosts[g.name])
        if g.type == "lxc" and effective_mode == "snapshot":
            task.log("INFO: cleanup temporary 'vzdump' snapshot")
        # Logged durations are lab time (unscaled), like the archive sizes they go with.
        task.log(f"INFO: Finished Backup of VM {g.vmid} ({_hms(duration + 1)})")
        task.log(f"INFO: Backup finished at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        return 0
    finally:
        if g.lock == "backup":
            g.lock = None


def _notes(api: PveApi, template: str | None, g: Guest) -> str | None:
    if not template:
        return None
    out = template
    for key, value in (
        ("cluster", api.lab.cluster_name),
        ("guestname", g.name),
        ("node", g.node),
        ("vmid", str(g.vmid)),
    ):
        out = out.replace("{{" + key + "}}", value)
    return out.replace("\\n", "\n").replace("\\\\", "\\")


# ---- tasks ---------------------------------------------------------------------------------


def _task_item(t: Task) -> dict[str, Any]:
    item: dict[str, Any] = {
        "upid": t.upid,
        "node": t.node,
        "pid": t.pid,
        "pstart": t.pstart,
        "starttime": t.starttime,
        "type": t.type,
        "id": t.id,
        "user": t.authid,
    }
    if t.status == "stopped":
        item["endtime"] = t.endtime or t.starttime
        item["status"] = t.exitstatus or "unknown"
    else:
        item["status"] = "RUNNING"
    return item


@route("GET", "/nodes/{node}/tasks")
async def task_list(api: PveApi, req: Req) -> Any:
    node = req.params["node"]
    if api.faults.extra.get("tasks_unreadable"):  # fault: the task index cannot be read
        raise ApiError(500, f"unable to read task index of node '{node}' - Input/output error")
    source = req.str("source", "archive")
    typefilter = req.str("typefilter")
    vmid = req.int("vmid")
    since, until = req.int("since"), req.int("until")
    statusfilter = {s.strip() for s in (req.str("statusfilter") or "").split(",") if s.strip()}
    userfilter = req.str("userfilter")
    auditor = api.can(req, f"/nodes/{node}", ["Sys.Audit"])
    tasks = []
    for t in api.tasks.tasks.values():
        if t.node != node:
            continue
        if not auditor and not api.task_visible(req, t):
            continue
        if source == "archive" and t.status == "running":
            continue
        if source == "active" and t.status != "running":
            continue
        if typefilter and t.type != typefilter:
            continue
        if vmid is not None and str(vmid) != t.id and vmid not in t.vmids:
            continue
        if since is not None and t.starttime < since:
            continue
        if until is not None and t.starttime > until:
            continue
        if req.bool("errors") and t.status_kind() in ("ok",):
            continue
        if statusfilter and t.status == "stopped" and t.status_kind() not in statusfilter:
            continue
        if userfilter and userfilter not in t.authid:
            continue
        tasks.append(t)
    tasks.sort(key=lambda t: (t.starttime, t.pid), reverse=True)
    start = req.int("start", 0) or 0
    limit = req.int("limit", 50) or 50
    page = tasks[start : start + limit]
    return Result([_task_item(t) for t in page], {"total": len(tasks)})


@route("GET", "/cluster/tasks")
async def cluster_tasks(api: PveApi, req: Req) -> Any:
    tasks = sorted(api.tasks.tasks.values(), key=lambda t: t.starttime, reverse=True)[:50]
    return [_task_item(t) for t in tasks]


def _task_for(api: PveApi, req: Req) -> Task:
    upid = req.params["upid"]
    if not _UPID.match(upid):
        raise ApiError(400, "unable to parse worker upid", {"upid": "unable to parse worker upid"})
    task = api.tasks.tasks.get(upid)
    if task is None or task.node != req.params["node"]:
        raise ApiError(400, "Parameter verification failed.", {"upid": "no such task"})
    return task


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(api: PveApi, req: Req) -> Any:
    _task_for(api, req)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(api: PveApi, req: Req) -> Any:
    t = _task_for(api, req)
    api.check_task_access(req, t)
    out: dict[str, Any] = {
        "upid": t.upid,
        "node": t.node,
        "pid": t.pid,
        "pstart": t.pstart,
        "starttime": t.starttime,
        "type": t.type,
        "id": t.id,
        "user": t.user,
        "status": t.status,
    }
    if t.tokenid:
        out["tokenid"] = t.tokenid
    if t.status == "stopped":
        out["exitstatus"] = t.exitstatus
    return out


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(api: PveApi, req: Req) -> Any:
    t = _task_for(api, req)
    api.check_task_access(req, t)
    lines = list(t.lines) or ["no content"]
    start = req.int("start", 0) or 0
    limit = req.int("limit", 50)
    chunk = lines[start:] if limit == 0 else lines[start : start + (limit or 50)]
    return Result(
        [{"n": start + i + 1, "t": line} for i, line in enumerate(chunk)], {"total": len(lines)}
    )


@route("DELETE", "/nodes/{node}/tasks/{upid}")
async def task_stop(api: PveApi, req: Req) -> Any:
    t = _task_for(api, req)
    api.tasks.cancel(t.upid)
    return None


# ---- storage ------------------------------------------------------------------------------


@route("GET", "/storage")
async def storage_index(api: PveApi, req: Req) -> Any:
    """The cluster's storage.cfg, entries the caller may audit or allocate on (``type`` filters).
    Fault ``extra.storage_cfg_unreadable`` of system pve: pmxcfs does not hand the file out."""
    if api.faults.extra.get("storage_cfg_unreadable"):
        raise ApiError(500, "error with cfs lock 'file-storage_cfg': got lock request timeout")
    kind = req.str("type")
    return [
        dict(s)
        for s in api.storage_configs()
        if (kind is None or s["type"] == kind)
        and api.can(
            req, f"/storage/{s['storage']}", ["Datastore.Audit", "Datastore.AllocateSpace"], True
        )
    ]


@route("GET", "/nodes/{node}/storage")
async def storage_list(api: PveApi, req: Req) -> Any:
    out = []
    content = req.str("content")
    for s in api.storages(req.params["node"]):
        if content and content not in s["content"].split(","):
            continue
        if not api.can(
            req, f"/storage/{s['storage']}", ["Datastore.Audit", "Datastore.AllocateSpace"], True
        ):
            continue
        item = dict(s)
        item.update(active=1, enabled=1, used_fraction=round(s["used"] / s["total"], 6))
        if s["storage"] in PBS_STORAGES and api.pbs_down():
            item = {k: item[k] for k in ("storage", "type", "content", "shared", "enabled")}
            item["active"] = 0
        if req.str("storage") and req.str("storage") != s["storage"]:
            continue
        out.append(item)
    return out


@route("GET", "/nodes/{node}/storage/{storage}/status")
async def storage_status(api: PveApi, req: Req) -> Any:
    s = api.storage_conf(req.params["node"], req.params["storage"])
    return {
        "type": s["type"],
        "content": s["content"],
        "shared": s["shared"],
        "active": 1,
        "enabled": 1,
        "total": s["total"],
        "used": s["used"],
        "avail": s["avail"],
    }


@route("GET", "/nodes/{node}/storage/{storage}/content")
async def storage_content(api: PveApi, req: Req) -> Any:
    node, storage = req.params["node"], req.params["storage"]
    api.storage_conf(node, storage)
    if storage in PBS_STORAGES and api.pbs_down():
        raise ApiError(500, f"{storage}: {api.pbs_down()}")
    content = req.str("content")
    if content and content != "backup":
        return []
    out = []
    for item in api.backup_volumes(node, storage, req.int("vmid")):
        try:  # each volume is listed only to whom check_volume_access lets use it
            api.volume_access(req, None, str(item["volid"]), int(item["vmid"]))
        except (Denied, ApiError):
            continue
        out.append(item)
    return out


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
async def storage_delete(api: PveApi, req: Req) -> Any:
    node, storage, volume = req.params["node"], req.params["storage"], req.params["volume"]
    api.storage_conf(node, storage)
    volid = volume if volume.startswith(f"{storage}:") else f"{storage}:{volume}"
    found = api.find_volume(volid)
    if found is None:
        raise ApiError(500, f"volume '{volid}' does not exist")
    kind, obj = found
    if obj.protected:
        raise ApiError(500, f"cannot delete protected backup '{volid}'")

    async def body(task: Task) -> int | None:
        await api.sleep(0.5)
        if kind == "pbs":
            api.store.snapshots.pop(obj.key, None)
        elif obj in api.local:
            api.local.remove(obj)
        task.log(f"Removed volume '{volid}'")
        return None

    vmid = str(obj.bid if kind == "pbs" else obj.vmid)
    return api.tasks.spawn(node, "imgdel", vmid, req.authid, body).upid


@dataclass
class _Prunable:
    key: str
    btime: int
    protected: bool
    vmid: int
    subtype: str


_DEFAULT_PRUNE = {
    "pbs": "keep-daily=7,keep-weekly=4,keep-monthly=3",
    "pbs-home": "keep-daily=7,keep-weekly=4,keep-monthly=3",
    "local": "keep-last=3",
}


@route("GET", "/nodes/{node}/storage/{storage}/prunebackups")
async def prune_preview(api: PveApi, req: Req) -> Any:
    """What pruning would do (``mark`` keep/remove/protected), per guest, like pvesm prune."""
    node, storage = req.params["node"], req.params["storage"]
    api.storage_conf(node, storage)
    spec = req.str("prune-backups") or _DEFAULT_PRUNE.get(storage, "keep-all=1")
    keeps: dict[str, int] = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if not name.startswith("keep-") or not value.isdigit():
            raise param_error("prune-backups", f"invalid format - '{part}'")
        keeps[name] = int(value)
    if keeps.pop("keep-all", 0):
        keeps = {}
    kind = req.str("type")
    vols = [
        v
        for v in api.backup_volumes(node, storage, req.int("vmid"))
        if kind is None or v["subtype"] == kind
    ]
    groups: dict[int, list[_Prunable]] = {}
    for v in vols:
        groups.setdefault(v["vmid"], []).append(
            _Prunable(v["volid"], v["ctime"], bool(v.get("protected")), v["vmid"], v["subtype"])
        )
    out = []
    for items in groups.values():
        marks = prune_marks(items, keeps)
        for it in sorted(items, key=lambda i: i.btime, reverse=True):
            mark = "protected" if it.protected else ("keep" if marks[it.key] else "remove")
            out.append(
                {
                    "volid": it.key,
                    "ctime": it.btime,
                    "mark": mark,
                    "type": it.subtype,
                    "vmid": it.vmid,
                }
            )
    return out


# ---- backup jobs --------------------------------------------------------------------------


def _next_run(schedule: str, now: float) -> int:
    m = re.search(r"(\d{2}):(\d{2})$", schedule)
    hh, mm = (int(m.group(1)), int(m.group(2))) if m else (2, 0)
    t = int(now // DAY * DAY) + hh * 3600 + mm * 60
    if schedule.startswith("sun"):
        days_to_sunday = (6 - time.gmtime(now).tm_wday) % 7
        t += days_to_sunday * DAY
    while t <= now:
        t += DAY if not schedule.startswith("sun") else 7 * DAY
    return t


@route("GET", "/cluster/backup")
async def backup_jobs(api: PveApi, req: Req) -> Any:
    now = time.time()
    return [j.item(_next_run(j.schedule, now)) for j in api.jobs]


@route("GET", "/cluster/backup/{id}")
async def backup_job(api: PveApi, req: Req) -> Any:
    for j in api.jobs:
        if j.id == req.params["id"]:
            return j.item(_next_run(j.schedule, time.time()))
    raise ApiError(500, f"job '{req.params['id']}' does not exist")


@route("GET", "/cluster/backup-info/not-backed-up")
async def not_backed_up(api: PveApi, req: Req) -> Any:
    covered = {v for j in api.jobs for v in j.vmids}
    return [
        {"vmid": g.vmid, "type": g.type, "name": g.name}
        for g in sorted(api.lab.guests, key=lambda g: g.vmid)
        if g.vmid not in covered and not g.template
    ]


# ---- storage replication -----------------------------------------------------------------


def _next_sync(job: ReplicationJob, now: float) -> int:
    """When the node runs the job next: the next ``*/N`` minute mark, a failing job backed off
    (pvesr retries after 5 and 10 minutes, then every 30)."""
    m = re.fullmatch(r"\*/(\d+)", job.schedule)
    step = 60 * (int(m.group(1)) if m else 15)
    if job.fail_count:
        return job.last_try + 60 * (5 * job.fail_count if job.fail_count < 3 else 30)
    return int(now // step + 1) * step


def _replication_unreadable(api: PveApi, where: str) -> bool:
    """Fault ``replication_unreadable``: true for every node's status, or a list of node names
    and ``cluster`` (the job config itself, named alone)."""
    broken = api.faults.extra.get("replication_unreadable")
    if broken is True:
        return where != "cluster"
    return isinstance(broken, list) and where in broken


@route("GET", "/cluster/replication")
async def replication_jobs(api: PveApi, req: Req) -> Any:
    """Only the jobs of guests the caller may audit (VM.Audit on /vms/<vmid>)."""
    if _replication_unreadable(api, "cluster"):  # pmxcfs lost quorum or is not mounted
        raise ApiError(
            500,
            "unable to open file '/etc/pve/replication.cfg' - Transport endpoint is not connected",
        )
    return [j.config() for j in api.replication if api.can(req, f"/vms/{j.guest}", ["VM.Audit"])]


@route("GET", "/nodes/{node}/replication")
async def replication_status(api: PveApi, req: Req) -> Any:
    """``pvesr status``: the jobs of the guests now on the node, disabled ones too.
    Fault ``replication_unreadable`` naming the node (or true): its replication state file
    cannot be read."""
    node = req.params["node"]
    if _replication_unreadable(api, node):
        raise ApiError(
            500,
            "unable to open file '/var/lib/pve-manager/pve-replication-state.json' - "
            "Input/output error",
        )
    wanted = req.str("guest")
    now = time.time()
    out = []
    for j in sorted(api.replication, key=lambda j: j.id):
        g = api.lab.guest(j.guest)
        if g is None or g.node != node or j.target == node:
            continue
        if wanted is not None and str(j.guest) != wanted:
            continue
        if api.can(req, f"/vms/{j.guest}", ["VM.Audit"]):
            out.append(j.status(g.type, _next_sync(j, now)))
    return out


@route("GET", "/nodes/{node}/replication/{id}/log")
async def replication_log(api: PveApi, req: Req) -> Any:
    """A job's log as the node keeps it (its last run; ``start``/``limit`` as a task log's,
    every line without ``limit``). VM.Audit on the guest or Sys.Audit on the node. A node
    where the job never ran has no file: PVE answers one line saying so."""
    node, jobid = req.params["node"], req.params["id"]
    if not re.fullmatch(r"[1-9][0-9]{2,8}-\d{1,9}", jobid):
        raise ApiError(
            400, "Parameter verification failed.", {"id": "value does not match the regex pattern"}
        )
    guest = int(jobid.split("-")[0])
    if not api.can(req, f"/vms/{guest}", ["VM.Audit"]):
        api.access.check(req.authid, f"/nodes/{node}", ["Sys.Audit"])
    job = next((j for j in api.replication if j.id == jobid), None)
    g = api.lab.guest(guest)
    if job is None or g is None or g.node != node or not job.log:
        lines = ["unable to open file - No such file or directory"]
    else:
        lines = list(job.log)
    start = req.int("start", 0) or 0
    limit = req.int("limit", 0) or 0
    chunk = lines[start:] if limit == 0 else lines[start : start + limit]
    return Result(
        [{"n": start + i + 1, "t": line} for i, line in enumerate(chunk)], {"total": len(lines)}
    )


# ---- apt, config, certificates ------------------------------------------------------------


@route("GET", "/nodes/{node}/apt/update")
async def apt_list(api: PveApi, req: Req) -> Any:
    return [dict(p) for p in api.apt[req.params["node"]]]


@route("POST", "/nodes/{node}/apt/update")
async def apt_refresh(api: PveApi, req: Req) -> Any:
    node = req.params["node"]

    async def body(task: Task) -> int | None:
        for i, repo in enumerate(
            (
                "http://deb.debian.org/debian trixie",
                "http://security.debian.org/debian-security trixie-security",
                "http://download.proxmox.com/debian/pve trixie",
            )
        ):
            task.log(f"Hit:{i + 1} {repo} InRelease")
            await api.sleep(0.4)
        task.log("Reading package lists...")
        api.apt_checked[node] = int(time.time())
        return None

    return api.tasks.spawn(node, "aptupdate", "", req.authid, body).upid


@route("GET", "/nodes/{node}/config")
async def node_config(api: PveApi, req: Req) -> Any:
    node = req.params["node"]
    conf: dict[str, Any] = {}
    if node in api.node_acme:
        conf["acme"] = api.node_acme[node]
    conf["digest"] = _digest(conf)
    return conf


@route("GET", "/nodes/{node}/certificates/info")
async def cert_info_list(api: PveApi, req: Req) -> Any:
    node = req.params["node"]
    certs = api.svc.certs[node]
    out = [
        {"filename": "pve-root-ca.pem", **cert_info(api.ctx.ca.root.cert)},
        {"filename": "pve-ssl.pem", **cert_info(certs.pve_ssl.cert)},
    ]
    if certs.pveproxy_ssl is not None:
        out.append({"filename": "pveproxy-ssl.pem", **cert_info(certs.pveproxy_ssl.cert)})
    return out


async def _acme(api: PveApi, req: Req, renew: bool) -> Any:
    node = req.params["node"]
    if node not in api.node_acme:
        raise ApiError(400, "ACME domain list in node configuration is missing!")
    certs = api.svc.certs[node]
    if renew:
        if certs.pveproxy_ssl is None:
            raise ApiError(
                400, "No current (custom) certificate found, please order a new certificate!"
            )
        left = certs.pveproxy_ssl.cert.not_valid_after_utc.timestamp() - time.time()
        if left > 30 * DAY and not req.bool("force"):
            raise param_error(
                "force",
                "Certificate does not expire within the next 30 days, and 'force' is not set.",
            )
    elif certs.pveproxy_ssl is not None and not req.bool("force"):
        raise ApiError(400, "Custom certificate exists but 'force' is not set.")
    domain = api.node_acme[node].split("=", 1)[1].split(";")[0]

    async def body(task: Task) -> int | None:
        task.log("Loading ACME account details")
        task.log("Placing ACME order")
        await api.sleep(1.0)
        task.log(f"Order URL: https://acme.{api.lab.domain}/acme/order/{secrets.token_hex(8)}")
        task.log(
            "Getting authorization details from 'https://acme."
            + api.lab.domain
            + "/acme/authz/"
            + secrets.token_hex(8)
            + "'"
        )
        task.log(f"The validation for {domain} is pending!")
        task.log("Setting up webserver")
        task.log("Triggering validation")
        await api.sleep(2.0)
        fail_nodes = api.faults.extra.get("acme_fail_nodes") or []
        if node in fail_nodes:
            task.log(f"Status is 'invalid', domain '{domain}' failed!")
            raise TaskError(
                f"validating challenge 'https://acme.{api.lab.domain}/acme/chall/"
                f"x' failed - status: invalid"
            )
        task.log(f"Status is 'valid', domain '{domain}' OK!")
        task.log("All domains validated!")
        task.log("Creating CSR")
        task.log("Checking order status")
        task.log("Order is ready, finalizing order")
        await api.sleep(1.0)
        task.log("valid!")
        task.log("Downloading certificate")
        api.svc.issue_acme_cert(node, domain)
        task.log("Setting pveproxy certificate and key")
        task.log("Restarting pveproxy")
        return None

    kind = "acmerenew" if renew else "acmenewcert"
    return api.tasks.spawn(node, kind, "", req.authid, body).upid


@route("POST", "/nodes/{node}/certificates/acme/certificate")
async def acme_order(api: PveApi, req: Req) -> Any:
    return await _acme(api, req, renew=False)


@route("PUT", "/nodes/{node}/certificates/acme/certificate")
async def acme_renew(api: PveApi, req: Req) -> Any:
    return await _acme(api, req, renew=True)


# ---- access control (pveum's API: users, tokens, roles, ACL, pools) ------------------------


@route("POST", "/access/users")
async def user_create(api: PveApi, req: Req) -> Any:
    api.access.add_user(
        req.str("userid") or "",
        enable=req.bool("enable", True),
        comment=req.str("comment", "") or "",
    )
    return None


@route("POST", "/access/users/{userid}/token/{tokenid}")
async def token_create(api: PveApi, req: Req) -> Any:
    userid, name = req.params["userid"], req.params["tokenid"]
    token = api.access.add_token(userid, name, privsep=req.bool("privsep", True))
    token.comment = req.str("comment", "") or ""
    token.expire = req.int("expire", 0) or 0
    info: dict[str, Any] = {"privsep": int(token.privsep), "expire": token.expire}
    if token.comment:
        info["comment"] = token.comment
    return {"full-tokenid": f"{userid}!{name}", "info": info, "value": token.secret}


@route("POST", "/access/roles")
async def role_create(api: PveApi, req: Req) -> Any:
    api.access.add_role(req.str("roleid") or "", split_list(req.str("privs")))
    return None


@route("PUT", "/access/acl")
async def acl_update(api: PveApi, req: Req) -> Any:
    api.access.update_acl(
        req.str("path") or "",
        split_list(req.str("roles")),
        users=split_list(req.str("users")),
        groups=split_list(req.str("groups")),
        tokens=split_list(req.str("tokens")),
        propagate=req.bool("propagate", True),
        delete=req.bool("delete"),
    )
    return None


@route("POST", "/pools")
async def pool_create(api: PveApi, req: Req) -> Any:
    api.access.add_pool(req.str("poolid") or "", req.str("comment", "") or "")
    return None


_PERMISSION_PATHS = (
    "/",
    "/access",
    "/access/groups",
    "/nodes",
    "/pool",
    "/sdn",
    "/storage",
    "/vms",
)


@route("GET", "/access/permissions")
async def permissions_dump(api: PveApi, req: Req) -> Any:
    """A user or token sees its own privileges (a user also its tokens'); anyone else's need
    Sys.Audit on /access. With ``path``: that path; else every path that matters."""
    who = req.str("userid") or req.authid
    owner = who.partition("!")[0]
    if who != req.authid and owner != req.authid:
        api.access.check(req.authid, "/access", ["Sys.Audit"])
    path = req.str("path")
    if path is not None:
        privs = api.access.permissions(who, path)
        return {path: {p: int(v) for p, v in sorted(privs.items())}}
    paths = set(_PERMISSION_PATHS) | set(api.access.acl)
    paths |= {f"/vms/{g.vmid}" for g in api.lab.guests if g.pool in api.access.pools}
    out = {}
    for p in sorted(paths):
        privs = api.access.permissions(who, p)
        if privs:
            out[p] = {k: int(v) for k, v in sorted(privs.items())}
    return out


# The guest agent routes live in their own module; registered last, beside the others.
from sandbox.pve import agent as _agent  # noqa: E402

_agent.register(route)
