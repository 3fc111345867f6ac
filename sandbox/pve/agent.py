"""The QEMU guest agent of a VM, as PVE exposes it: ``POST .../agent/exec`` starts a command
(``command``: program + arguments, no shell) and answers its pid at once; ``GET
.../agent/exec-status?pid=`` says ``exited`` 0 until it ends, then its ``exitcode`` and
``out-data``/``err-data``. The command runs in the VM's host of the SSH fleet (the fleet
registers ``lab.shared["guest-agent"]``). A VM not running, or with ``agent`` off in its config,
has no agent to answer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sandbox.pve.api import PveApi, Req, guest_config, route
from sandbox.pve.http import ApiError

_pids = itertools.count(1000)
# (vmid, pid) -> the running command; a finished one's result is read once, like the agent's.
_runs: dict[tuple[int, int], asyncio.Task[tuple[int, str, str]]] = {}


def _agent(api: PveApi, req: Req) -> Any:
    g = api.guest_on(req.params["node"], int(req.params["vmid"]), "qemu")
    agent = str(guest_config(api, g).get("agent", "0")).split(",")[0]
    if agent not in ("1", "enabled=1"):
        raise ApiError(500, "No QEMU guest agent configured")
    run = api.lab.shared.get("guest-agent")
    if g.status != "running" or run is None:
        raise ApiError(500, "QEMU guest agent is not running")
    return g, run


@route("POST", "/nodes/{node}/qemu/{vmid}/agent/exec")
async def agent_exec(api: PveApi, req: Req) -> Any:
    g, run = _agent(api, req)
    command = req.args.get("command")
    argv = [command] if isinstance(command, str) else list(command or [])
    if not argv:
        raise ApiError(400, "Parameter verification failed.", {"command": "property is missing"})
    pid = next(_pids)
    _runs[(g.vmid, pid)] = asyncio.ensure_future(run(g, argv))
    return {"pid": pid}


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status")
async def agent_exec_status(api: PveApi, req: Req) -> Any:
    g, _ = _agent(api, req)
    key = (g.vmid, int(req.args.get("pid") or 0))
    task = _runs.get(key)
    if task is None:
        raise ApiError(500, f"Agent error: PID {key[1]} does not exist")
    if not task.done():
        return {"exited": 0}
    del _runs[key]
    code, out, err = task.result()
    answer: dict[str, Any] = {"exited": 1, "exitcode": code}
    if out:
        answer["out-data"] = out
    if err:
        answer["err-data"] = err
    return answer
