"""Backups: every selected guest gets a recovery point inside its RPO, verified and audited.

Runbook: discover guests, nodes and existing backups -> plan each guest (skip when its last good
backup is inside its window: this is what makes re-runs and retries safe) -> run one vzdump per
guest, at most N per node and M per storage (Prefect concurrency limits) -> confirm each new
backup on its storage -> audit verification, coverage, retention and PBS maintenance -> report.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from itertools import groupby

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.context import LabContext
from labops.backups.audit import guest_rows, orphans, templates_without_backup, unreadable_storages
from labops.backups.limits import lanes
from labops.backups.models import BackupOutcome, GuestPlan, PlanAction
from labops.backups.plan import default_storage, plan_backups
from labops.backups.report import BackupReport, GuestStatus
from labops.backups.retention import retention_dry_run
from labops.config.policies.backups import BackupPolicy
from labops.errors import ConfigError, LabopsError
from labops.flow_params import ConfigPath, VmidList
from labops.limits import SlotBusy, ensure_limit, limit_name, maintenance_slot
from labops.outcome import UnknownSince
from labops.reports import Failure
from tasks.pbs import maintenance_checks
from tasks.publish import publish_report
from tasks.pve import (
    VzdumpSettings,
    backup_guest,
    guests_without_job,
    list_guests,
    list_nodes,
    scan_backups,
)

MAX_LANES = 16
UNKNOWN_SINCE_KEY = "backups-unknown-since"


def slot(kind: str, key: str, policy: BackupPolicy, lab: str) -> str:
    """The concurrency-limit name of a node or storage of this lab, in the policy's scope."""
    return limit_name(kind, key, lab=lab, scope=policy.limits_scope)


def run_lanes(
    plan_lanes: list[list[GuestPlan]],
    submit: Callable[[GuestPlan], PrefectFuture[BackupOutcome]],
    hold: Callable[[list[str]], AbstractContextManager[object]],
    slot_of: Callable[[str, str], str],
) -> dict[int, BackupOutcome]:
    """Run each lane's backups one after another, all lanes at once.

    A lane takes its node's and its storage's concurrency slots together (one ``hold``) and
    keeps them over all its guests of that storage. Taking slots per guest instead costs a
    Prefect API round trip each time, measured at ~2 s against a SQLite-backed server busy
    recording task events, which would double a nightly run. Slots are leases: a killed flow
    frees them when the lease ends; a crashed task frees nothing, its lane goes on. A lane
    holds one (node, storage) pair at a time, so lanes never wait on each other in a cycle.
    """
    outcomes: dict[int, BackupOutcome] = {}
    guard = threading.Lock()

    def record(plan: GuestPlan, outcome: BackupOutcome) -> None:
        with guard:
            outcomes[plan.guest.vmid] = outcome

    def run(lane: list[GuestPlan]) -> None:
        try:
            for storage, group in groupby(lane, key=lambda p: p.policy.storage if p.policy else ""):
                with hold([slot_of("node", lane[0].guest.node), slot_of("storage", storage)]):
                    for plan in group:
                        result = submit(plan).result(raise_on_failure=False)
                        if not isinstance(result, BackupOutcome):
                            result = BackupOutcome(
                                vmid=plan.guest.vmid,
                                status="failed",
                                reason=f"backup task crashed: {result}",
                            )
                        record(plan, result)
        except Exception as exc:  # no slot in time, or the Prefect API gone
            for plan in lane:
                if plan.guest.vmid not in outcomes:
                    record(
                        plan,
                        BackupOutcome(
                            vmid=plan.guest.vmid,
                            status="failed",
                            reason=f"not run: {type(exc).__name__}: {exc}",
                        ),
                    )

    # Each thread runs in a copy of the flow's context, so its task submissions belong to it.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run, lane), daemon=True)
        for lane in plan_lanes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def settings_for(plan: GuestPlan, policy: BackupPolicy, listed_at: float) -> VzdumpSettings:
    assert plan.policy is not None
    return VzdumpSettings(
        storage=plan.policy.storage,
        mode=plan.policy.mode,
        compress=policy.compress,
        notes_template=policy.notes_template or None,
        protected=policy.protected,
        task_timeout_s=policy.task_timeout,
        poll_s=policy.poll_interval,
        lock_wait_s=policy.lock_wait,
        lock_retry_s=policy.lock_retry,
        listed_at=listed_at,
        start_attempts=policy.start_attempts,
        lost_answer_wait_s=policy.lost_answer_wait,
    )


@flow(
    name="backups",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_LANES),  # type: ignore[arg-type]
    log_prints=False,
)
def backups(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    vmids: VmidList | None = None,
) -> BackupReport | State:
    """Back up every selected guest whose last good backup is older than its tier allows, then
    audit all recovery points.

    Guests with a good backup inside their window are skipped, so a re-run (or a retry after a
    crash) never backs a guest up twice. Fails when any guest's backup failed.

    Args:
        config: Path of the labops config (default: LABOPS_CONFIG or ./labops.yaml).
        dry_run: Show which guests would be backed up and why; change nothing.
        vmids: Limit this run to these guests (on top of the policy's selection).
    """
    log = get_run_logger()
    ctx = LabContext.load(config)
    lab = ctx.config.lab.name
    report = BackupReport(dry_run=dry_run, lab=lab)
    policy = ctx.config.backups
    if vmids:
        wanted = (
            sorted(set(vmids) | set(policy.selection.vmids))
            if policy.selection.vmids
            else sorted(set(vmids))
        )
        policy = policy.model_copy(
            update={"selection": policy.selection.model_copy(update={"vmids": wanted})}
        )
    report.skipped += ctx.skipped("proxmox", "pbs")
    if not ctx.configured("proxmox"):
        return publish_report(report, ctx.delivery())
    block = ctx.pve_block()
    try:
        storage = default_storage(policy, ctx.config.systems.pbs)
    except ConfigError as exc:
        report.failures.append(Failure(entity="config", reason=str(exc)))
        return publish_report(report, ctx.delivery())

    # -- discover ------------------------------------------------------------------------------
    nodes = list_nodes(block)
    online = sorted(n.node for n in nodes if n.online)
    report.offline_nodes = sorted(n.node for n in nodes if not n.online)
    guests = list_guests(block)
    storages = sorted(
        {storage, *policy.scan_storages}
        | {t.storage for t in policy.tiers.values() if t.storage}
        | {o.storage for o in policy.guests.values() if o.storage}
    )
    listed_at = time.time()
    copies, problems = scan_backups(block, storages, online)
    report.failures += problems
    unlisted = problems

    # -- plan ----------------------------------------------------------------------------------
    plans = plan_backups(guests, copies, policy, storage, listed_at, report.offline_nodes)
    todo = [p for p in plans if p.action is PlanAction.BACKUP]
    log.info(
        "%d guests: %d to back up, %d fresh, %d excluded, %d on offline nodes",
        len(plans),
        len(todo),
        sum(p.action is PlanAction.SKIP for p in plans),
        sum(p.action is PlanAction.EXCLUDED for p in plans),
        sum(p.action is PlanAction.NODE_OFFLINE for p in plans),
    )

    # -- act -----------------------------------------------------------------------------------
    outcomes: dict[int, BackupOutcome] = {}
    if todo and not dry_run:
        for node in {p.guest.node for p in todo}:
            ensure_limit(slot("node", node, policy, lab), policy.per_node_limit)
        for st in {p.policy.storage for p in todo if p.policy}:
            ensure_limit(slot("storage", st, policy, lab), policy.per_storage_limit)

        slot_wait = policy.slot_wait or policy.task_timeout

        def submit(plan: GuestPlan) -> PrefectFuture[BackupOutcome]:
            return backup_guest.submit(block, plan.guest, settings_for(plan, policy, listed_at))

        def hold(names: list[str]) -> AbstractContextManager[object]:
            return concurrency(
                names,
                occupy=1,
                strict=True,
                lease_duration=max(60.0, policy.lease),
                timeout_seconds=slot_wait,
            )

        def slot_of(kind: str, key: str) -> str:
            return slot(kind, key, policy, lab)

        wait = ctx.config.platform.maintenance_wait_minutes
        try:  # never while patch apply changes the lab (one maintenance slot per lab)
            with maintenance_slot(ctx.config.lab.name, wait, "backups", log):
                outcomes = run_lanes(lanes(todo, policy.per_node_limit), submit, hold, slot_of)
        except SlotBusy as exc:  # each guest's row says why it was not backed up
            outcomes = {
                p.guest.vmid: BackupOutcome(vmid=p.guest.vmid, status="failed", reason=str(exc))
                for p in todo
            }
        report.vzdump_started = sum(o.attempts > 0 and not o.adopted for o in outcomes.values())
        copies, unlisted = scan_backups(block, storages, online)
        named = {f.entity for f in report.failures}
        report.failures += [f for f in unlisted if f.entity not in named]

    # -- verify and audit ----------------------------------------------------------------------
    now = time.time()
    unreadable = unreadable_storages(((f.entity, f.reason) for f in unlisted), storages)
    report.guests = guest_rows(plans, outcomes, copies, policy, now, dry_run, unreadable)
    # "could not check since": the first run in a row that could not list a guest's backups
    book = ctx.state.load(UNKNOWN_SINCE_KEY, UnknownSince) or UnknownSince()
    ctx.state.save(UNKNOWN_SINCE_KEY, report.date_unknown(book))
    for row in report.rows(GuestStatus.FAILED):
        report.failures.append(Failure(entity=row.label, reason=row.reason, system="proxmox"))
    for node in report.offline_nodes:
        missed = [
            r for r in report.guests if r.node == node and r.status is GuestStatus.NOT_BACKED_UP
        ]
        if missed:
            names = ", ".join(f"{r.vmid} ({r.name})" for r in missed)
            report.failures.append(
                Failure(
                    entity=f"node {node}",
                    system="proxmox",
                    reason=f"offline: {len(missed)} guest(s) not backed up: {names}",
                )
            )
        else:
            report.warnings.append(f"node {node} is offline (its guests' backups are fresh)")
    watched = {r.vmid for r in report.guests if r.watched}
    try:
        report.not_in_job = [
            f"guest {g.vmid} ({g.name})" if g.name else f"guest {g.vmid}"
            for g in guests_without_job(block)
            if g.vmid in watched
        ]
    except LabopsError as exc:  # could not check: a failure, never "every guest in a job"
        report.failures.append(
            Failure(entity="backup jobs", reason=f"not-backed-up list unreadable: {exc}")
        )
    report.orphans = orphans(copies, [g.vmid for g in guests])
    report.templates_unprotected = templates_without_backup(report.guests)
    report.retention_options = policy.retention.options()
    report.retention = retention_dry_run(copies, policy.retention)
    if ctx.configured("pbs"):
        try:
            report.pbs_jobs = maintenance_checks(ctx.pbs_block(), policy.pbs_jobs)
        except LabopsError as exc:  # could not check: a failure, not a note
            report.failures.append(
                Failure(entity="PBS maintenance", reason=f"state unreadable: {exc}", system="pbs")
            )
    return publish_report(report, ctx.delivery())
