"""The Proxmox Backup Server REST API (``/api2/json``) over the shared datastore.

PBS differs from PVE where clients trip (homelab-api-facts.md §2): ``PBSAPIToken=id:secret``,
plain-text error bodies, real JSON booleans, 9-field UPIDs, kebab-case fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.pbs.store import (
    DAY,
    KEEP_RULES,
    PBS_NODE,
    Datastore,
    Snapshot,
    ns_covers,
    ns_path,
    pbs_upid,
    prune_marks,
    shared_store,
)
from sandbox.pve.http import ApiError, Dropped, Result, Router, inject_faults, read_args
from sandbox.pve.tasks import Task, TaskError, TaskManager

if TYPE_CHECKING:
    from sandbox.pbs import PbsService

router = Router()
route = router.route
VERSION = {"version": "4.0.18", "release": "4.0", "repoid": "3f2c8a5b"}
_TRUE = {"1", "on", "yes", "true"}
_FALSE = {"0", "off", "no", "false"}


def pbs_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(
        400,
        f"parameter verification errors\n\nparameter '{name}': unable to parse boolean '{value}'",
    )


class Req:
    def __init__(self, params: dict[str, str], args: dict[str, Any], authid: str) -> None:
        self.params = params
        self.args = args
        self.authid = authid

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.args.get(name)
        return default if value is None else pbs_bool(value, name)

    def int(self, name: str, default: int | None = None) -> int | None:
        value = self.args.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ApiError(
                400,
                f"parameter verification errors\n\nparameter '{name}': "
                f"value '{value}' is not an integer",
            ) from None


class PbsApi:
    def __init__(self, service: PbsService, store: Datastore | None = None) -> None:
        """``store``: the one datastore this PBS serves (default: the lab's, PVE writes there)."""
        self.svc = service
        self.ctx = service.ctx
        self.token_id = "root@pam!labops"
        self.token_secret = service.token_secret
        self.store: Datastore = store if store is not None else shared_store(self.ctx.lab)
        self.tasks = TaskManager(lambda t: pbs_upid(t.type, t.id, t.authid, t.starttime))
        self._key = secrets.token_bytes(32)
        for upid, kind, wid, start, end, exitstatus, lines in self.store.history:
            self.tasks.add_finished(
                upid, PBS_NODE, kind, wid, "root@pam", start, end, exitstatus, lines
            )
        self._started = time.time()

    @property
    def faults(self) -> Any:
        return self.ctx.faults_for(self.svc.name)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.ctx.time_scale)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "").strip("/")
        path = "/" + tail
        try:
            injected = await inject_faults(request, self.faults, self.ctx.rng, path)
            if injected:
                raise injected
            if path == "/access/ticket" and request.method == "POST":
                return await self.ticket(request)
            authid = await self._authenticate(request)
            args = await read_args(request)
            found = router.match(request.method, path)
            if found is None:
                if any(router.match(m, path) for m in ("GET", "POST", "PUT", "DELETE")):
                    raise ApiError(405, "Method not allowed")
                raise ApiError(404, f"Path '/api2/json{path}' not found.")
            r, params = found
            store = params.get("store")
            if store is not None and store != self.store.name:
                raise ApiError(400, f"datastore '{store}' does not exist")
            if request.method != "GET":
                self.ctx.journal.http(self.svc.name, request.method, path, args)
            result = await r.handler(self, Req(params, args, authid))
        except Dropped:
            return web.Response(status=500)
        except ApiError as err:
            # PBS sends the bare message as the body, with a JSON content type all the same.
            return web.Response(
                status=err.status, text=err.message, content_type="application/json"
            )
        body = (
            {"data": result.data, **result.extra}
            if isinstance(result, Result)
            else {"data": result}
        )
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        m = re.match(r"^PBSAPIToken[= ](.+)$", header.strip())
        if m:
            tokenid, _, secret = m.group(1).partition(":")
            if tokenid == self.token_id and hmac.compare_digest(secret, self.token_secret):
                return tokenid
        else:
            ticket = request.cookies.get("PBSAuthCookie") or request.cookies.get(
                "__Host-PBSAuthCookie"
            )
            user = self._verify_ticket(ticket) if ticket else None
            if user is not None:
                csrf = request.headers.get("CSRFPreventionToken", "")
                if request.method == "GET" or hmac.compare_digest(csrf, self._csrf(user)):
                    return user
        await asyncio.sleep(max(0.3, 3.0 * self.ctx.time_scale))
        raise ApiError(401, "authentication failed")

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _csrf(self, user: str) -> str:
        return f"{int(self._started):08X}:{self._sign('csrf:' + user)[:43]}"

    def _verify_ticket(self, ticket: str) -> str | None:
        parts = ticket.split(":")
        if len(parts) != 5 or parts[0] != "PBS" or parts[3] != "":
            return None
        if not hmac.compare_digest(parts[4], self._sign(":".join(parts[:3]))):
            return None
        try:
            fresh = time.time() - int(parts[2], 16) < 7200
        except ValueError:
            return None
        return parts[1] if fresh else None

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        """``POST /access/ticket`` (username/password, or a valid ticket as password)."""
        args = await read_args(request)
        username, password = str(args.get("username", "")), str(args.get("password", ""))
        ok = username == "root@pam" and hmac.compare_digest(password, self.svc.password)
        if not ok and password.startswith("PBS:"):
            ok = self._verify_ticket(password) == username
        if not ok:
            await asyncio.sleep(max(0.3, 3.0 * self.ctx.time_scale))
            return web.Response(
                status=401, text="authentication failed", content_type="application/json"
            )
        plain = f"PBS:{username}:{int(time.time()):08X}"
        data = {
            "username": username,
            "ticket": f"{plain}::{self._sign(plain)}",
            "CSRFPreventionToken": self._csrf(username),
        }
        return web.json_response({"data": data})

    def ns(self, req: Req) -> str:
        """The request's namespace (``ns``; the root when absent), which must exist."""
        ns = ns_path(req.get("ns"))
        if ns not in self.store.namespaces():
            raise ApiError(400, f"namespace '{ns}' does not exist")
        return ns

    def job_config(self, kind: str) -> None:
        """Fault ``extra.job_config_unreadable`` of system pbs (a list of ``verify``/``prune``,
        or true for both): the job config file cannot be read, as when it does not parse."""
        broken = self.faults.extra.get("job_config_unreadable")
        if broken is True or (isinstance(broken, list) and kind in broken):
            name = "verification" if kind == "verify" else "prune"
            raise ApiError(
                400,
                f"unable to parse {name} job config - line 3: unknown section type 'vrfy'",
            )

    def find(self, req: Req) -> Snapshot:
        btype, bid, btime = req.get("backup-type"), req.get("backup-id"), req.int("backup-time")
        if btype is None or bid is None or btime is None:
            raise ApiError(
                400,
                "parameter verification errors\n\nparameter 'backup-time': "
                "parameter is missing and it is not optional",
            )
        snap = self.store.snapshots.get((str(btype), str(bid), btime))
        if snap is not None and snap.ns != self.ns(req):
            snap = None
        if snap is None:
            raise ApiError(
                404,
                f"no such snapshot {btype}/{bid}/"
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(btime))}",
            )
        return snap

    def verify_fails(self, snap: Snapshot) -> bool:
        if snap.key in self.store.corrupt:
            return True
        fail = self.faults.extra.get("verify_fail")
        if fail is True:
            return True
        if isinstance(fail, list):
            names = {str(x) for x in fail}
            return snap.bid in names or f"{snap.btype}/{snap.bid}" in names
        return False

    def gc_item(self) -> dict[str, Any]:
        out = {"store": self.store.name, **self.store.gc}
        now = time.time()
        nxt = int(now // DAY * DAY + DAY + 3 * 3600)
        out["next-run"] = nxt
        if self.store.gc_running:
            out["upid"] = self.store.gc_running
        return out


# ---- datastores -------------------------------------------------------------------------


@route("GET", "/version")
async def version(api: PbsApi, req: Req) -> Any:
    return dict(VERSION)


@route("GET", "/admin/datastore")
async def datastores(api: PbsApi, req: Req) -> Any:
    return [
        {
            "store": api.store.name,
            "comment": "lab backups",
            "mount-status": "nonremovable",
            "backend-type": "filesystem",
        }
    ]


@route("GET", "/admin/datastore/{store}/status")
async def ds_status(api: PbsApi, req: Req) -> Any:
    st = api.store
    out: dict[str, Any] = {"total": st.total, "used": st.used, "avail": st.total - st.used}
    if req.bool("verbose"):
        out["gc-status"] = {
            k: v
            for k, v in st.gc.items()
            if k not in ("schedule", "last-run-endtime", "last-run-state", "duration")
        }
        out["counts"] = st.counts()
    return out


@route("GET", "/admin/datastore/{store}/snapshots")
async def snapshots(api: PbsApi, req: Req) -> Any:
    """The snapshots of one namespace (``ns``; the root when absent, never the ones below)."""
    btype, bid = req.get("backup-type"), req.get("backup-id")
    return [s.item() for s in api.store.listing(btype, bid, api.ns(req))]


@route("DELETE", "/admin/datastore/{store}/snapshots")
async def snapshot_delete(api: PbsApi, req: Req) -> Any:
    snap = api.find(req)
    if snap.protected:
        raise ApiError(
            400, f"cannot remove protected snapshot {snap.btype}/{snap.bid}/{snap.iso()}"
        )
    api.store.snapshots.pop(snap.key, None)
    return None


@route("GET", "/admin/datastore/{store}/groups")
async def groups(api: PbsApi, req: Req) -> Any:
    return _group_items(api.store.listing(req.get("backup-type"), ns=api.ns(req)))


def _group_items(snaps: list[Snapshot]) -> list[dict[str, Any]]:
    """PBS's ``GroupListItem`` of each backup group (``snaps`` oldest first)."""
    by_group: dict[tuple[str, str], list[Snapshot]] = {}
    for s in snaps:
        by_group.setdefault((s.btype, s.bid), []).append(s)
    out = []
    for (btype, bid), group in sorted(by_group.items()):
        last = group[-1]
        out.append(
            {
                "backup-type": btype,
                "backup-id": bid,
                "last-backup": last.btime,
                "backup-count": len(group),
                "files": [f["filename"] for f in last.files],
                "owner": last.owner,
            }
        )
    return out


@route("GET", "/admin/datastore/{store}/protected")
async def get_protected(api: PbsApi, req: Req) -> Any:
    return api.find(req).protected


@route("PUT", "/admin/datastore/{store}/protected")
async def set_protected(api: PbsApi, req: Req) -> Any:
    snap = api.find(req)
    if req.get("protected") is None:
        raise ApiError(
            400,
            "parameter verification errors\n\nparameter 'protected': "
            "parameter is missing and it is not optional",
        )
    snap.protected = req.bool("protected")
    return None


@route("GET", "/admin/datastore/{store}/notes")
async def get_notes(api: PbsApi, req: Req) -> Any:
    return api.find(req).comment or ""


@route("PUT", "/admin/datastore/{store}/notes")
async def set_notes(api: PbsApi, req: Req) -> Any:
    api.find(req).comment = str(req.get("notes", ""))
    return None


# ---- prune ------------------------------------------------------------------------------


def _keeps(req: Req) -> dict[str, int]:
    return {opt: req.int(opt) or 0 for opt, _ in KEEP_RULES}


@route("POST", "/admin/datastore/{store}/prune")
async def prune_group(api: PbsApi, req: Req) -> Any:
    btype, bid = req.get("backup-type"), req.get("backup-id")
    if btype is None or bid is None:
        raise ApiError(
            400,
            "parameter verification errors\n\nparameter 'backup-id': "
            "parameter is missing and it is not optional",
        )
    snaps = api.store.listing(str(btype), str(bid), api.ns(req))
    marks = prune_marks(snaps, _keeps(req))
    dry = req.bool("dry-run")
    result = [
        {
            "backup-type": s.btype,
            "backup-id": s.bid,
            "backup-time": s.btime,
            "keep": marks[s.key],
            "protected": s.protected,
        }
        for s in sorted(snaps, key=lambda s: s.btime, reverse=True)
    ]
    result.reverse()
    if not dry:
        for s in snaps:
            if not marks[s.key] and not s.protected:
                api.store.snapshots.pop(s.key, None)
        if req.bool("use-task"):
            t = api.tasks.new(PBS_NODE, "prune", f"{api.store.name}:{btype}/{bid}", req.authid)
            t.log(f"Pruned {sum(not v for v in marks.values())} snapshot(s)")
            t.finish("OK")
            return t.upid
    return result


@route("POST", "/admin/datastore/{store}/prune-datastore")
async def prune_datastore(api: PbsApi, req: Req) -> Any:
    keeps = _keeps(req)
    dry = req.bool("dry-run")

    async def body(task: Task) -> int | None:
        task.log(f"Starting datastore prune on datastore '{api.store.name}', root namespace")
        groups: dict[tuple[str, str], list[Snapshot]] = {}
        for s in api.store.listing():
            groups.setdefault((s.btype, s.bid), []).append(s)
        for (btype, bid), snaps in sorted(groups.items()):
            marks = prune_marks(snaps, keeps)
            task.log(f'Pruning group "{btype}/{bid}"')
            for s in sorted(snaps, key=lambda s: s.btime, reverse=True):
                task.log(f"{'keep' if marks[s.key] else 'remove'} {btype}/{bid}/{s.iso()}")
                if not marks[s.key] and not s.protected and not dry:
                    api.store.snapshots.pop(s.key, None)
            await api.sleep(0.05)
        return None

    return api.tasks.spawn(PBS_NODE, "prune", api.store.name, req.authid, body).upid


# ---- verify -----------------------------------------------------------------------------


async def _verify(
    api: PbsApi,
    task: Task,
    snaps: list[Snapshot],
    ignore_verified: bool,
    outdated_after: int | None,
) -> None:
    failed: list[str] = []
    task.log(f"verify datastore {api.store.name}")
    for s in snaps:
        name = f"{s.btype}/{s.bid}/{s.iso()}"
        if ignore_verified and s.verification and s.verification.get("state") == "ok":
            upid = s.verification.get("upid", "")
            parts = upid.split(":")
            age_days = (time.time() - int(parts[5], 16)) / DAY if len(parts) > 6 else 0
            if outdated_after is None or age_days < outdated_after:
                task.log(f"SKIPPED: verify {api.store.name}:{name} (recently verified)")
                continue
        task.log(f"  verify {api.store.name}:{name}")
        await api.sleep(0.2 + s.size / (800 * 1024**2))
        for f in s.files:
            task.log(f"    check {f['filename']}")
        if api.verify_fails(s):
            task.log(
                f"    can't verify chunk, load failed - store '{api.store.name}', "
                "unable to load chunk '6fa3c1…' - blob too small"
            )
            s.verification = {"state": "failed", "upid": task.upid}
            failed.append(name)
        else:
            s.verification = {"state": "ok", "upid": task.upid}
    if failed:
        task.log("Failed to verify the following snapshots/groups:")
        for name in failed:
            task.log(f"\t{name}")
        raise TaskError("verification failed - please check the log for details")


@route("POST", "/admin/datastore/{store}/verify")
async def verify(api: PbsApi, req: Req) -> Any:
    btype, bid, btime = req.get("backup-type"), req.get("backup-id"), req.int("backup-time")
    if btime is not None:
        snaps = [api.find(req)]
        kind, wid = "verify_snapshot", f"{api.store.name}:{btype}/{bid}/{snaps[0].iso()}"
    elif bid is not None and btype is not None:
        snaps = api.store.listing(str(btype), str(bid), api.ns(req))
        kind, wid = "verify_group", f"{api.store.name}:{btype}/{bid}"
    else:
        top, depth = api.ns(req), req.int("max-depth")
        snaps = [s for s in api.store.listing(ns=None) if ns_covers(top, depth, s.ns)]
        kind, wid = "verify", api.store.name
    ignore = req.bool("ignore-verified", True)
    outdated = req.int("outdated-after")

    async def body(task: Task) -> int | None:
        await _verify(api, task, snaps, ignore, outdated)
        return None

    return api.tasks.spawn(PBS_NODE, kind, wid, req.authid, body).upid


@route("GET", "/admin/prune")
async def prune_jobs(api: PbsApi, req: Req) -> Any:
    api.job_config("prune")
    store = req.get("store")
    return [dict(j) for j in api.store.prune_jobs if store is None or j["store"] == store]


@route("GET", "/admin/verify")
async def verify_jobs(api: PbsApi, req: Req) -> Any:
    api.job_config("verify")
    store = req.get("store")
    return [dict(j) for j in api.store.verify_jobs if store is None or j["store"] == store]


@route("GET", "/admin/sync")
async def sync_jobs(api: PbsApi, req: Req) -> Any:
    """Sync jobs with their last run (``sync-direction`` all: pull and push, PBS 3.3+). Fault
    ``extra.job_config_unreadable`` naming ``sync``: sync.cfg does not parse."""
    broken = api.faults.extra.get("job_config_unreadable")
    if isinstance(broken, list) and "sync" in broken:
        raise ApiError(400, "unable to parse sync job config - line 7: missing property 'store'")
    store = req.get("store")
    return [dict(j) for j in api.store.sync_jobs if store is None or j["store"] == store]


@route("GET", "/config/datastore")
async def datastore_configs(api: PbsApi, req: Req) -> Any:
    """datastore.cfg: garbage collection's schedule lives here (``gc-schedule``)."""
    st = api.store
    out = {"name": st.name, "path": f"/mnt/datastore/{st.name}", "comment": "lab backups"}
    if st.gc.get("schedule"):
        out["gc-schedule"] = st.gc["schedule"]
    return [out]


@route("GET", "/config/remote")
async def remotes(api: PbsApi, req: Req) -> Any:
    return [dict(r) for r in api.store.remotes]


@route("GET", "/config/remote/{name}/scan/{remote_store}/groups")
async def remote_groups(api: PbsApi, req: Req) -> Any:
    """The backup groups of a remote's datastore in one namespace (``namespace``, not ``ns``,
    on this endpoint), as this PBS reads them from the remote with the remote's credentials.
    ``faults.extra["remote_down"]`` (remote names) makes the remote unreachable."""
    name, rstore = req.params["name"], req.params["remote_store"]
    remote = next((r for r in api.store.remotes if r["name"] == name), None)
    if remote is None:
        raise ApiError(404, f"remote '{name}' does not exist.")
    if name in (api.faults.extra.get("remote_down") or []):
        raise ApiError(
            400,
            f"error trying to connect: error connecting to https://{remote['host']}:"
            f"{remote['port']}/ - tcp connect error: Connection refused (os error 111)",
        )
    ns = str(req.get("namespace") or "")
    if not any(r == name and st == rstore for r, st, _ in api.store.remote_stores):
        raise ApiError(400, f"datastore '{rstore}' does not exist")
    snaps = api.store.remote_stores.get((name, rstore, ns))
    if snaps is None:
        raise ApiError(400, f"namespace '{ns}' does not exist")
    btype = req.get("backup-type")
    return _group_items(
        sorted(
            (s for s in snaps if btype is None or s.btype == btype),
            key=lambda s: (s.btype, s.bid, s.btime),
        )
    )


@route("POST", "/admin/verify/{id}/run")
async def verify_job_run(api: PbsApi, req: Req) -> Any:
    job = next((j for j in api.store.verify_jobs if j["id"] == req.params["id"]), None)
    if job is None:
        raise ApiError(404, f"job '{req.params['id']}' does not exist.")

    async def body(task: Task) -> int | None:
        try:
            await _verify(
                api,
                task,
                # the job's namespace and max-depth levels below it
                [
                    s
                    for s in api.store.listing(ns=None)
                    if ns_covers(job.get("ns"), job.get("max-depth"), s.ns)
                ],
                bool(job["ignore-verified"]),
                job.get("outdated-after"),
            )
        finally:
            job["last-run-upid"] = task.upid
            job["last-run-endtime"] = int(time.time())
        return None

    t = api.tasks.spawn(
        PBS_NODE, "verificationjob", f"{api.store.name}:{job['id']}", req.authid, body
    )
    job["last-run-state"] = "OK"

    async def record() -> None:
        while t.status == "running":
            await asyncio.sleep(0.02)
        job["last-run-state"] = t.exitstatus

    api.svc.background(record())
    return t.upid


# ---- garbage collection ------------------------------------------------------------------


@route("GET", "/admin/datastore/{store}/gc")
async def gc_status(api: PbsApi, req: Req) -> Any:
    return api.gc_item()


@route("GET", "/admin/gc")
async def gc_all(api: PbsApi, req: Req) -> Any:
    return [api.gc_item()]


@route("POST", "/admin/datastore/{store}/gc")
async def gc_start(api: PbsApi, req: Req) -> Any:
    st = api.store
    if st.gc_running:
        raise ApiError(400, "garbage collection already running")

    async def body(task: Task) -> int | None:
        started = time.time()
        try:
            task.log(f"starting garbage collection on store {st.name}")
            task.log("Start GC phase1 (mark used chunks)")
            await api.sleep(3.0)
            task.log(
                "marked 100% ("
                + str(len(st.snapshots) * 2)
                + " of "
                + str(len(st.snapshots) * 2)
                + " index files)"
            )
            task.log("Start GC phase2 (sweep unused chunks)")
            await api.sleep(3.0)
            if api.faults.extra.get("gc_fail"):
                raise TaskError("unable to acquire chunk store lock - EAGAIN")
            task.log("Removed garbage: 0 B")
            task.log(f"Original data usage: {st.gc.get('index-data-bytes', 0)} B")
            st.gc["last-run-state"] = "OK"
        except TaskError as exc:
            st.gc["last-run-state"] = str(exc)
            raise
        finally:
            st.gc["last-run-endtime"] = int(time.time())
            st.gc["duration"] = int((time.time() - started) / max(api.ctx.time_scale, 1e-6))
            st.gc["upid"] = task.upid
            st.gc_running = None
        return None

    t = api.tasks.spawn(PBS_NODE, "garbage_collection", st.name, req.authid, body)
    st.gc_running = t.upid
    return t.upid


# ---- usage, tasks -------------------------------------------------------------------------


@route("GET", "/status/datastore-usage")
async def usage(api: PbsApi, req: Req) -> Any:
    st = api.store
    now = int(time.time())
    frac = st.used / st.total
    history = [round(frac - 0.002 * (29 - i), 6) for i in range(30)]
    growth_per_day = 0.002
    days_left = (1 - frac) / growth_per_day
    gc = {
        k: v
        for k, v in st.gc.items()
        if k not in ("schedule", "last-run-endtime", "last-run-state", "duration")
    }
    return [
        {
            "store": st.name,
            "total": st.total,
            "used": st.used,
            "avail": st.total - st.used,
            "history": history,
            "history-start": now - 30 * DAY,
            "history-delta": DAY,
            "estimated-full-date": int(now + days_left * DAY),
            "gc-status": gc,
            "mount-status": "nonremovable",
            "backend-type": "filesystem",
        }
    ]


def _task(api: PbsApi, req: Req) -> Task:
    upid = req.params["upid"]
    task = api.tasks.tasks.get(upid)
    if task is None:
        if not upid.startswith("UPID:") or len(upid.split(":")) != 10:
            raise ApiError(400, "unable to parse UPID")
        raise ApiError(400, f"no such task: {upid}")
    return task


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(api: PbsApi, req: Req) -> Any:
    t = _task(api, req)
    parts = t.upid.split(":")
    out: dict[str, Any] = {
        "upid": t.upid,
        "node": PBS_NODE,
        "pid": int(parts[2], 16),
        "pstart": int(parts[3], 16),
        "starttime": t.starttime,
        "type": t.type,
        "id": t.id or None,
        "user": t.user,
        "status": t.status,
    }
    if t.tokenid:
        out["tokenid"] = t.tokenid
    if t.status == "stopped":
        out["exitstatus"] = t.exitstatus
    return out


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(api: PbsApi, req: Req) -> Any:
    t = _task(api, req)
    start = req.int("start", 0) or 0
    limit = req.int("limit", 50)
    lines = t.lines[start:] if limit == 0 else t.lines[start : start + (limit or 50)]
    return Result(
        [{"n": start + i + 1, "t": line} for i, line in enumerate(lines)], {"total": len(t.lines)}
    )


@route("GET", "/nodes/{node}/tasks")
async def task_list(api: PbsApi, req: Req) -> Any:
    tasks = sorted(api.tasks.tasks.values(), key=lambda t: t.starttime, reverse=True)
    running = req.bool("running")
    typefilter, since = req.get("typefilter"), req.int("since")
    out = []
    for t in tasks:
        if running and t.status != "running":
            continue
        if typefilter and not t.type.startswith(str(typefilter)):
            continue
        if since is not None and t.starttime < since:
            continue
        item: dict[str, Any] = {
            "upid": t.upid,
            "node": PBS_NODE,
            "starttime": t.starttime,
            "worker_type": t.type,
            "worker_id": t.id or None,
            "user": t.authid,
        }
        if t.status == "stopped":
            item["endtime"] = t.endtime
            item["status"] = t.exitstatus
        out.append(item)
    limit = req.int("limit", 50) or 50
    start = req.int("start", 0) or 0
    return Result(out[start : start + limit], {"total": len(out)})
