"""Backups: every selected guest gets a recovery point inside its RPO, verified and audited.

Runbook: discover guests, nodes and existing backups -> plan each guest (skip when its last good
backup is inside its window: this is what makes re-runs and retries safe) -> run one vzdump per
guest, at most N per node and M per storage (Prefect concurrency limits) -> confirm each new
backup on its storage -> audit verification, coverage, retention, PBS maintenance and whether
PBS's verify and prune jobs reach each namespace the backups are in -> each guest's newest
off-site copy (PBS sync jobs, PVE storage replication) against its off-site RPO -> report.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.context import LabContext
from blocks.proxmox import ProxmoxCredentials
from labops.backups.archive import ArchiveMemory, audit_archive
from labops.backups.audit import guest_rows, orphans, templates_without_backup, unreadable_storages
from labops.backups.limits import Submit, Tell, not_run, run_backups
from labops.backups.models import BackupCopy, BackupGuest, BackupOutcome, GuestPlan, PlanAction
from labops.backups.namespaces import (
    PbsLocation,
    backup_namespaces,
    guest_locations,
    guest_places,
    pbs_locations,
    unknown_coverage,
)
from labops.backups.offsite import unchecked_rows
from labops.backups.plan import backup_storages, default_storage, plan_backups
from labops.backups.report import BackupReport
from labops.backups.report_rows import job_gaps, judge_rows, not_in_job
from labops.backups.retention import retention_dry_run
from labops.backups.vzdump_job import VzdumpSettings
from labops.config.policies.backups import BackupPolicy
from labops.errors import ConfigError, LabopsError
from labops.flow_params import ConfigPath, VmidList
from labops.limits import SlotBusy, maintenance_slot
from labops.outcome import UnknownSince
from labops.reports import Failure
from tasks.pbs import maintenance_checks, namespace_checks, offsite_checks
from tasks.progress import Progress
from tasks.publish import publish_report
from tasks.pve import (
    backup_guests,
    backup_jobs,
    guests_without_job,
    list_guests,
    list_nodes,
    replication_checks,
    scan_backups,
    storage_configs,
)

MAX_LANES = 16
UNKNOWN_SINCE_KEY = "backups-unknown-since"
ARCHIVE_KEY = "backups-archived"
OFFSITE_UNKNOWN_SINCE_KEY = "backups-offsite-unknown-since"


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
    ctx = LabContext.load(config)
    lab = ctx.config.lab.name
    report = BackupReport(dry_run=dry_run, lab=lab)
    policy = _narrowed(ctx.config.backups, vmids)
    report.skipped += ctx.skipped("proxmox", "pbs")
    if not ctx.configured("proxmox"):
        return publish_report(report, ctx.delivery())
    block = ctx.pve_block()
    try:
        storage = default_storage(policy, ctx.config.systems.pbs)
    except ConfigError as exc:
        report.failures.append(Failure(entity="config", reason=str(exc)))
        return publish_report(report, ctx.delivery())

    # 1. discover: nodes, guests and the backups on every storage the policy names
    nodes = list_nodes(block)
    online = sorted(n.node for n in nodes if n.online)
    report.offline_nodes = sorted(n.node for n in nodes if not n.online)
    guests = list_guests(block)
    storages = backup_storages(policy, storage)
    listed_at = time.time()
    copies, unlisted = scan_backups(block, storages, online)
    report.failures += unlisted

    # 2. plan: a guest whose last good backup is inside its window is skipped (safe re-runs)
    plans = plan_backups(guests, copies, policy, storage, listed_at, report.offline_nodes)
    todo = [p for p in plans if p.action is PlanAction.BACKUP]
    _log_plan(plans, todo)

    # 3. back up, within the node and storage limits, never while patch apply runs
    outcomes: dict[int, BackupOutcome] = {}
    if todo and not dry_run:
        done = Progress(lab, "backups", len(todo), "guests")  # in the UI and the log
        wait = ctx.config.platform.maintenance_wait_minutes
        try:
            with maintenance_slot(lab, wait, "backups", get_run_logger()):
                outcomes = run_backups(todo, policy, lab, listed_at, _submitter(block), done.saw)
        except SlotBusy as exc:  # each guest's row says why it was not backed up
            outcomes = not_run(todo, str(exc))
            done.advance(len(todo), note="not run: the maintenance slot is busy")
        report.vzdump_started = sum(o.attempts > 0 and not o.adopted for o in outcomes.values())
        # 4. confirm: list the storages again
        copies, unlisted = scan_backups(block, storages, online)
        named = {f.entity for f in report.failures}
        report.failures += [f for f in unlisted if f.entity not in named]

    # 5. verify and audit: one row per guest, coverage, retention, PBS maintenance
    unreadable = unreadable_storages(((f.entity, f.reason) for f in unlisted), storages)
    report.guests = guest_rows(plans, outcomes, copies, policy, time.time(), dry_run, unreadable)
    # "could not check since": the first run in a row that could not list a guest's backups
    book = ctx.state.load(UNKNOWN_SINCE_KEY, UnknownSince) or UnknownSince()
    ctx.state.save(UNKNOWN_SINCE_KEY, report.date_unknown(book))
    judge_rows(report)
    _audit(ctx, report, block, policy, guests, copies, storages)
    locations = _namespaces(ctx, report, block, storages, copies)

    # 6. off-site copies: each watched guest's newest copy on each target the sync jobs feed,
    # and its PVE storage replication jobs' last syncs
    if policy.offsite is not None:
        watched = {r.vmid for r in report.guests if r.watched}
        where = guest_places(copies, locations)
        _offsite(ctx, report, block, [g for g in guests if g.vmid in watched], policy, where)
    return publish_report(report, ctx.delivery())


def _narrowed(policy: BackupPolicy, vmids: list[int] | None) -> BackupPolicy:
    """The policy, its selection narrowed to ``vmids`` (added to the policy's own vmids)."""
    if not vmids:
        return policy
    wanted = sorted(set(vmids) | set(policy.selection.vmids))
    return policy.model_copy(
        update={"selection": policy.selection.model_copy(update={"vmids": wanted})}
    )


def _log_plan(plans: list[GuestPlan], todo: list[GuestPlan]) -> None:
    get_run_logger().info(
        "%d guests: %d to back up, %d fresh, %d excluded, %d on offline nodes",
        len(plans),
        len(todo),
        sum(p.action is PlanAction.SKIP for p in plans),
        sum(p.action is PlanAction.EXCLUDED for p in plans),
        sum(p.action is PlanAction.NODE_OFFLINE for p in plans),
    )


def _submitter(block: ProxmoxCredentials) -> Submit:
    """Submit one task that backs up a lane's guests of one storage (the runner waits for it
    inside the lane's slots)."""

    def submit(
        jobs: list[tuple[GuestPlan, VzdumpSettings]], tell: Tell
    ) -> PrefectFuture[list[BackupOutcome]]:
        first = jobs[0][1]
        return backup_guests.submit(
            block, jobs[0][0].guest.node, first.storage, [(p.guest, s) for p, s in jobs], tell
        )

    return submit


def _audit(
    ctx: LabContext,
    report: BackupReport,
    block: ProxmoxCredentials,
    policy: BackupPolicy,
    guests: list[BackupGuest],
    copies: list[BackupCopy],
    storages: list[str],
) -> None:
    """Coverage (guests in no job, or in no enabled job writing where their backups count;
    orphans, templates), retention and PBS maintenance."""
    try:
        report.not_in_job = not_in_job(guests_without_job(block), report)
    except LabopsError as exc:  # could not check: a failure, never "every guest in a job"
        report.failures.append(
            Failure(entity="backup jobs", reason=f"not-backed-up list unreadable: {exc}")
        )
    try:
        watched = [r.vmid for r in report.guests if r.watched]
        report.job_gaps = job_gaps(guests, backup_jobs(block), storages, watched)
    except LabopsError as exc:  # could not check: a failure, never "every job writes there"
        report.failures.append(
            Failure(entity="backup jobs", reason=f"job list unreadable: {exc}", system="proxmox")
        )
    # backups of deleted guests: kept on purpose (protected, or listed) or a coverage gap
    seen = ctx.state.load(ARCHIVE_KEY, ArchiveMemory)
    archive = audit_archive(
        orphans(copies, [g.vmid for g in guests]), policy.archived, datetime.now(UTC).date(), seen
    )
    report.orphans, report.archived = archive.orphans, archive.archived
    report.archive_changes = archive.changes
    if not report.dry_run:  # a dry run changes nothing, not even the memory of the archive
        ctx.state.save(ARCHIVE_KEY, archive.memory)
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


def _namespaces(
    ctx: LabContext,
    report: BackupReport,
    block: ProxmoxCredentials,
    storages: list[str],
    copies: list[BackupCopy],
) -> dict[str, PbsLocation]:
    """Where each guest's backups are (PBS storages by datastore and namespace, from PVE's
    storage configs) and whether PBS's verify and prune jobs reach each namespace holding them.
    Configs or jobs that cannot be read leave the coverage unknown, never fine. Returns the PBS
    storages' locations (none when the configs could not be read)."""
    try:
        locations = pbs_locations(storage_configs(block))
    except LabopsError as exc:
        if ctx.configured("pbs"):
            datastore = ctx.pbs_block().settings.datastore
            reason = f"PVE storage configs unreadable: {exc}"
            report.namespaces = unknown_coverage(storages, reason, datastore)
        locations = {}
    where = guest_locations(copies, locations)
    for row in report.guests:
        row.locations = where.get(row.vmid, [])
    if locations and ctx.configured("pbs"):
        namespaces = backup_namespaces(storages, locations)
        if namespaces:
            report.namespaces = namespace_checks(ctx.pbs_block(), namespaces)
    return locations


def _offsite(
    ctx: LabContext,
    report: BackupReport,
    block: ProxmoxCredentials,
    guests: list[BackupGuest],
    policy: BackupPolicy,
    where: dict[int, list[str]],
) -> None:
    """Off-site rows per guest and target (PBS sync copies when PBS is configured: a sync job
    must read the namespace the guest's backups are in; PVE storage replication unless turned
    off); could not check is dated from its first run."""
    assert policy.offsite is not None
    if ctx.configured("pbs"):
        try:
            far = ctx.pbs_offsite_block() if ctx.configured("pbs_offsite") else None
            report.offsite = offsite_checks(ctx.pbs_block(), guests, policy.offsite, where, far)
        except LabopsError as exc:  # could not check: unknown rows, never "every copy fresh"
            report.offsite = unchecked_rows(guests, policy.offsite, f"PBS unreadable: {exc}")
    if policy.offsite.replication:
        try:
            report.offsite += replication_checks(block, guests, policy.offsite)
        except LabopsError as exc:  # which guests replicate is unknown: the run cannot be clean
            report.failures.append(
                Failure(
                    entity="replication jobs",
                    reason=f"PVE storage replication unreadable: {exc}",
                    system="proxmox",
                )
            )
    book = ctx.state.load(OFFSITE_UNKNOWN_SINCE_KEY, UnknownSince) or UnknownSince()
    ctx.state.save(OFFSITE_UNKNOWN_SINCE_KEY, report.date_offsite_unknown(book))
