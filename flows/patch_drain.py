"""Draining a node around its reboot (``patching.drain``): before, its running guests are
migrated away (or shut down) as ``labops/patching/drain.py`` plans; after the node is back and
healthy, they come home (or start again). Every migration is a PVE task waited for; a failed
one stops the node's reboot and puts back the guests already moved. CHANGES THE LAB.
"""

from __future__ import annotations

from prefect import get_run_logger

from blocks.context import LabContext
from labops.patching.drain import DrainGuest, DrainPlan, Move, NodeRoom, pinned_by, plan_drain
from labops.patching.report import PatchReport
from labops.reports import Failure
from tasks import pve as pve_tasks


def drain(ctx: LabContext, report: PatchReport, node: str) -> tuple[DrainPlan | None, str]:
    """Empty ``node`` before its reboot; (the plan carried out, why the reboot must not go on:
    '' when it may). No plan when the policy drains nothing."""
    policy = ctx.config.patching.drain
    if policy.mode == "none" or not ctx.configured("proxmox"):
        return None, ""
    pve = ctx.pve_block()
    try:
        nodes, guests = pve_tasks.inventory(pve)
        running = [
            DrainGuest(
                vmid=g.vmid,
                name=g.name or "",
                type="lxc" if g.type == "lxc" else "qemu",
                mem=g.maxmem or 0,
                pinned=pinned_by(
                    "lxc" if g.type == "lxc" else "qemu",
                    pve_tasks.guest_config(pve, node, g.type, g.vmid).local,
                ),
            )
            for g in guests
            if g.node == node and g.status == "running" and not g.template
        ]
    except Exception as exc:  # cannot tell what runs there: no reboot
        return None, f"cannot list the node's guests: {exc}"
    others = [
        NodeRoom(name=n.node, online=n.online, free_mem=(n.maxmem or 0) - (n.mem or 0))
        for n in nodes
    ]
    plan = plan_drain(node, running, others, policy.mode, policy.pinned)
    report.drains.append(f"{node}: " + ("; ".join(plan.lines()) or "no running guest"))
    if plan.refused:
        return plan, plan.refused
    done: list[Move] = []
    for m in plan.moves:
        why = _migrate(ctx, m)
        if why:
            _move_back(ctx, report, done)
            return plan, why
        done.append(m)
    for g in plan.shutdowns:
        r = pve_tasks.power_guest(pve, node, g.type, g.vmid, "shutdown", timeout_s=300)
        if r.status == "error":
            return plan, f"shutdown of {g.label}: {r.exitstatus}"
    return plan, ""


def undrain(ctx: LabContext, report: PatchReport, plan: DrainPlan | None) -> None:
    """After the node came back healthy: migrated guests home, shut-down guests started."""
    if plan is None:
        return
    if ctx.config.patching.drain.migrate_back:
        _move_back(ctx, report, plan.moves)
    pve = ctx.pve_block()
    for g in plan.shutdowns:
        r = pve_tasks.power_guest(pve, plan.node, g.type, g.vmid, "start", timeout_s=300)
        if r.status == "error":
            report.failures.append(
                Failure(entity=f"node {plan.node}", reason=f"start of {g.label}: {r.exitstatus}")
            )
    report.drains.append(f"{plan.node}: back; guests returned")


def _migrate(ctx: LabContext, m: Move) -> str:
    """'' when ``m`` was done, else why not."""
    try:
        r = pve_tasks.migrate_guest(
            ctx.pve_block(),
            m.source,
            m.type,
            m.vmid,
            m.target,
            timeout_s=ctx.config.patching.drain.task_timeout_s,
        )
    except Exception as exc:
        return f"migration of {m.label} to {m.target}: {exc}"
    if r.status == "error":
        return f"migration of {m.label} to {m.target} failed: {r.exitstatus}"
    get_run_logger().info("migrated %s %s -> %s", m.label, m.source, m.target)
    return ""


def _move_back(ctx: LabContext, report: PatchReport, moved: list[Move]) -> None:
    for m in reversed(moved):
        home = m.model_copy(update={"source": m.target, "target": m.source})
        why = _migrate(ctx, home)
        if why:
            report.failures.append(Failure(entity=f"node {m.source}", reason=f"return: {why}"))
