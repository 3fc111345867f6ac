"""The QEMU guest agent endpoints of a VM (``/nodes/{node}/qemu/{vmid}/agent/...``).

As PVE does it (qemu-server's ``PVE::API2::Qemu::Agent`` over ``PVE::QemuServer::Agent``):
``exec`` takes ``command`` as an array (program + arguments, no shell: a script needs
``["/bin/sh", "-c", ...]``) and answers ``{"pid": N}`` at once; ``exec-status`` answers
``exited`` and, once exited, ``exitcode``, ``out-data``/``err-data`` (already base64-decoded by
PVE) and ``out-truncated``/``err-truncated`` when the agent's capture buffer overflowed; the agent
forgets a pid after reporting it exited. ``ping`` answers ``{"result": {}}``. Without a
configured, enabled, answering agent every call fails with PVE's own message in a 500.

Commands run against the VM's simulated OS state (``lab.hosts[vm name]``, created on first use
with the fleet's seeding), through the fleet's shell interpreter: nothing is spawned.

Fault knobs (``extra`` of the ``pve`` faults): ``agent_down`` (vmids whose agent does not
answer), ``agent_hanging`` (vmids whose commands never exit), ``agent_output_limit`` (bytes of
stdout/stderr captured; QEMU's own buffer is 16 MiB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox.fleet.jobs import HostJobs
from sandbox.fleet.shell import BufferSink, ExitShell, Io, Rebooting, Shell
from sandbox.fleet.state import HostState, new_host_state
from sandbox.fleet.tools import new_boot
from sandbox.lab import Guest, Lab
from sandbox.pve.http import ApiError

if TYPE_CHECKING:
    from sandbox.pve.api import PveApi, Req
    from sandbox.service import Faults

# qga/commands.c GUEST_EXEC_MAX_OUTPUT: what the agent keeps of each stream.
MAX_OUTPUT = 16 * 1024 * 1024


@dataclass
class _Proc:
    task: asyncio.Task[int]
    out: BufferSink
    err: BufferSink


class AgentRuntime(HostJobs):
    """What the fleet's shell needs (``sandbox.fleet.shell.Runtime``), for commands started by
    the guest agent of the VMs of one PVE API."""

    def __init__(self, api: PveApi) -> None:
        super().__init__(first_pid=1200)
        self.api = api
        self.lab: Lab = api.lab
        self.time_scale = float(api.ctx.time_scale)
        self.procs: dict[int, dict[int, _Proc]] = {}

    def faults(self) -> Faults:
        return self.api.faults  # type: ignore[no-any-return]

    def record_exec(self, host: str, argv: list[str], via: str | None) -> None:
        """Every simple command the VM's shell runs, in the sandbox's journal (as the fleet)."""
        self.api.ctx.journal.exec(host, argv, via)

    def request_reboot(self, name: str) -> None:
        guest = next((g for g in self.lab.guests if g.name == name), None)
        if guest is not None:
            with self.lab.lock:
                guest.boots += 1
            booted(self.api, guest)


def booted(api: PveApi, guest: Guest) -> None:
    """What a boot of VM ``guest`` does to its simulated OS (PVE's reboot or start, a rollback
    that starts it, a ``reboot`` inside it): its processes are gone, reboot-required clears, the
    newest kernel runs (as the fleet does for its hosts)."""
    runtime(api).end_jobs(guest.name)
    with api.lab.lock:
        st = api.lab.hosts.get(guest.name)
        if isinstance(st, HostState):
            new_boot(st)


def runtime(api: PveApi) -> AgentRuntime:
    rt = getattr(api, "_agent_runtime", None)
    if rt is None:
        rt = AgentRuntime(api)
        api._agent_runtime = rt  # type: ignore[attr-defined]
    return rt


def _listed(api: PveApi, knob: str, vmid: int) -> bool:
    table = api.faults.extra.get(knob) or ()
    return vmid in table or str(vmid) in table


def available(api: PveApi, guest: Guest) -> None:
    """Fail as ``PVE::QemuServer::Agent::agent_available`` does, in its order."""
    from sandbox.pve.api import guest_config

    conf = guest_config(api, guest)
    if "agent" not in conf:
        raise ApiError(500, "No QEMU guest agent configured")
    if guest.status != "running":
        raise ApiError(500, f"VM {guest.vmid} is not running")
    # A disabled agent has no socket QEMU could reach: PVE says it is not running.
    enabled = str(conf["agent"]).split(",")[0].removeprefix("enabled=")
    if enabled not in ("1", "yes", "on", "true") or _listed(api, "agent_down", guest.vmid):
        raise ApiError(500, "QEMU guest agent is not running")


def _vm(api: PveApi, req: Req) -> Guest:
    node = req.params["node"]
    vmid = int(req.params["vmid"])
    guest = api.guest_on(node, vmid, "qemu")
    available(api, guest)
    with api.lab.lock:
        if guest.name not in api.lab.hosts:
            api.lab.hosts[guest.name] = new_host_state(api.lab, guest.name, "vm", guest)
    return guest


async def ping(api: PveApi, req: Req) -> Any:
    _vm(api, req)
    return {"result": {}}


async def exec_(api: PveApi, req: Req) -> Any:
    guest = _vm(api, req)
    command = req.args.get("command")
    argv = [command] if isinstance(command, str) else [str(c) for c in command or []]
    if not argv:
        raise ApiError(400, "Parameter verification failed.", {"command": "no command given"})
    stdin = str(req.args.get("input-data") or "")
    rt = runtime(api)
    out, err = BufferSink(), BufferSink()
    hanging = _listed(api, "agent_hanging", guest.vmid)

    async def run() -> int:
        if hanging:
            await asyncio.Event().wait()
        shell = Shell(rt, guest.name, "lxc")  # argv is exec'd with no shell, as by the agent
        try:
            return await shell.exec_argv(argv, Io(out, err, stdin))
        except Rebooting:
            return 0
        except ExitShell as e:
            return e.code

    pid = rt.session_pid(guest.name)
    rt.procs.setdefault(guest.vmid, {})[pid] = _Proc(asyncio.ensure_future(run()), out, err)
    return {"pid": pid}


def _capture(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[:limit].decode(errors="replace"), True


async def exec_status(api: PveApi, req: Req) -> Any:
    guest = _vm(api, req)
    pid = int(req.args["pid"])
    procs = runtime(api).procs.get(guest.vmid, {})
    proc = procs.get(pid)
    if proc is None:
        raise ApiError(500, "Agent error: Invalid parameter 'pid'")
    await asyncio.sleep(0)  # let a command that needs no time finish, as a real guest would
    if not proc.task.done():
        return {"exited": 0}
    del procs[pid]  # the agent forgets a process once it has reported it exited
    limit = int(api.faults.extra.get("agent_output_limit") or MAX_OUTPUT)
    answer: dict[str, Any] = {"exited": 1, "exitcode": proc.task.result()}
    for key, sink in (("out", proc.out), ("err", proc.err)):
        text, truncated = _capture(sink.value(), limit)
        if text:
            answer[f"{key}-data"] = text
        if truncated:
            answer[f"{key}-truncated"] = 1
    return answer


def register(route: Callable[[str, str], Callable[[Any], Any]]) -> None:
    base = "/nodes/{node}/qemu/{vmid}/agent"
    route("POST", f"{base}/ping")(ping)
    route("POST", f"{base}/exec")(exec_)
    route("GET", f"{base}/exec-status")(exec_status)
