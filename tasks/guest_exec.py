"""Run a script inside a guest: ``pct exec`` over SSH to the node for a container, the QEMU
guest agent through the PVE API for a VM. One surface for the drill's in-guest checks, so a VM
drills like a container. Whether the script changes the guest is the script's business (the
drill's checks only read)."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.proxmox import ProxmoxCredentials
from blocks.ssh import SshCredentials
from labops.errors import LabopsError
from labops.guest_agent import run_command
from labops.ssh import SshTarget
from tasks.pve import client
from tasks.ssh import HostAccess, HostCommand, run_one

GuestRunState = Literal["ok", "failed", "unreachable"]


class GuestRun(BaseModel):
    """How a script inside a guest ended. ``ok``: exit 0. ``failed``: it ran and exited non-zero
    (``exit_status``; 3 from the healthy-boot script: no init it knows). ``unreachable``: it
    could not be run or its end not seen (``detail`` says why): could not check."""

    state: GuestRunState
    exit_status: int | None = None
    output: str = ""
    detail: str = ""
    retry: bool = Field(True, description="False: trying again cannot help (configuration).")


def _tail(text: str, n: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _in_container(
    ssh: SshCredentials, target: SshTarget, vmid: int, script: str, timeout_s: float
) -> GuestRun:
    job = HostCommand(
        access=HostAccess(name=f"guest {vmid}", ssh=target, vmid=vmid),
        command=script,
        timeout_s=max(1.0, timeout_s),
    )
    runner = ssh.get_client()
    try:
        run = run_one(runner, job)
    finally:
        runner.close()
    if run.state != "ok" or run.result is None:
        return GuestRun(state="unreachable", detail=f"pct exec: {run.state} {run.detail}".strip())
    res = run.result
    output = _tail(res.stdout + res.stderr)
    if res.exit_status == 255 and "not running" in res.stderr:
        return GuestRun(state="unreachable", exit_status=255, output=output, detail=output)
    return GuestRun(state="ok" if res.ok else "failed", exit_status=res.exit_status, output=output)


def _in_vm(
    pve: ProxmoxCredentials, node: str, vmid: int, script: str, timeout_s: float, poll_s: float
) -> GuestRun:
    try:
        res = run_command(
            client(pve), node, vmid, ["/bin/sh", "-c", script], timeout_s=timeout_s, poll_s=poll_s
        )
    except LabopsError as exc:
        return GuestRun(state="unreachable", detail=f"guest agent: {exc}")
    output = _tail(res.stdout + res.stderr)
    code = res.exit_code if res.exit_code is not None else 128 + (res.signal or 0)
    return GuestRun(state="ok" if code == 0 else "failed", exit_status=code, output=output)


@task(name="guest-exec", task_run_name="exec-in-{vmid}", cache_policy=NO_CACHE)
def run_in_guest(
    pve: ProxmoxCredentials,
    ssh: SshCredentials | None,
    target: SshTarget | None,
    node: str,
    kind: str,
    vmid: int,
    script: str,
    timeout_s: float,
    poll_s: float = 0.5,
) -> GuestRun:
    """Run ``script`` (``sh -c``) inside guest ``vmid`` on ``node`` and wait at most
    ``timeout_s``; a container needs ``ssh`` and its node's ``target``. Changes the guest only
    if the script does."""
    if kind == "lxc":
        if ssh is None or target is None:
            return GuestRun(state="unreachable", detail="pct exec needs systems.ssh", retry=False)
        return _in_container(ssh, target, vmid, script, timeout_s)
    return _in_vm(pve, node, vmid, script, timeout_s, poll_s)
