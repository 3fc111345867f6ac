"""What a restore drill leaves for the next one: its result, remembered per guest (the next
drill picks the guest drilled longest ago)."""

from __future__ import annotations

from labops.backups.drill_proof import remembered_rtos
from labops.backups.models import BackupGuest
from labops.backups.report import DrillHistory, DrillResult, RestoreDrillReport

RTOS_KEPT = 20  # recent recovery times kept per guest (the baseline takes the last few)


def remember(
    history: DrillHistory, report: RestoreDrillReport, guest: BackupGuest, volid: str, when: float
) -> DrillHistory:
    """``history`` with this drill of ``guest`` as its last one (and, when it passed, its
    recovery time among the guest's recent ones)."""
    history.last[guest.vmid] = DrillResult(
        vmid=guest.vmid,
        name=guest.name,
        ok=report.ok,
        when=when,
        duration_s=report.duration_s,
        volid=volid,
        reason="; ".join(f.reason for f in report.failures),
        times=report.times,
    )
    if report.ok and report.times.rto_s:
        past = history.rtos.get(guest.vmid, [])
        history.rtos[guest.vmid] = remembered_rtos(past, report.times.rto_s, RTOS_KEPT)
    return history
