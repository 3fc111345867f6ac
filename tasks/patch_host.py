"""Applying updates to one host, and the reboots of the patch sweep. CHANGES HOSTS.

Used by the patch-apply flow: snapshot (containers), upgrade, post-check, roll back on failure;
reboot a container through Proxmox, or a node and wait until it and its guests are back.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import task
from pydantic import BaseModel, Field

from blocks.context import LabContext
from labops.patching import plan
from labops.patching.detached import (
    POLL_COMMAND,
    Detached,
    parse_poll,
    start_command,
    where_to_look,
)
from labops.patching.report import HostApply
from tasks import snapshots as pve_tasks
from tasks.ssh import CheckOptions, HostAccess, HostCommand, HostRun, check_hosts, run_command

SNAPSHOT_BOOK = "patch-snapshots"
_BOOK_LOCK = threading.Lock()  # patch_host threads update the same state file


def failure_of(run: HostRun) -> str:
    from labops.patching.apt import failure_reason

    if run.state != "ok" or run.result is None:
        return f"{run.state}: {run.detail}"
    text = run.result.stdout + "\n" + run.result.stderr
    return f"exit {run.result.exit_status}: {failure_reason(text)}"


class Detach(BaseModel):
    """A node's upgrade runs detached on the host (see ``labops.patching.detached``)."""

    job: str = Field(..., description="The run starting it (kept on the host).")
    systemd: bool = Field(False, description="Start it as a transient unit (else nohup).")


class DetachedRun(BaseModel):
    state: Literal["ok", "failed", "still-running"]
    detail: str = ""
    adopted: str | None = Field(None, description="The earlier run whose upgrade was adopted.")


@task(name="patch-host")
def patch_host(
    ctx_config: str | None,
    step: plan.Step,
    host: plan.PlanHost,
    access: HostAccess,
    manager: str | None,
    snapshot: str | None,
    upgrade: str,
    detach: Detach | None = None,
) -> HostApply:
    """Patch one host: snapshot (containers), upgrade, post-check, roll back on failure.
    CHANGES THE HOST. A container being backed up is skipped for now; a node is upgraded only
    while no backup, restore or migration runs on it and none of its guests is locked, and its
    upgrade runs detached (``detach``): a poll timeout reports it still running, never kills it."""
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
    if host.kind == "node" and host.node:
        busy = wait_until_idle(ctx, host.node)
        if busy:
            result.outcome, result.detail = "skipped", f"node busy: {'; '.join(busy)}"
            return result
    if detach is not None:
        done = run_detached(ctx, access, upgrade, detach)
        if done.state == "still-running":
            result.outcome, result.detail = "still-running", done.detail
            result.finished = datetime.now(UTC)
            return result
        problem = done.detail if done.state == "failed" else ""
        if done.adopted:
            result.detail = f"adopted the running upgrade of {done.adopted}"
    else:
        run = run_command(
            ssh, HostCommand(access=access, command=upgrade, timeout_s=policy.upgrade_timeout_s)
        )
        problem = "" if run.state == "ok" and run.result and run.result.ok else failure_of(run)
    if not problem:
        problem = post_check(ctx, ssh, host, access, manager)
    if not problem:
        result.outcome, result.upgraded = "patched", list(host.packages)
    else:
        result.outcome = "failed"
        result.detail = "; ".join(x for x in (result.detail, problem) if x)
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


def wait_until_idle(ctx: LabContext, node: str) -> list[str]:
    """Why ``node`` is busy, after waiting up to ``patching.busy_wait_s`` for it to become idle
    ([] when it is idle). A node whose activity cannot be read counts as busy: unknown is never
    idle."""
    policy = ctx.config.patching
    if not ctx.configured("proxmox"):
        return ["cannot tell whether it is busy: proxmox is not configured"]
    pve = ctx.pve_block()
    deadline = time.monotonic() + policy.busy_wait_s
    while True:
        try:
            tasks, guests = pve_tasks.node_activity(pve, node)
            why = plan.node_busy(node, tasks, [plan.PveGuestInfo.of(g) for g in guests])
        except Exception as exc:
            why = [f"cannot tell whether it is busy: {exc}"]
        left = deadline - time.monotonic()
        if not why or left <= 0:
            return why
        time.sleep(min(policy.busy_poll_s, left))


def _poll(ssh: Any, access: HostAccess) -> Detached | None:
    run = run_command.fn(ssh, HostCommand(access=access, command=POLL_COMMAND, timeout_s=30))
    if run.state != "ok" or run.result is None:
        return None
    state = parse_poll(run.result.stdout)
    return state if state.complete else None


def _wait_detached(ssh: Any, access: HostAccess, deadline: float, poll_s: float) -> Detached | None:
    """Poll until the detached command ended (finished or lost) or ``deadline`` passes; returns
    the last state seen (None: no poll answered)."""
    last = None
    while True:
        state = _poll(ssh, access)
        last = state or last
        if state is not None and (state.finished or state.lost):
            return state
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        time.sleep(min(poll_s, left))


def run_detached(ctx: LabContext, access: HostAccess, command: str, detach: Detach) -> DetachedRun:
    """Run ``command`` detached on the host and poll it until it ends (CHANGES THE HOST).

    An upgrade already running there (a killed run's, or this task's before a retry) is adopted:
    waited for, never doubled; then this run's upgrade starts. Past ``upgrade_timeout_s`` the
    result is "still running" with where to look; nothing is ever killed."""
    policy = ctx.config.patching
    ssh = ctx.ssh_block()
    deadline = time.monotonic() + policy.upgrade_timeout_s
    look = where_to_look(detach.systemd)
    still = f"still running after {policy.upgrade_timeout_s:g}s (not stopped): {look}"
    adopted = None
    first = _poll(ssh, access)
    if first is not None and first.running:
        adopted = first.job or "an earlier run"
        state = _wait_detached(ssh, access, deadline, policy.upgrade_poll_s)
        if state is None or not (state.finished or state.lost):
            why = f"the upgrade started by {adopted} is {still}"
            return DetachedRun(state="still-running", detail=why, adopted=adopted)
        adopted += f" (ended with status {state.status})" if state.finished else " (ended)"
    start = run_command.fn(
        ssh,
        HostCommand(
            access=access,
            command=start_command(detach.job, command, detach.systemd),
            timeout_s=60,
        ),
    )
    if start.state != "ok" or start.result is None or not start.result.ok:
        return DetachedRun(state="failed", detail=f"start: {failure_of(start)}", adopted=adopted)
    state = _wait_detached(ssh, access, deadline, policy.upgrade_poll_s)
    if state is None or not (state.finished or state.lost):
        return DetachedRun(state="still-running", detail=f"upgrade {still}", adopted=adopted)
    if state.status == 0:
        return DetachedRun(state="ok", adopted=adopted)
    if state.status is None:
        why = f"the upgrade ended without an exit status (killed, or a reboot): see {look}"
    else:
        from labops.patching.apt import failure_reason

        why = f"exit {state.status}: {failure_reason(state.log_tail)}"
    return DetachedRun(state="failed", detail=why, adopted=adopted)


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
    # PVE's own reboot task: one request, followed to its task if the answer is lost; no
    # stop + start of our own that a lost answer could leave half done (a stopped container).
    pve_tasks.set_power(ctx.pve_block(), r.node, r.vmid, "reboot")
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
