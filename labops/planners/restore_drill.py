"""Restore drill decisions, pure: which guest to drill (given, or the one tested longest ago),
which backup to restore, and which scratch vmid to use (never one that exists)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from labops.config.policies.backups import BackupPolicy
from labops.models.backups import BackupCopy, BackupGuest
from labops.planners.backups import by_vmid, exclusion_reason, last_good
from labops.reports_backups import DrillHistory


class DrillChoice(BaseModel):
    guest: BackupGuest
    backup: BackupCopy
    reason: str


class DrillRefused(Exception):
    """The drill cannot run as asked; the message says why (shown as the report's failure)."""


def choose_guest(
    guests: Sequence[BackupGuest],
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    history: DrillHistory,
    vmid: int | None = None,
    usable_nodes: Iterable[str] | None = None,
) -> DrillChoice:
    """The guest to drill and its newest good backup.

    Given ``vmid``: that guest (it must exist and have a good backup). Otherwise, among the
    guests the backup policy selects (or ``restore_drill.guests``) that have a good backup, the
    one never drilled, else the one drilled longest ago (ties: lowest vmid).
    """
    groups = by_vmid(copies)
    nodes = set(usable_nodes) if usable_nodes is not None else None
    if vmid is not None:
        guest = next((g for g in guests if g.vmid == vmid), None)
        if guest is None:
            raise DrillRefused(f"guest {vmid} does not exist")
        backup = last_good(groups.get(vmid, []))
        if backup is None:
            raise DrillRefused(f"{guest.label} has no good backup to restore")
        return DrillChoice(guest=guest, backup=backup, reason="asked for")
    wanted = set(policy.restore_drill.guests)
    candidates: list[tuple[float, int, BackupGuest, BackupCopy]] = []
    for guest in guests:
        if guest.template:
            continue
        if wanted and guest.vmid not in wanted:
            continue
        if not wanted and exclusion_reason(guest, policy.selection, policy) is not None:
            continue
        if nodes is not None and guest.node not in nodes:
            continue
        backup = last_good(groups.get(guest.vmid, []))
        if backup is None:
            continue
        last = history.last.get(guest.vmid)
        candidates.append((last.when if last else 0.0, guest.vmid, guest, backup))
    if not candidates:
        raise DrillRefused("no guest with a good backup to drill")
    when, _, guest, backup = min(candidates, key=lambda c: (c[0], c[1]))
    reason = "never drilled" if when == 0 else "drilled longest ago"
    return DrillChoice(guest=guest, backup=backup, reason=reason)


def choose_scratch_vmid(
    used: Iterable[int], low: int, high: int, requested: int | None = None
) -> int:
    """A vmid in [low, high] no guest uses; a requested one that exists is refused."""
    taken = set(used)
    if requested is not None:
        if requested in taken:
            raise DrillRefused(f"scratch vmid {requested} exists: refusing to touch it")
        return requested
    for vmid in range(low, high + 1):
        if vmid not in taken:
            return vmid
    raise DrillRefused(f"no free scratch vmid in {low}-{high}")
