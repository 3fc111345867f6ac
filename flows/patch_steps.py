"""The steps of a patch run, each over the tasks of ``tasks.ssh``, ``tasks.pve`` and
``tasks.patch_host``: check, simulate, show the plan, re-check at approval, execute, reboot, settle
snapshots. ``flows/patching.py`` calls them in runbook order; decisions stay in
``labops/patching/plan.py``, report rows in ``labops/patching/rollout.py``.

Which steps change the lab: :func:`check` only when ``stopped_containers: start-check-stop`` and
not a dry run (it starts and stops containers); :func:`execute` and what it calls; snapshot
deletion in :func:`housekeep_snapshots` and :func:`settle_snapshots` (never in a dry run).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.utilities.annotations import quote

from blocks.context import LabContext
from blocks.edge import TraefikApi
from blocks.proxmox import ProxmoxCredentials
from labops.backups.models import BackupCopy
from labops.errors import ApiError
from labops.outcome import UnknownSince
from labops.patching import plan, windows
from labops.patching.cves import os_of_label
from labops.patching.exposure import exposures
from labops.patching.report import HostApply, HostCheck, PatchReport
from labops.patching.rollout import (
    apply_row,
    check_failure,
    not_run,
    record_result,
    skipped_rows,
    window_stop,
)
from labops.redact import redact
from labops.reports import Failure
from labops.scope import artifact_key
from labops.ssh import SshTarget
from labops.ssh_targets import inventory_hosts, node_target
from tasks import pve as pve_tasks
from tasks.cves import HostPackages, cve_lookup
from tasks.patch_host import (
    SNAPSHOT_BOOK,
    Detach,
    NodeWait,
    PatchJob,
    patch_host,
    reboot_node,
    wait_until_idle,
)
from tasks.progress import Progress
from tasks.ssh import CheckedHost, CheckOptions, HostAccess, HostCommand, check_hosts, run_batch
from tasks.traefik import http_routers

PLAN_KEY = "patch-plan"
_POWER_TIMEOUT_S = 600.0
UNKNOWN_SINCE_KEY = "patch-check-unknown-since"


# -- discovery and check -------------------------------------------------------------------------


def access_of(target: plan.Target, ctx: LabContext) -> HostAccess:
    """How a target is reached: over SSH, ``pct exec`` through its node, or (a VM without SSH)
    through its QEMU guest agent on its node."""
    if target.access == "agent" and target.node and target.vmid is not None:
        return HostAccess(
            name=target.name,
            ssh=SshTarget(name=target.name, address=target.node),
            vmid=target.vmid,
            via="agent",
        )
    if target.access == "pct" and target.node:
        return HostAccess(
            name=target.name, ssh=node_target(ctx.config, target.node), vmid=target.vmid
        )
    return HostAccess(
        name=target.name, ssh=SshTarget(name=target.name, address=target.address, port=target.port)
    )


def _pve(ctx: LabContext) -> ProxmoxCredentials | None:
    """The Proxmox block when configured (VMs through their guest agent, snapshots, reboots)."""
    return ctx.pve_block() if ctx.configured("proxmox") else None


def _parallel(ctx: LabContext) -> int:
    policy = ctx.config.patching
    ssh = ctx.config.systems.ssh
    return min(policy.parallel, ssh.parallel) if ssh else policy.parallel


def _check_hosts(
    ctx: LabContext, accesses: list[HostAccess], opts: CheckOptions
) -> list[CheckedHost]:
    """The check task over ``accesses``. They go in quoted: Prefect would otherwise walk every
    host's model twice (task inputs, future resolution) looking for futures they cannot hold."""
    hosts = cast(list[HostAccess], quote(accesses))
    return check_hosts(ctx.ssh_block(), hosts, opts, _parallel(ctx), _pve(ctx))


def _inventory(
    ctx: LabContext, report: PatchReport
) -> tuple[list[plan.PveNodeInfo], list[plan.PveGuestInfo]]:
    if not (ctx.configured("proxmox") and ctx.config.inventory.discover_from_proxmox):
        report.skipped.append("proxmox: not configured (config hosts only)")
        return [], []
    try:
        pve_nodes, pve_guests = pve_tasks.inventory(ctx.pve_block())
    except Exception as exc:
        report.failures.append(
            Failure(entity="proxmox", reason=f"inventory: {exc}", system="proxmox")
        )
        return [], []
    nodes = [plan.PveNodeInfo(name=n.node, online=n.online) for n in pve_nodes]
    return nodes, [plan.PveGuestInfo.of(g) for g in pve_guests]


def check(
    ctx: LabContext,
    report: PatchReport,
    refresh: bool,
    only_hosts: list[str] | None,
    dry_run: bool = False,
) -> list[plan.Target]:
    """Discover targets, check them all, fill ``report.hosts``; returns the targets.

    In a dry run nothing is started: a stopped container that ``start-check-stop`` would start
    is reported as not checked, and the caller passes ``refresh=False``."""
    log = get_run_logger()
    policy = ctx.config.patching
    hosts = inventory_hosts(ctx.config)
    nodes, guests = _inventory(ctx, report)
    selection = plan.select_targets(
        nodes,
        guests,
        hosts,
        policy.exclusions,
        policy.access or ctx.config.inventory.container_access,
        policy.stopped_containers,
    )
    targets, skipped = selection.targets, selection.skipped
    to_start = [t for t in selection.to_start if t in targets]
    if dry_run and to_start:  # starting it would change the lab: say it was not checked, and why
        targets = [t for t in targets if t not in to_start]
        skipped += [
            plan.Skip(
                name=t.name,
                kind=t.kind,
                node=t.node,
                vmid=t.vmid,
                reason=f"not checked: {t.status}; a dry run does not start it (start-check-stop)",
            )
            for t in to_start
        ]
        to_start = []
    if only_hosts:
        wanted = set(only_hosts)
        targets = [t for t in targets if t.name in wanted]
        skipped = [s for s in skipped if s.name in wanted]
        to_start = [t for t in to_start if t.name in wanted]
    now = datetime.now(UTC)
    report.hosts = skipped_rows(skipped, now)
    if not ctx.configured("ssh"):
        report.failures.append(Failure(entity="ssh", reason="not configured: no host checked"))
        return []
    started = power(ctx, report, to_start, "start")
    # one check path for every host: SSH, pct exec through the node, or a VM's guest agent
    accesses = [access_of(t, ctx) for t in targets]
    opts = CheckOptions(
        refresh=refresh,
        lock_wait_s=policy.lock_wait_s,
        refresh_timeout_s=policy.refresh_timeout_s,
        check_timeout_s=policy.check_timeout_s,
    )
    checked = _check_hosts(ctx, accesses, opts)
    # A container just started may not run its sshd yet (a loaded node boots slowly): ask the
    # unreachable ones again until they answer or started_ssh_wait_s has passed.
    booting = [
        i for i, t in enumerate(targets) if t in started and checked[i].run.state == "unreachable"
    ]
    deadline = time.monotonic() + policy.started_ssh_wait_s
    while booting and time.monotonic() < deadline:
        time.sleep(3)
        again = _check_hosts(ctx, [accesses[i] for i in booting], opts)
        for i, c in zip(booting, again, strict=True):
            checked[i] = c
        booting = [i for i in booting if checked[i].run.state == "unreachable"]
    power(ctx, report, started, "stop")
    now = datetime.now(UTC)
    for target, c in zip(targets, checked, strict=True):
        detail = "; ".join(x for x in (c.run.detail, c.note) if x)
        row = plan.check_row(target, c.run.state, detail, c.facts, now, policy.exclusions.packages)
        report.hosts.append(row)
        if (failure := check_failure(row)) is not None:
            report.failures.append(failure)
    report.hosts.sort(key=lambda h: (h.kind != "node", h.node or "", h.host))
    # "could not check since": the first failed check in a row, remembered across runs (a dry
    # run reads the memory but leaves it as it was)
    book = ctx.state.load(UNKNOWN_SINCE_KEY, UnknownSince) or UnknownSince()
    carried = report.date_unknown(book)
    if not dry_run:
        ctx.state.save(UNKNOWN_SINCE_KEY, carried)
    log.info("checked %d hosts (%d skipped)", len(checked), len(skipped))
    return targets


def _now() -> datetime:
    return datetime.now(UTC)


def power(
    ctx: LabContext, report: PatchReport, targets: list[plan.Target], action: str
) -> list[plan.Target]:
    """Start or stop containers for their check (CHANGES THE LAB; never in a dry run)."""
    done = []
    for t in targets:
        if t.node is None or t.vmid is None:
            continue
        try:
            power_container(ctx, t.node, t.vmid, action)
            done.append(t)
        except Exception as exc:
            report.failures.append(
                Failure(entity=f"host {t.name}", reason=f"{action} for the check failed: {exc}")
            )
    return done


def power_container(ctx: LabContext, node: str, vmid: int, action: str, kind: str = "lxc") -> None:
    """start | stop | reboot a container (``kind`` qemu: a VM) and wait for PVE's task (CHANGES
    THE LAB); ``ApiError`` when the task failed. A lost answer is followed to its task, never
    sent twice."""
    result = pve_tasks.power_guest(
        ctx.pve_block(), node, kind, vmid, action, timeout_s=_POWER_TIMEOUT_S, poll_s=0.5
    )
    if result.status == "error":
        raise ApiError("proxmox", f"{action} of {vmid} failed: {result.exitstatus}")


# -- the plan --------------------------------------------------------------------------------------


def build_rollout(
    ctx: LabContext, rows: list[HostCheck], security_only: bool, excluded: set[str]
) -> plan.RolloutPlan:
    policy = ctx.config.patching
    planned = [
        p
        for h in rows
        if h.host not in excluded and (p := plan.plan_host(h, security_only)) is not None
    ]
    return plan.plan_rollout(
        planned, policy.canaries, policy.canary_count, policy.batch_size, policy.per_node_parallel
    )


def upgrade_of(
    ctx: LabContext, h: plan.PlanHost, row: HostCheck, security_only: bool
) -> plan.Upgrade:
    """The one decision both apply and the dry run use for a host: named packages (security only,
    exclusions, a host changed since the plan) or everything, with its holds."""
    full = not security_only and not ctx.config.patching.exclusions.packages and not h.named
    return h.upgrade(row.package_manager, None if full else h.packages)


def protections(ctx: LabContext, rollout: plan.RolloutPlan, report: PatchReport) -> dict[str, str]:
    """How each planned host can be rolled back: its snapshot, a fresh backup, or nothing."""
    from labops.backups.plan import default_storage
    from tasks.pve import scan_backups

    policy = ctx.config.patching
    snapshot = policy.snapshot_before and ctx.configured("proxmox")
    need = [
        h
        for h in rollout.hosts
        if h.vmid is not None and plan.protection(h, snapshot, None, 0) == "none"
    ]
    ages: dict[int, float] = {}
    if need and ctx.configured("proxmox"):
        try:
            storage = default_storage(ctx.config.backups, ctx.config.systems.pbs)
            online = sorted({h.node for h in need if h.node})
            copies, _ = scan_backups(
                ctx.pve_block(), [storage, *ctx.config.backups.scan_storages], online
            )
            now = time.time()
            for c in copies:
                age = (now - c.ctime) / 3600
                ages[c.vmid] = min(age, ages.get(c.vmid, age))
        except Exception as exc:  # no backup storage known: those hosts show "none"
            report.skipped.append(f"plan: backups not looked up ({exc})")
    return {
        h.name: plan.protection(
            h, snapshot, ages.get(h.vmid) if h.vmid is not None else None, policy.fresh_backup_h
        )
        for h in rollout.hosts
    }


@task(name="publish-patch-plan")
def publish_plan(
    rows: list[dict[str, str]], summary: str, lab: str, ui_url: str | None
) -> str | None:
    """Publish the plan awaiting approval: a table artifact (one row per host) and the markdown
    summary, keyed for this lab (read-only for the lab). Returns the table's URL in the Prefect
    UI (None when no UI is known)."""
    clean = [{k: redact(v) for k, v in r.items()} for r in rows]
    table = create_table_artifact(
        clean, key=artifact_key(lab, PLAN_KEY, "table"), description="Patch plan awaiting approval"
    )
    create_markdown_artifact(redact(summary), key=artifact_key(lab, PLAN_KEY, "summary"))
    return f"{ui_url}/artifacts/artifact/{table}" if table and ui_url else None


# -- dry run ---------------------------------------------------------------------------------------


def simulate(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
    security_only: bool,
) -> None:
    """Run each host's simulation: the very upgrade apply would run (named packages, security
    only, exclusions, holds), as ``apt-get -s`` / ``apk upgrade -s``. Read-only. The backup
    gate says which guests it would back up first and which it would refuse."""
    from flows import patch_gate  # apply only: a patch check's flow process never loads it

    gated = [patch_gate.gated(ctx, report, s, dry_run=True)[0] for s in rollout.steps]
    rollout = plan.RolloutPlan(steps=[s for s in gated if s.hosts])
    rows = {h.host: h for h in report.hosts}
    upgrades = {h.name: upgrade_of(ctx, h, rows[h.name], security_only) for h in rollout.hosts}
    jobs = [
        HostCommand(
            access=access_of(by_name[h.name], ctx),
            command=upgrades[h.name].simulation(),
            timeout_s=ctx.config.patching.check_timeout_s,
        )
        for h in rollout.hosts
    ]
    # a VM without SSH simulates through its guest agent: a read-only command, as over SSH
    runs = run_batch(ctx.ssh_block(), jobs, ctx.config.patching.parallel, _pve(ctx))
    steps = {h.name: s for s in rollout.steps for h in s.hosts}
    lock = ctx.config.patching.lock_wait_s
    for h, r, job in zip(rollout.hosts, runs, jobs, strict=True):
        s = steps[h.name]
        ok = r.state == "ok" and r.result is not None and r.result.ok
        report.applied.append(
            apply_row(
                h,
                s,
                outcome="simulated" if ok else "failed",
                command=upgrades[h.name].command(lock),
                simulated=job.command,
                simulation=(r.result.stdout if r.result else None),
                detail=r.detail if r.state != "ok" else ("" if ok else "simulation failed"),
            )
        )
        if not ok:
            report.failures.append(
                Failure(entity=f"host {h.name}", reason=f"simulation: {r.state} {r.detail}")
            )
    if ctx.config.patching.require_backup.auto_restore:  # said, never done, in a dry run
        report.gate_backups += [
            f"{h.name}: would be restored from its backup automatically if its upgrade failed "
            "with no snapshot (require_backup.auto_restore)"
            for h in rollout.hosts
            if h.kind in ("container", "vm") and h.vmid is not None
        ]
    report.approval = "dry run: nothing changed"


# -- approval --------------------------------------------------------------------------------------


def recheck_approved(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
) -> plan.RolloutPlan:
    """Check the approved hosts again (read-only, no refresh) and keep only what the plan showed:
    a host whose pending packages changed applies the approved ones that are still pending, new
    ones are never added; every change is said in the report."""
    rows = {h.host: h for h in report.hosts}
    names = [h.name for h in rollout.hosts]
    accesses = [access_of(by_name[n], ctx) for n in names]
    policy = ctx.config.patching
    opts = CheckOptions(check_timeout_s=policy.check_timeout_s)
    checked = _check_hosts(ctx, accesses, opts)
    now = datetime.now(UTC)
    approved: dict[str, plan.PlanHost | None] = {}
    for h, c in zip(rollout.hosts, checked, strict=True):
        detail = "; ".join(x for x in (c.run.detail, c.note) if x)
        row = plan.check_row(
            by_name[h.name], c.run.state, detail, c.facts, now, policy.exclusions.packages
        )
        keep, change = plan.recheck_at_approval(h, rows[h.name], row)
        approved[h.name] = keep
        if change:
            report.plan_changes.append(f"{h.name}: {change}")
            get_run_logger().warning("%s changed since the plan: %s", h.name, change)
        if keep is None:
            report.applied.append(apply_row(h, outcome="not-run", detail=change))
            if not row.known:
                report.failures.append(Failure(entity=f"host {h.name}", reason=change))
    steps = []
    for s in rollout.steps:
        hosts = [k for h in s.hosts if (k := approved[h.name]) is not None]
        if hosts:
            steps.append(s.model_copy(update={"hosts": hosts}))
    return plan.RolloutPlan(steps=steps)


# -- apply -----------------------------------------------------------------------------------------


def execute(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
    snap: str | None,
    security_only: bool,
    window: windows.WindowGuard,
    job: str,
) -> None:
    """Apply the rollout step by step (CHANGES THE LAB): the window is asked before every step
    and every reboot; the stop rule after every step; snapshots are settled at the end."""
    from flows import patch_gate  # apply only: a patch check's flow process never loads it

    log = get_run_logger()
    policy = ctx.config.patching
    rows = {h.host: h for h in report.hosts}
    rule = plan.StopRule(max_failures=policy.max_failures, max_fail_ratio=policy.max_fail_ratio)
    done = failed = 0
    book_changed: list[HostApply] = []
    hosts_done = Progress(ctx.config.lab.name, "patch_apply", len(rollout.hosts), "hosts")
    for index, step in enumerate(rollout.steps):
        closed = window.closed()
        if closed:
            log.warning("rollout stopped before %s %d: %s", step.phase, step.index, closed)
            window_stop(report, rollout.steps[index:], closed)
            break
        ssh, pve = ctx.ssh_block(), ctx.pve_block() if ctx.configured("proxmox") else None
        # no guest is upgraded without a recent enough backup (patching.require_backup)
        planned = len(step.hosts)
        step, backups = patch_gate.gated(ctx, report, step)
        hosts_done.advance(planned - len(step.hosts), note="refused by the backup gate")
        futures = [
            patch_host.with_options(name=f"patch-host {h.name}").submit(
                ssh,
                pve,
                patch_job(ctx, step, h, rows[h.name], by_name, snap, security_only, job).model_copy(
                    update={"backup": backups[h.name].backup if h.name in backups else None}
                ),
            )
            for h in step.hosts
        ]
        wait(futures)
        canary_failed = False
        for h, fut in zip(step.hosts, futures, strict=True):
            try:
                r: HostApply = fut.result()
            except Exception as exc:
                r = apply_row(h, step, outcome="failed", detail=f"{type(exc).__name__}: {exc}")
            gate_backup = backups[h.name].backup if h.name in backups else None
            maybe_restore(ctx, r, gate_backup, window)
            done += 1
            hosts_done.advance(note=f"{h.name} {r.outcome}")
            if record_result(report, r):
                failed += 1
                canary_failed |= step.phase == "canary"
            elif r.outcome == "patched":
                book_changed.append(r)
                maybe_reboot(ctx, report, r, by_name, window)
        verdict = rule.verdict(failed, done, canary_failed)
        if verdict:
            report.stopped = f"after {step.phase} {step.index}: {verdict}"
            log.warning("rollout stopped: %s", report.stopped)
            not_run(report, rollout.steps[index + 1 :], "rollout stopped")
            break
    settle_snapshots(ctx, report, book_changed)


def maybe_restore(
    ctx: LabContext, r: HostApply, backup: BackupCopy | None, window: windows.WindowGuard
) -> None:
    """Restore a guest whose upgrade failed from the gate's fresh backup, its rollback point
    when no snapshot could be taken (CHANGES THE LAB), when ``require_backup.auto_restore`` says
    so and the window is still open; the outcome is said on the host (``restored``)."""
    if not ctx.config.patching.require_backup.auto_restore or r.outcome != "failed":
        return
    if r.snapshot or backup is None or r.node is None or r.vmid is None or not r.restore:
        return  # a snapshot is rolled back by patch_host; no backup: nothing to restore
    closed = window.closed()
    if closed:
        r.restored = f"not restored automatically: {closed}"
        return
    kind = "qemu" if r.kind == "vm" else "lxc"
    get_run_logger().warning("%s: upgrade failed, restoring %s", r.host, backup.volid)
    problem = pve_tasks.restore_over_guest(
        ctx.pve_block(),
        r.node,
        kind,
        r.vmid,
        backup.volid,
        timeout_s=ctx.config.patching.require_backup.restore_timeout_s,
        power_timeout_s=_POWER_TIMEOUT_S,
        lost_answer_wait_s=ctx.config.backups.lost_answer_wait,
    )
    if problem:
        r.restored = f"restore failed: {problem}"
        r.detail = "; ".join(x for x in (r.detail, f"AUTOMATIC RESTORE FAILED: {problem}") if x)
        return
    r.restored = f"restored from {backup.volid}"
    r.outcome, r.rolled_back = "rolled-back", True
    r.detail = "; ".join(x for x in (r.detail, f"restored from backup {backup.volid}") if x)


def patch_job(
    ctx: LabContext,
    step: plan.Step,
    h: plan.PlanHost,
    row: HostCheck,
    by_name: dict[str, plan.Target],
    snap: str | None,
    security_only: bool,
    run_key: str,
) -> PatchJob:
    """What ``patch_host`` is given for one host: the upgrade decided here, the policy's
    timeouts and health check, and where the snapshot book is kept."""
    policy = ctx.config.patching
    upgrade = upgrade_of(ctx, h, row, security_only)
    access = access_of(by_name[h.name], ctx)
    # a VM through its agent upgrades detached, as a node: an exec cannot be killed when its
    # poll times out, and a retry must find (never start again) what is running there
    detached = h.kind == "node" or access.via == "agent"
    return PatchJob(
        host=h.model_copy(update={"hold": list(upgrade.hold)}),
        step=step.model_copy(update={"hosts": []}),
        access=access,
        manager=row.package_manager,
        upgrade=upgrade.command(policy.lock_wait_s),
        snapshot=snap if h.kind in ("container", "vm") and h.vmid is not None else None,
        detach=Detach(job=run_key, systemd=row.systemd) if detached else None,
        upgrade_timeout_s=policy.upgrade_timeout_s,
        upgrade_poll_s=policy.upgrade_poll_s,
        check_timeout_s=policy.check_timeout_s,
        rollback_on_failure=policy.rollback_on_failure,
        health=policy.health_for(h.name),
        busy=_node_wait(ctx),
        state_dir=ctx.config.lab.state_dir,
    )


def _node_wait(ctx: LabContext) -> NodeWait:
    return NodeWait(wait_s=ctx.config.patching.busy_wait_s, poll_s=ctx.config.patching.busy_poll_s)


def maybe_reboot(
    ctx: LabContext,
    report: PatchReport,
    r: HostApply,
    by_name: dict[str, plan.Target],
    window: windows.WindowGuard,
) -> None:
    """Reboot a patched host that asks for it (CHANGES THE LAB), inside the window, and a node
    only while it is not busy; a reboot left out is said on the host and in the report."""
    if ctx.config.patching.reboot == "never":
        return
    access = access_of(by_name[r.host], ctx)
    after = check_hosts(ctx.ssh_block(), [access], CheckOptions(), 1, _pve(ctx))[0]
    facts = after.facts
    if facts is None:
        return
    needs = facts.reboot_required
    if r.kind == "node" and facts.needrestart is not None:
        needs = needs or facts.needrestart.reboot_advised
    if not needs:
        return
    why = window.closed()
    if not why:  # down for up to its boot wait (a guest's: its allowance): that must fit
        p = ctx.config.patching
        if r.kind == "node":
            boot, what = p.node_boot_timeout_s, "a node's reboot (node_boot_timeout_s)"
        else:
            boot, what = p.guest_boot_allowance_s, "a guest's reboot (guest_boot_allowance_s)"
        why = window.leaves(timedelta(seconds=boot), what)
    if not why and r.kind == "node":
        pve = ctx.pve_block() if ctx.configured("proxmox") else None
        busy = wait_until_idle(pve, r.host, _node_wait(ctx))
        why = f"node busy: {'; '.join(busy)}" if busy else ""
    if why:
        r.reboot_left = why
        r.detail = "; ".join(x for x in (r.detail, f"reboot left for later: {why}") if x)
        report.skipped.append(f"{r.host}: reboot left for later ({why})")
        return
    try:
        if r.kind == "node":
            from flows import patch_drain  # node reboots only

            # its guests away first (patching.drain); a failed migration: no reboot
            drained, why = patch_drain.drain(ctx, report, r.host)
            if why:
                r.detail = "; ".join(x for x in (r.detail, f"reboot not done: {why}") if x)
                report.failures.append(Failure(entity=f"node {r.host}", reason=f"drain: {why}"))
                return
            pve = ctx.pve_block() if ctx.configured("proxmox") else None
            boot_s = ctx.config.patching.node_boot_timeout_s
            problem = reboot_node(ctx.ssh_block(), pve, access, r.host, boot_s)
            if problem:  # its guests stay where they went: said in the report
                report.failures.append(Failure(entity=f"node {r.host}", reason=problem))
            else:
                r.rebooted = True
                patch_drain.undrain(ctx, report, drained)
        elif r.kind in ("container", "vm") and r.node is not None and r.vmid is not None:
            # PVE's own reboot task: one request, followed to its task if the answer is lost;
            # no stop + start of our own that a lost answer could leave half done.
            kind = "qemu" if r.kind == "vm" else "lxc"
            power_container(ctx, r.node, r.vmid, "reboot", kind)
            r.rebooted = True
    except Exception as exc:
        report.failures.append(Failure(entity=f"host {r.host}", reason=f"reboot: {exc}"))
    r.finished = datetime.now(UTC)  # the host's turn ends when it is back


# -- snapshots -------------------------------------------------------------------------------------


def housekeep_snapshots(ctx: LabContext, report: PatchReport, current: str, dry_run: bool) -> None:
    """Delete snapshots whose keep time is over (CHANGES THE LAB; not in a dry run); report
    labops snapshots nobody planned for."""
    if not ctx.configured("proxmox"):
        return
    pve = ctx.pve_block()
    book = ctx.state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
    if not dry_run:
        for rec in book.due(datetime.now(UTC)):
            try:
                pve_tasks.delete_snapshot(pve, rec.node, rec.vmid, rec.name, rec.kind)
                book.drop(rec.vmid, rec.name)
                report.deleted_snapshots.append(f"{rec.host}: {rec.name}")
            except Exception as exc:
                report.skipped.append(f"snapshot {rec.name} of {rec.host} not deleted: {exc}")
        ctx.state.save(SNAPSHOT_BOOK, book)
    guests = [
        (h.host, h.node, h.vmid, "lxc" if h.kind == "container" else "qemu")
        for h in report.hosts
        if h.kind in ("container", "vm") and h.node and h.vmid is not None and h.state != "skipped"
    ]
    found = pve_tasks.find_snapshots(pve, guests, "labops-patch-")  # type: ignore[arg-type]
    report.leftover_snapshots = plan.leftovers(found, book, current)


def settle_snapshots(ctx: LabContext, report: PatchReport, patched: list[HostApply]) -> None:
    """Healthy hosts' snapshots: deleted now (keep time 0) or booked for later deletion.
    Every other host keeps its snapshot (the operator looks at it), reported as kept and booked
    as rolled back only when the host went back to it."""
    if not ctx.configured("proxmox"):
        return
    policy = ctx.config.patching
    book = ctx.state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
    keep = timedelta(hours=policy.delete_snapshots_after_h)
    for r in report.applied:
        if not r.snapshot or r.vmid is None or r.node is None:
            continue
        kind: Literal["lxc", "qemu"] = "qemu" if r.kind == "vm" else "lxc"
        if r in patched and keep.total_seconds() == 0:
            try:
                pve_tasks.delete_snapshot(ctx.pve_block(), r.node, r.vmid, r.snapshot, kind)
                book.drop(r.vmid, r.snapshot)
                report.deleted_snapshots.append(f"{r.host}: {r.snapshot}")
            except Exception as exc:
                report.skipped.append(f"snapshot {r.snapshot} of {r.host} not deleted: {exc}")
                r.snapshot_kept = True
            continue
        now = datetime.now(UTC)
        status = plan.settled_status(r in patched, r.rolled_back)
        book.upsert(
            plan.SnapshotRecord(
                host=r.host,
                node=r.node,
                vmid=r.vmid,
                name=r.snapshot,
                created=now,
                status=status,
                delete_after=now + keep if r in patched else None,
                kind=kind,
            )
        )
        r.snapshot_kept = True
    ctx.state.save(SNAPSHOT_BOOK, book)


# -- CVEs and exposure (patching.cves) ------------------------------------------------------------


def no_cve_lookup(ctx: LabContext, report: PatchReport) -> str | None:
    """Why the CVEs of the pending updates were not looked up (None: :func:`cves` asked the
    sources; each host's own ``cve_unchecked`` says where they did not answer)."""
    if ctx.config.patching.cves is None:
        return "patching.cves not configured"
    return None if report.cve_feeds else "the CVE lookup did not run"


def cves(ctx: LabContext, report: PatchReport) -> None:
    """The CVEs each checked host's pending updates fix, with KEV flags (tasks/cves.py), and which
    hosts Traefik exposes. Reads only. Off without ``patching.cves`` (the report says so)."""
    policy = ctx.config.patching.cves
    if policy is None:
        return
    checked = [h for h in report.hosts if h.known and h.packages]
    asks = []
    for h in checked:
        os_id, version = os_of_label(h.os)
        codename = h.os.split("(")[-1].rstrip(")") if "(" in h.os else None
        pkgs = [(p.name, p.from_version, p.to_version) for p in h.packages if p.from_version]
        asks.append(
            HostPackages(
                host=h.host, os_id=os_id, version_id=version, codename=codename, packages=pkgs
            )
        )
    failed = ""
    try:
        found = cve_lookup(policy, ctx.config.lab.state_dir, asks)
        report.cve_feeds = found.feeds
        by_host = {r.host: r for r in found.hosts}
    except Exception as exc:  # CVEs unknown on every host, never "none"; the plan still shows
        failed = f"CVE lookup failed: {type(exc).__name__}: {exc}"[:300]
        report.skipped.append(failed)
        by_host = {}
    for h in checked:
        got = by_host.get(h.host)
        if got is None:
            h.cve_unchecked = failed or "the CVE lookup gave no answer"
        else:
            h.cves, h.cve_unchecked = got.cves, got.could_not_check
    if not ctx.configured("traefik"):
        report.skipped.append("exposure: traefik not configured (no host counted as exposed)")
        return
    try:
        routers = http_routers(cast(TraefikApi, ctx.block("traefik")))
    except Exception as exc:
        report.failures.append(
            Failure(entity="traefik", reason=f"exposure unknown: {exc}", system="traefik")
        )
        return
    seen = exposures(routers, [h.host for h in report.hosts])
    for h in report.hosts:
        h.exposed = [e.line() for e in seen.get(h.host, [])]
