"""The control API (plain HTTP on 127.0.0.1:base_port) that tests use to steer the sandbox:
faults per system, service actions, named scenarios, a state summary.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sandbox.service import Context, Faults, Service

_FAULT_FIELDS = {f.name for f in dataclasses.fields(Faults)}


def set_faults(faults: Faults, changes: dict[str, Any]) -> None:
    """Change ``faults`` in place (services may hold the object); ``extra`` is merged."""
    unknown = set(changes) - _FAULT_FIELDS
    if unknown:
        raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    for key, value in changes.items():
        if key == "extra":
            if not isinstance(value, dict):
                raise ValueError("extra must be an object")
            faults.extra.update(value)
        else:
            setattr(faults, key, float(value))


def reset_faults(faults: Faults) -> None:
    default = Faults()
    for f in dataclasses.fields(Faults):
        if f.name == "extra":
            faults.extra.clear()
        else:
            setattr(faults, f.name, getattr(default, f.name))


def _first_two_backed_up(ctx: Context) -> list[int]:
    picks = [
        g.vmid
        for g in ctx.lab.guests
        if g.type == "lxc"
        and not g.template
        and "nobackup" not in g.tags
        and g.vmid not in (100, 150)
        and g.node in ("pve1", "pve2")
    ]
    return picks[2:3] + picks[-1:]


def _locked_guest(ctx: Context) -> int:
    picks = [
        g.vmid
        for g in ctx.lab.guests
        if g.type == "lxc" and g.status == "running" and "nobackup" not in g.tags and g.vmid >= 200
    ]
    return picks[1] if len(picks) > 1 else ctx.lab.guests[0].vmid


# Each scenario: system -> fault changes (applied after a reset of every system).
Scenario = Callable[[Context], dict[str, dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "default": lambda ctx: {},
    "flaky": lambda ctx: {
        "pve": {"error_rate": 0.1, "reset_rate": 0.05},
        "pbs": {"error_rate": 0.1, "reset_rate": 0.05},
    },
    "node-offline": lambda ctx: {"pve": {"extra": {"offline_nodes": ["pve3"]}}},
    "backup-failures": lambda ctx: {
        "pve": {"extra": {"failing_vmids": _first_two_backed_up(ctx)}},
    },
    "locked-guest": lambda ctx: {
        "pve": {"extra": {"locked_vmids": {str(_locked_guest(ctx)): "snapshot"}}},
    },
    # One class of responses hangs: PBS-backed storage listings, which are slow in real life.
    "stalled": lambda ctx: {
        "pve": {
            "stall_rate": 1.0,
            "stall_s": 30.0,
            "extra": {"stall_paths": ["/storage/pbs/content"]},
        },
    },
}


class ControlServer:
    def __init__(
        self,
        ctx: Context,
        services: dict[str, Service],
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.services = services
        self.info = info or (lambda: {})
        self.started = time.time()
        self.scenario = "default"
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_sandbox/health", self.health)
        app.router.add_get("/_sandbox/state", self.state)
        app.router.add_get("/_sandbox/journal", self.get_journal)
        app.router.add_post("/_sandbox/faults/{system}", self.post_faults)
        app.router.add_delete("/_sandbox/faults", self.delete_faults)
        app.router.add_post("/_sandbox/scenario/{name}", self.post_scenario)
        app.router.add_post("/_sandbox/{service}/{action}", self.post_action)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ctx.host, self.ctx.base_port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        for svc in self.services.values():
            hook = getattr(svc, "on_faults_changed", None)
            if hook is None:
                continue
            result = hook()
            if inspect.isawaitable(result):
                await result

    async def apply_scenario(self, name: str) -> None:
        if name not in SCENARIOS:
            raise KeyError(name)
        for faults in self.ctx.faults.values():
            reset_faults(faults)
        for system, changes in SCENARIOS[name](self.ctx).items():
            set_faults(self.ctx.faults_for(system), changes)
        self.scenario = name
        await self._notify()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "pid": os.getpid(), "services": sorted(self.services)}
        )

    async def state(self, request: web.Request) -> web.Response:
        lab = self.ctx.lab
        services: dict[str, Any] = {}
        for name, svc in self.services.items():
            fn = getattr(svc, "state", None)
            if callable(fn):
                try:
                    services[name] = fn()
                except Exception as exc:  # one broken summary must not hide the others
                    services[name] = {"error": str(exc)}
        body = {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "rss_bytes": _rss_bytes(),
            "scenario": self.scenario,
            "time_scale": self.ctx.time_scale,
            "faults": {k: dataclasses.asdict(v) for k, v in self.ctx.faults.items()},
            "lab": {
                "nodes": [{"name": n.name, "online": n.online} for n in lab.nodes],
                "guests": len(lab.guests),
                "lxc": sum(g.type == "lxc" for g in lab.guests),
                "qemu": sum(g.type == "qemu" for g in lab.guests),
            },
            "services": services,
            **self.info(),
        }
        return web.json_response(body, dumps=_dumps)

    async def get_journal(self, request: web.Request) -> web.Response:
        """``?since=N`` (default 0) and ``?system=pve|pbs|fleet``: the entries after mark N;
        ``mark`` is the number of the newest entry (pass it as ``since`` next time)."""
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": "since must be an integer"}, status=400)
        journal = self.ctx.journal
        entries = journal.since(since, request.query.get("system"))
        return web.json_response({"mark": journal.seq, "entries": entries}, dumps=_dumps)

    async def post_faults(self, request: web.Request) -> web.Response:
        system = request.match_info["system"]
        try:
            changes = await request.json() if request.can_read_body else {}
            set_faults(self.ctx.faults_for(system), changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        await self._notify()
        return web.json_response(dataclasses.asdict(self.ctx.faults_for(system)))

    async def delete_faults(self, request: web.Request) -> web.Response:
        for faults in self.ctx.faults.values():
            reset_faults(faults)
        self.scenario = "default"
        await self._notify()
        return web.json_response({"reset": sorted(self.ctx.faults)})

    async def post_scenario(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await self.apply_scenario(name)
        except KeyError:
            return web.json_response(
                {"error": f"unknown scenario {name!r}", "known": sorted(SCENARIOS)}, status=404
            )
        return web.json_response(
            {
                "scenario": name,
                "faults": {k: dataclasses.asdict(v) for k, v in self.ctx.faults.items()},
            }
        )

    async def post_action(self, request: web.Request) -> web.Response:
        name, action = request.match_info["service"], request.match_info["action"]
        svc = self.services.get(name)
        if svc is None:
            return web.json_response({"error": f"no service {name!r}"}, status=404)
        payload = await request.json() if request.can_read_body else {}
        try:
            result = svc.control(action, payload or {})
            if inspect.isawaitable(result):
                result = await result
        except KeyError as exc:
            return web.json_response({"error": f"{name}: unknown action or key {exc}"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        await self._notify()
        return web.json_response(result, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "darwin":  # pragma: no cover - ru_maxrss is bytes there
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0
