"""The backups report's judgement rows: what of the guest rows counts as a failure or a warning,
and how coverage gaps read (the flow only gathers; this says what it means)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from labops.backups.models import BackupGuest
from labops.backups.report import BackupReport, GuestStatus
from labops.models.pve import PveBackupJob, PveGuestRef
from labops.reports import Failure


def judge_rows(report: BackupReport) -> None:
    """A failure for each guest whose backup failed and for each offline node that kept guests
    from being backed up; a warning for an offline node whose guests are fresh anyway."""
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


def not_in_job(refs: Iterable[PveGuestRef], report: BackupReport) -> list[str]:
    """The watched guests of ``report`` that no scheduled backup job covers, as report text."""
    watched = {r.vmid for r in report.guests if r.watched}
    return [
        f"guest {g.vmid} ({g.name})" if g.name else f"guest {g.vmid}"
        for g in refs
        if g.vmid in watched
    ]


def job_includes(job: PveBackupJob, guest: BackupGuest) -> bool:
    """Whether PVE's backup job ``job`` selects ``guest`` (vzdump's own selection: ``all``
    minus ``exclude``, a pool's members, or a vmid list; a ``node`` limits it to that node's
    guests)."""
    if job.node and job.node != guest.node:
        return False
    if job.all:
        excluded = {v.strip() for v in (job.exclude or "").split(",")}
        return str(guest.vmid) not in excluded
    if job.pool:
        return guest.pool == job.pool
    return str(guest.vmid) in {v.strip() for v in (job.vmid or "").split(",")}


def job_gaps(
    guests: Iterable[BackupGuest],
    jobs: Sequence[PveBackupJob],
    storages: Sequence[str],
    watched: Iterable[int],
) -> list[str]:
    """Watched guests that some backup job names (PVE's not-backed-up list leaves them out) but
    none that runs and writes where their backups count (``storages``): only in disabled jobs,
    or only in jobs writing elsewhere (a ``local`` copy is no recovery point the audit reads)."""
    wanted = set(watched)
    out: list[str] = []
    for g in sorted(guests, key=lambda g: g.vmid):
        named = [j for j in jobs if g.vmid in wanted and job_includes(j, g)]
        if not named:
            continue  # in no job: PVE's own list says so
        enabled = [j for j in named if j.enabled]
        if not enabled:
            ids = ", ".join(j.id for j in named)
            out.append(f"{g.label} is only in disabled backup job(s): {ids}")
        elif not [j for j in enabled if j.storage in storages]:
            ids = ", ".join(f"{j.id} (to {j.storage or '?'})" for j in enabled)
            out.append(
                f"{g.label}: its backup job(s) {ids} write where its backups do not count "
                f"({', '.join(storages)})"
            )
    return out
