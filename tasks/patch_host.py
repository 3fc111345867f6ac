"""Applying updates to one host, and the reboots of the patch sweep. CHANGES HOSTS.

Used by the patch-apply flow: snapshot (containers), upgrade, post-check, roll back on failure;
reboot a container through Proxmox, or a node and wait until it and its guests are back.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from prefect import task

from blocks.context import LabContext
from labops.models.patching import HostApply
from labops.planners import patching as plan
from tasks import snapshots as pve_tasks
from tasks.ssh import CheckOptions, HostAccess, HostCommand, HostRun, check_hosts, run_command

SNAPSHOT_BOOK = "patch-snapshots"
_BOOK_LOCK = threading.Lock()  # patch_host threads update the same state file


def failure_of(run: HostRun) -> str:
    from labops.parsers.apt import failure_reason

    if run.state != "ok" or run.result is None:
        return f"{run.state}: {run.detail}"
    text = run.result.stdout + "\n" + run.result.stderr
    return f"exit {run.result.exit_status}: {failure_reason(text)}"


@task(name="patch-host")
def patch_host(
    ctx_config: str | None,
    step: plan.Step,
    host: plan.PlanHost,
    access: HostAccess,
    manager: str | None,
    snapshot: str | None,
    upgrade: str,
) -> HostApply:
    """Patch one host: snapshot (containers), upgrade, post-check, roll back on failure.
    CHANGES THE HOST. A container being backed up is skipped for now."""
    ctx = LabContext.load(ctx_config)
    policy = ctx.config.patching
    ssh = ctx.ssh_block()
    result = HostApply(
        host=host.name,
        kind=host.kind,
        node=host.node,
        vmid=host.vmid,
        phase="canary" if step.phase == "canary" else "batch",
        batch=step.index,
        started=datetime.now(UTC),
        held_back=host.held_back,
    )
    is_ct = host.kind == "container" and host.vmid is not None and host.node is not None
    pve = ctx.pve_block() if is_ct and ctx.configured("proxmox") else None
    if pve is not None and host.node and host.vmid is not None:
        lock = pve_tasks.guest_lock(pve, host.node, host.vmid)
        if lock == "backup":
            result.outcome, result.detail = "skipped", "being backed up (PVE lock backup)"
            return result
        if snapshot:
            with _BOOK_LOCK:  # booked before it exists: a killed run leaves a trace
                book = ctx.state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
                book.upsert(
                    plan.SnapshotRecord(
                        host=host.name,
                        node=host.node,
                        vmid=host.vmid,
                        name=snapshot,
                        created=datetime.now(UTC),
                    )
                )
                ctx.state.save(SNAPSHOT_BOOK, book)
            pve_tasks.create_snapshot(
                pve,
                host.node,
                host.vmid,
                snapshot,
                f"labops patch run before: {', '.join(host.packages[:8])}",
            )
            result.snapshot = snapshot
    run = run_command(
        ssh, HostCommand(access=access, command=upgrade, timeout_s=policy.upgrade_timeout_s)
    )
    problem = "" if run.state == "ok" and run.result and run.result.ok else failure_of(run)
    if not problem:
        problem = post_check(ctx, ssh, host, access, manager)
    if not problem:
        result.outcome, result.upgraded = "patched", list(host.packages)
    else:
        result.outcome, result.detail = "failed", problem
        if (
            pve is not None
            and snapshot
            and policy.rollback_on_failure
            and host.node
            and host.vmid is not None
        ):
            try:
                pve_tasks.rollback_snapshot(pve, host.node, host.vmid, snapshot)
                result.outcome, result.rolled_back = "rolled-back", True
                result.detail = f"{problem}; rolled back to {snapshot}"
            except Exception as exc:
                result.detail = f"{problem}; ROLLBACK FAILED: {exc}"
    result.finished = datetime.now(UTC)
    return result


def post_check(
    ctx: LabContext, ssh: Any, host: plan.PlanHost, access: HostAccess, manager: str | None
) -> str:
    """ "" when the host is healthy after its upgrade, else why not."""
    policy = ctx.config.patching
    after = check_hosts.fn(ssh, [access], CheckOptions(check_timeout_s=policy.check_timeout_s), 1)
    c = after[0]
    if c.run.state != "ok" or c.facts is None or c.facts.problem:
        return f"post-check: {c.run.state} {c.run.detail or (c.facts.problem if c.facts else '')}"
    still = sorted({p.name for p in c.facts.pending} & set(host.packages))
    if still:
        return f"post-check: still pending: {', '.join(still[:10])}"
    # the upgrade command unholds what it held; a failed unhold would keep them back for good
    stuck = sorted(set(host.hold) & set(c.facts.held))
    if stuck:
        return f"post-check: still held after the upgrade (apt-mark unhold): {', '.join(stuck)}"
    health = policy.health_for(host.name)
    mgr = "apk" if manager == "apk" else "apt"
    if health.services:
        run = run_command(
            ssh,
            HostCommand(
                access=access,
                command=plan.services_command(mgr, health.services),  # type: ignore[arg-type]
                timeout_s=health.timeout_s,
            ),
        )
        if run.state != "ok" or run.result is None or not run.result.ok:
            return f"post-check: services not active ({', '.join(health.services)})"
    if health.command:
        run = run_command(
            ssh, HostCommand(access=access, command=health.command, timeout_s=health.timeout_s)
        )
        if run.state != "ok" or run.result is None or not run.result.ok:
            return f"post-check: health command failed ({failure_of(run)})"
    if health.url:
        why = pve_tasks.probe_url(health.url.replace("{host}", host.name), health.timeout_s)
        if why:
            return f"post-check: {why}"
    return ""


def reboot_container(ctx: LabContext, r: HostApply) -> None:
    if r.node is None or r.vmid is None:
        return
    pve = ctx.pve_block()
    try:
        pve_tasks.set_power(pve, r.node, r.vmid, "reboot")
    except Exception:
        pve_tasks.set_power(pve, r.node, r.vmid, "stop")
        pve_tasks.set_power(pve, r.node, r.vmid, "start")
    r.rebooted = True


def reboot_node(ctx: LabContext, r: HostApply, access: HostAccess) -> str:
    """Reboot a node; wait until it is back (a new boot id over SSH, online in PVE) and every
    guest that ran on it runs again. Returns "" or why not."""
    policy = ctx.config.patching
    ssh = ctx.ssh_block()
    pve = ctx.pve_block() if ctx.configured("proxmox") else None
    boot_id = HostCommand(
        access=access, command="cat /proc/sys/kernel/random/boot_id", timeout_s=15
    )
    first = run_command(ssh, boot_id)
    before = first.result.stdout.strip() if first.result else ""
    running: list[int] = []
    if pve:
        _, guests = pve_tasks.inventory(pve)
        running = [g.vmid for g in guests if g.node == r.host and g.status == "running"]
    run_command(ssh, HostCommand(access=access, command="reboot", timeout_s=30))
    deadline = time.monotonic() + policy.node_boot_timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        probe = run_command(ssh, boot_id)
        if probe.result is None or not probe.result.ok or probe.result.stdout.strip() == before:
            continue
        if pve:
            nodes, guests = pve_tasks.inventory(pve)
            if not any(n.node == r.host and n.online for n in nodes):
                continue
            status = {g.vmid: g.status for g in guests}
            if any(status.get(v) != "running" for v in running):
                continue
        r.rebooted = True
        return ""
    return f"node did not come back within {policy.node_boot_timeout_s:g}s"
