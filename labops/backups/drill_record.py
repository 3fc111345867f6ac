"""What a restore drill leaves for the next one: its result, remembered per guest (the next
drill picks the guest drilled longest ago)."""

from __future__ import annotations

from labops.backups.models import BackupGuest
from labops.backups.report import DrillHistory, DrillResult, RestoreDrillReport


def remember(
    history: DrillHistory, report: RestoreDrillReport, guest: BackupGuest, volid: str, when: float
) -> DrillHistory:
    """``history`` with this drill of ``guest`` as its last one."""
    history.last[guest.vmid] = DrillResult(
        vmid=guest.vmid,
        name=guest.name,
        ok=report.ok,
        when=when,
        duration_s=report.duration_s,
        volid=volid,
        reason="; ".join(f.reason for f in report.failures),
    )
    return history
