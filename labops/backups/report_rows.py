"""The backups report's judgement rows: what of the guest rows counts as a failure or a warning,
and how coverage gaps read (the flow only gathers; this says what it means)."""

from __future__ import annotations

from collections.abc import Iterable

from labops.backups.report import BackupReport, GuestStatus
from labops.models.pve import PveGuestRef
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
