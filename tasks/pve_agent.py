"""Commands in VMs through PVE's QEMU guest agent (VMs without an SSH address)."""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.proxmox import ProxmoxCredentials
from labops.guest_agent import run_command
from labops.models.pve_agent import AgentResult
from labops.patching.agentcheck import check_vm
from labops.patching.hostcheck import HostFacts
from tasks.pve import client


@task(name="pve-agent-exec", tags=["proxmox"], cache_policy=NO_CACHE)
def agent_command(
    block: ProxmoxCredentials,
    node: str,
    vmid: int,
    argv: list[str],
    timeout_s: float,
    max_output: int = 4 * 1024 * 1024,
) -> AgentResult:
    """Run ``argv`` in VM ``vmid`` through its guest agent and wait until it exited. CHANGES
    THE LAB as much as the command does (a check command only reads)."""
    return run_command(client(block), node, vmid, argv, timeout_s=timeout_s, max_output=max_output)


@task(name="pve-agent-check", tags=["proxmox"], cache_policy=NO_CACHE)
def agent_check(
    block: ProxmoxCredentials, node: str, vmid: int, today: date, timeout_s: float
) -> HostFacts:
    """The patch check of VM ``vmid`` through its guest agent. Reads only."""
    return check_vm(client(block), node, vmid, today, timeout_s=timeout_s)
