"""Patch sweep: what is pending on every node and container (check), and applying it safely
(apply: approval, maintenance window, snapshot, canaries, batches, rollback, reboots).

The runbook, step by step; SSH and Proxmox calls live in tasks/, decisions in
labops/planners/patching.py, parsing in labops/parsers/.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.flow_runs import pause_flow_run
from prefect.futures import wait
from prefect.input import RunInput
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from blocks.context import LabContext
from labops.config.inventory import Host
from labops.flow_params import ConfigPath, HostList
from labops.limits import SlotBusy, maintenance_slot
from labops.models.patching import FAILED_STATES, HostApply, HostCheck, PatchReport
from labops.planners import patching as plan
from labops.reports import Failure
from labops.ssh import SshTarget
from tasks import snapshots as pve_tasks
from tasks.patch_host import (
    SNAPSHOT_BOOK,
    patch_host,
    reboot_container,
    reboot_node,
)
from tasks.publish import publish_report
from tasks.ssh import (
    CheckedHost,
    CheckOptions,
    HostAccess,
    HostCommand,
    check_hosts,
)


class PatchApproval(RunInput):
    """The operator's answer to a patch plan (the Resume form in the Prefect UI)."""

    approve: bool = Field(False, description="Apply the plan (unticked: reject it).")
    exclude_hosts: list[str] = Field(default_factory=list, description="Leave these hosts out.")
    security_only: bool = Field(False, description="Apply only security updates.")
    note: str = Field("", description="Why (kept in the report).")


# -- discovery and check (both modes) -------------------------------------------------------------


def _node_hosts(ctx: LabContext) -> list[Host]:
    """Inventory hosts plus the nodes' SSH addresses from ``systems.proxmox.nodes``."""
    hosts = list(ctx.config.inventory.hosts)
    names = {h.name for h in hosts}
    pve = ctx.config.systems.proxmox
    for name, node in (pve.nodes if pve else {}).items():
        if name not in names and node.ssh_host:
            hosts.append(Host(name=name, kind="node", address=node.ssh_host, port=node.ssh_port))
    return hosts


def _access(target: plan.Target, hosts: list[Host]) -> HostAccess:
    if target.access == "pct" and target.node:
        node = next(h for h in hosts if h.name == target.node)
        ssh = SshTarget(name=target.node, address=node.address or node.name, port=node.port)
        return HostAccess(name=target.name, ssh=ssh, vmid=target.vmid)
    return HostAccess(
        name=target.name, ssh=SshTarget(name=target.name, address=target.address, port=target.port)
    )


def _check(
    ctx: LabContext,
    report: PatchReport,
    refresh: bool,
    only_hosts: list[str] | None,
) -> tuple[list[plan.Target], list[Host]]:
    """Discover targets, check them all, fill ``report.hosts``; returns the targets."""
    log = get_run_logger()
    policy = ctx.config.patching
    hosts = _node_hosts(ctx)
    nodes: list[plan.PveNodeInfo] = []
    guests: list[plan.PveGuestInfo] = []
    if ctx.configured("proxmox") and ctx.config.inventory.discover_from_proxmox:
        try:
            pve_nodes, pve_guests = pve_tasks.inventory(ctx.pve_block())
            nodes = [plan.PveNodeInfo(name=n.node, online=n.online) for n in pve_nodes]
            guests = [
                plan.PveGuestInfo(
                    vmid=g.vmid,
                    name=g.name or f"CT{g.vmid}",
                    node=g.node,
                    type="lxc" if g.type == "lxc" else "qemu",
                    status=g.status,
                    template=g.template,
                    tags=g.tags,
                    lock=g.lock,
                )
                for g in pve_guests
            ]
        except Exception as exc:
            report.failures.append(
                Failure(entity="proxmox", reason=f"inventory: {exc}", system="proxmox")
            )
    else:
        report.skipped.append("proxmox: not configured (config hosts only)")
    selection = plan.select_targets(
        nodes,
        guests,
        hosts,
        policy.exclusions,
        policy.access or ctx.config.inventory.container_access,
        policy.stopped_containers,
    )
    targets = selection.targets
    skipped = selection.skipped
    if only_hosts:
        wanted = set(only_hosts)
        targets = [t for t in targets if t.name in wanted]
        skipped = [s for s in skipped if s.name in wanted]
    now = datetime.now(UTC)
    report.hosts = [
        HostCheck(
            host=s.name,
            kind=s.kind,
            node=s.node,
            vmid=s.vmid,
            state="skipped",
            detail=s.reason,
            last_checked=now,
        )
        for s in skipped
    ]
    if not ctx.configured("ssh"):
        report.failures.append(Failure(entity="ssh", reason="not configured: no host checked"))
        return [], hosts
    to_start = [t for t in selection.to_start if t in targets]
    started = _power(ctx, report, to_start, "start")
    accesses = [_access(t, hosts) for t in targets]
    opts = CheckOptions(
        refresh=refresh,
        lock_wait_s=policy.lock_wait_s,
        refresh_timeout_s=policy.refresh_timeout_s,
        check_timeout_s=policy.check_timeout_s,
    )
    parallel = (
        min(policy.parallel, ctx.config.systems.ssh.parallel)
        if ctx.config.systems.ssh
        else policy.parallel
    )
    checked: list[CheckedHost] = check_hosts(ctx.ssh_block(), accesses, opts, parallel)
    booting = [
        i for i, t in enumerate(targets) if t in started and checked[i].run.state == "unreachable"
    ]
    if booting:  # a container just started may not run its sshd yet: one more try
        time.sleep(3)
        again = check_hosts(ctx.ssh_block(), [accesses[i] for i in booting], opts, parallel)
        for i, c in zip(booting, again, strict=True):
            checked[i] = c
    _power(ctx, report, started, "stop")
    now = datetime.now(UTC)
    for target, c in zip(targets, checked, strict=True):
        detail = "; ".join(x for x in (c.run.detail, c.note) if x)
        row = plan.check_row(target, c.run.state, detail, c.facts, now, policy.exclusions.packages)
        report.hosts.append(row)
        if row.state in FAILED_STATES:
            report.failures.append(
                Failure(
                    entity=f"host {row.host}", reason=f"{row.state}: {row.detail}", system="ssh"
                )
            )
    report.hosts.sort(key=lambda h: (h.kind != "node", h.node or "", h.host))
    log.info("checked %d hosts (%d skipped)", len(checked), len(skipped))
    return targets, hosts


def _power(
    ctx: LabContext, report: PatchReport, targets: list[plan.Target], action: str
) -> list[plan.Target]:
    done = []
    for t in targets:
        if t.node is None or t.vmid is None:
            continue
        try:
            pve_tasks.set_power(ctx.pve_block(), t.node, t.vmid, action)
            done.append(t)
        except Exception as exc:
            report.failures.append(
                Failure(entity=f"host {t.name}", reason=f"{action} for the check failed: {exc}")
            )
    return done


@flow(
    name="patch-check",
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
def patch_check(
    config: ConfigPath | None = None,
    refresh: bool | None = None,
    hosts: HostList | None = None,
) -> PatchReport | State:
    """Check pending updates on every Proxmox node and running container (read-only).

    Per host: optionally refresh the package lists (waiting for a held apt lock), then one
    combined command: upgradable packages with versions and suites (security = a ``-security``
    suite), held packages, reboot-required and its packages, ``needrestart -b``, os-release
    (end-of-life releases flagged). Unreachable hosts, refused host keys and failed logins are
    reported as such, never as up to date.

    Args:
        config: labops config path (None: LABOPS_CONFIG or ./labops.yaml).
        refresh: refresh package lists first (None: ``patching.refresh``).
        hosts: check only these hosts (None: all).

    Returns:
        The PatchReport (compliance table, metrics, notification).
    """
    ctx = LabContext.load(config)
    report = PatchReport(operation="patch_check", mode="check")
    do_refresh = ctx.config.patching.refresh if refresh is None else refresh
    _check(ctx, report, do_refresh, hosts)
    return publish_report(report, ctx)


# -- apply ----------------------------------------------------------------------------------------


def _run_key() -> str:
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
        return str(run.id).split("-")[0] if run else datetime.now(UTC).strftime("%Y%m%d%H%M")
    except Exception:
        return datetime.now(UTC).strftime("%Y%m%d%H%M")


def _is_scheduled() -> bool:
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
        return bool(run and run.auto_scheduled)
    except Exception:
        return False


@flow(
    name="patch-apply",
    task_runner=ThreadPoolTaskRunner(max_workers=16),  # type: ignore[arg-type]
)
def patch_apply(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    security_only: bool | None = None,
    hosts: HostList | None = None,
) -> PatchReport | State:
    """Apply pending updates after approval, inside a maintenance window (CHANGES HOSTS).

    Checks every host, plans the rollout (canaries, then batches with at most N containers per
    node, then the nodes one at a time), pauses for approval (approve, narrow or reject; scheduled
    runs may be pre-approved by policy), then per host: skip if being backed up, LXC snapshot
    named for the run, upgrade (nodes: dist-upgrade, with pending ``exclusions.packages`` held
    for its duration), post-check, roll back on failure. Stops past the failure limit; reboots by
    policy; deletes snapshots of healthy hosts after the configured time. A dry run prints the
    plan and ``apt-get -s`` per host and changes nothing. The plan, the dry run and the report
    name the packages held back per host.

    Args:
        config: labops config path.
        dry_run: plan and simulate only.
        security_only: only security updates (None: ``patching.security_only``).
        hosts: limit the run to these hosts.
    """
    ctx = LabContext.load(config)
    log = get_run_logger()
    policy = ctx.config.patching
    report = PatchReport(operation="patch_apply", mode="apply", dry_run=dry_run)
    now = datetime.now(UTC)
    if not dry_run and not plan.in_any_window(policy.windows, now):
        opening = plan.next_opening(policy.windows, now)
        when = opening.isoformat(timespec="minutes") if opening else "never (check the windows)"
        report.failures.append(
            Failure(
                entity="patch apply",
                reason=f"refused: outside the maintenance window (next opens {when})",
            )
        )
        return publish_report(report, ctx)
    run_key = _run_key()
    snap = plan.snapshot_name(run_key) if policy.snapshot_before else None
    targets, inv_hosts = _check(ctx, report, policy.refresh, hosts)
    _housekeep_snapshots(ctx, report, snap or "", dry_run)
    sec_only = policy.security_only if security_only is None else security_only
    by_name = {t.name: t for t in targets}
    rows = {h.host: h for h in report.hosts}

    def build(sec: bool, excluded: set[str]) -> plan.RolloutPlan:
        planned = [
            p
            for h in report.hosts
            if h.host not in excluded and (p := plan.plan_host(h, sec)) is not None
        ]
        return plan.plan_rollout(
            planned,
            policy.canaries,
            policy.canary_count,
            policy.batch_size,
            policy.per_node_parallel,
        )

    rollout = build(sec_only, set())
    if not rollout.steps:
        report.approval = "nothing to apply"
        return publish_report(report, ctx)
    if dry_run:
        _simulate(ctx, report, rollout, by_name, inv_hosts)
        return publish_report(report, ctx)
    if policy.preapproved_scheduled and _is_scheduled():
        report.approval = "pre-approved (scheduled run, patching.preapproved_scheduled)"
    else:
        description = (
            f"## Patch plan ({'security only' if sec_only else 'all updates'})\n\n```\n"
            f"{rollout.describe()}\n```\nApprove, narrow (exclude hosts, security only) or reject."
        )
        try:
            answer = pause_flow_run(
                wait_for_input=PatchApproval.with_initial_data(
                    description=description, security_only=sec_only
                ),
                timeout=int(policy.approval_timeout_s),
                poll_interval=2,
            )
        except Exception as exc:  # not answered in time (or an invalid answer): nothing applied
            report.failures.append(
                Failure(entity="patch apply", reason=f"no approval: {type(exc).__name__}: {exc}")
            )
            return publish_report(report, ctx)
        if not answer.approve:
            report.approval = f"rejected{': ' + answer.note if answer.note else ''}"
            report.skipped.append("apply: rejected by the operator")
            return publish_report(report, ctx)
        narrowed = bool(answer.exclude_hosts) or answer.security_only != sec_only
        report.approval = (
            "approved"
            + (" (narrowed)" if narrowed else "")
            + (f": {answer.note}" if answer.note else "")
        )
        sec_only = answer.security_only
        rollout = build(sec_only, set(answer.exclude_hosts))
        for name in answer.exclude_hosts:
            report.skipped.append(f"{name}: excluded at approval")
    log.info("rollout:\n%s", rollout.describe())
    wait = ctx.config.platform.maintenance_wait_minutes
    try:  # never while backups run (one maintenance slot per lab)
        with maintenance_slot(ctx.config.lab.name, wait, "patch apply", log):
            _execute(ctx, report, rollout, by_name, rows, inv_hosts, snap, sec_only)
    except SlotBusy as exc:
        report.failures.append(Failure(entity="patch apply", reason=str(exc)))
    return publish_report(report, ctx)


def _simulate(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
    inv_hosts: list[Host],
) -> None:
    from tasks.ssh import run_batch

    rows = {h.host: h for h in report.hosts}
    jobs = [
        HostCommand(
            access=_access(by_name[h.name], inv_hosts),
            command=plan.simulate_command(rows[h.name].package_manager),
            timeout_s=ctx.config.patching.check_timeout_s,
        )
        for h in rollout.hosts
    ]
    runs = run_batch(ctx.ssh_block(), jobs, ctx.config.patching.parallel)
    steps = {h.name: s for s in rollout.steps for h in s.hosts}
    for h, r in zip(rollout.hosts, runs, strict=True):
        s = steps[h.name]
        report.applied.append(
            HostApply(
                host=h.name,
                kind=h.kind,
                node=h.node,
                vmid=h.vmid,
                phase="canary" if s.phase == "canary" else "batch",
                batch=s.index,
                outcome="simulated" if r.state == "ok" else "failed",
                simulation=(r.result.stdout if r.result else None),
                held_back=h.held_back,
                detail=r.detail,
            )
        )
    report.approval = "dry run: nothing changed"


def _housekeep_snapshots(ctx: LabContext, report: PatchReport, current: str, dry_run: bool) -> None:
    """Delete snapshots whose keep time is over; report labops snapshots nobody planned for."""
    if not ctx.configured("proxmox"):
        return
    pve = ctx.pve_block()
    book = ctx.state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
    if not dry_run:
        for rec in book.due(datetime.now(UTC)):
            try:
                pve_tasks.delete_snapshot(pve, rec.node, rec.vmid, rec.name)
                book.drop(rec.vmid, rec.name)
                report.deleted_snapshots.append(f"{rec.host}: {rec.name}")
            except Exception as exc:
                report.skipped.append(f"snapshot {rec.name} of {rec.host} not deleted: {exc}")
        ctx.state.save(SNAPSHOT_BOOK, book)
    cts = [
        (h.host, h.node, h.vmid)
        for h in report.hosts
        if h.kind == "container" and h.node and h.vmid is not None and h.state != "skipped"
    ]
    found = pve_tasks.find_snapshots(pve, cts, "labops-patch-")  # type: ignore[arg-type]
    report.leftover_snapshots = plan.leftovers(found, book, current)


def _execute(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
    rows: dict[str, HostCheck],
    inv_hosts: list[Host],
    snap: str | None,
    sec_only: bool,
) -> None:
    log = get_run_logger()
    policy = ctx.config.patching
    rule = plan.StopRule(max_failures=policy.max_failures, max_fail_ratio=policy.max_fail_ratio)
    done = failed = 0
    book_changed: list[HostApply] = []
    for index, step in enumerate(rollout.steps):
        futures = []
        for h in step.hosts:
            row = rows[h.name]
            access = _access(by_name[h.name], inv_hosts)
            # Named upgrades leave excluded packages out; a dist-upgrade (always on nodes) holds
            # them for its duration, and the post-check makes sure they were unheld.
            full = not sec_only and not policy.exclusions.packages
            names = None if full else h.packages
            held = plan.upgrade_holds(h.kind, row.package_manager, names, h.hold)
            cmd = plan.upgrade_command(
                h.kind, row.package_manager, names, policy.lock_wait_s, hold=h.hold
            )
            futures.append(
                patch_host.with_options(name=f"patch-host {h.name}").submit(
                    ctx.config_file,
                    step,
                    h.model_copy(update={"hold": held}),
                    access,
                    row.package_manager,
                    snap if h.kind == "container" else None,
                    cmd,
                )
            )
        wait(futures)
        canary_failed = False
        for h, fut in zip(step.hosts, futures, strict=True):
            try:
                r: HostApply = fut.result()
            except Exception as exc:
                r = HostApply(
                    host=h.name,
                    kind=h.kind,
                    node=h.node,
                    vmid=h.vmid,
                    outcome="failed",
                    detail=f"{type(exc).__name__}: {exc}",
                    held_back=h.held_back,
                )
            report.applied.append(r)
            done += 1
            if r.outcome in ("failed", "rolled-back"):
                failed += 1
                canary_failed |= step.phase == "canary"
                report.failures.append(Failure(entity=f"host {r.host}", reason=r.detail))
            elif r.outcome == "patched":
                book_changed.append(r)
                _maybe_reboot(ctx, report, r, rows[h.name], by_name, inv_hosts)
        verdict = rule.verdict(failed, done, canary_failed)
        if verdict:
            report.stopped = f"after {step.phase} {step.index}: {verdict}"
            log.warning("rollout stopped: %s", report.stopped)
            for later in rollout.steps[index + 1 :]:
                for h in later.hosts:
                    report.applied.append(
                        HostApply(
                            host=h.name,
                            kind=h.kind,
                            node=h.node,
                            vmid=h.vmid,
                            phase="canary" if later.phase == "canary" else "batch",
                            batch=later.index,
                            outcome="not-run",
                            detail="rollout stopped",
                        )
                    )
            break
    _settle_snapshots(ctx, report, book_changed)


def _maybe_reboot(
    ctx: LabContext,
    report: PatchReport,
    r: HostApply,
    row: HostCheck,
    by_name: dict[str, plan.Target],
    inv_hosts: list[Host],
) -> None:
    if ctx.config.patching.reboot == "never":
        return
    access = _access(by_name[r.host], inv_hosts)
    after = check_hosts(ctx.ssh_block(), [access], CheckOptions(), 1)[0]
    facts = after.facts
    if facts is None:
        return
    needs = facts.reboot_required
    if r.kind == "node" and facts.needrestart is not None:
        needs = needs or facts.needrestart.reboot_advised
    if not needs:
        return
    try:
        if r.kind == "node":
            why = reboot_node(ctx, r, access)
            if why:
                report.failures.append(Failure(entity=f"node {r.host}", reason=why))
        elif r.kind == "container":
            reboot_container(ctx, r)
    except Exception as exc:
        report.failures.append(Failure(entity=f"host {r.host}", reason=f"reboot: {exc}"))
    r.finished = datetime.now(UTC)  # the host's turn ends when it is back


def _settle_snapshots(ctx: LabContext, report: PatchReport, patched: list[HostApply]) -> None:
    """Healthy hosts' snapshots: deleted now (keep time 0) or booked for later deletion.
    Rolled-back hosts keep theirs (the operator looks at them), reported as kept."""
    if not ctx.configured("proxmox"):
        return
    policy = ctx.config.patching
    book = ctx.state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
    keep = timedelta(hours=policy.delete_snapshots_after_h)
    for r in report.applied:
        if not r.snapshot or r.vmid is None or r.node is None:
            continue
        if r in patched and keep.total_seconds() == 0:
            try:
                pve_tasks.delete_snapshot(ctx.pve_block(), r.node, r.vmid, r.snapshot)
                book.drop(r.vmid, r.snapshot)
                report.deleted_snapshots.append(f"{r.host}: {r.snapshot}")
            except Exception as exc:
                report.skipped.append(f"snapshot {r.snapshot} of {r.host} not deleted: {exc}")
                r.snapshot_kept = True
            continue
        now = datetime.now(UTC)
        status = "keep-until" if r in patched else "rolled-back"
        book.upsert(
            plan.SnapshotRecord(
                host=r.host,
                node=r.node,
                vmid=r.vmid,
                name=r.snapshot,
                created=now,
                status=status,  # type: ignore[arg-type]
                delete_after=now + keep if r in patched else None,
            )
        )
        r.snapshot_kept = True
    ctx.state.save(SNAPSHOT_BOOK, book)
