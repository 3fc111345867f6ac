"""Backup decisions, pure: which guests are selected, which policy each gets, whether each needs a
backup now (and why). Node lanes are in :mod:`labops.backups.limits`, retention in
:mod:`labops.backups.retention`, the checks after the run in :mod:`labops.backups.audit`.

Times are epoch seconds; ``now`` is always passed in so that every decision is reproducible.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

from labops.backups.models import (
    BackupCopy,
    BackupGuest,
    GuestPlan,
    GuestPolicy,
    PlanAction,
)
from labops.config.policies.backups import BackupPolicy, Selection
from labops.config.systems import PbsSystem
from labops.errors import ConfigError

_TAG_SPLIT = re.compile(r"[;, ]+")


def parse_tags(value: str | Sequence[str] | None) -> list[str]:
    """PVE tags come ``;``-joined (``"infra;rpo-7d"``); input may use ``,``, ``;`` or spaces."""
    if value is None:
        return []
    items = _TAG_SPLIT.split(value) if isinstance(value, str) else list(value)
    return [t.strip().lower() for t in items if t and t.strip()]


def human_age(seconds: float | None) -> str:
    """``3h12m``, ``2d4h``, ``45s``: short enough for a table cell."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# --- selection and policy -------------------------------------------------------------------


def exclusion_reason(guest: BackupGuest, selection: Selection, policy: BackupPolicy) -> str | None:
    """Why ``guest`` is not selected, or None when it is."""
    override = policy.guests.get(guest.vmid)
    if override is not None and override.exclude:
        return f"excluded by backups.guests.{guest.vmid}.exclude"
    if guest.vmid in selection.exclude_vmids:
        return "excluded by vmid (selection.exclude_vmids)"
    excluded_tags = sorted(set(guest.tags) & {t.lower() for t in selection.exclude_tags})
    if excluded_tags:
        return f"excluded by tag {', '.join(excluded_tags)}"
    if selection.vmids and guest.vmid not in selection.vmids:
        return "not in selection.vmids"
    if selection.nodes and guest.node not in selection.nodes:
        return f"node {guest.node} not in selection.nodes"
    if selection.pools and guest.pool not in selection.pools:
        return f"pool {guest.pool or '(none)'} not in selection.pools"
    if selection.tags and not set(guest.tags) & {t.lower() for t in selection.tags}:
        return "no tag of selection.tags"
    return None


def policy_for(guest: BackupGuest, policy: BackupPolicy, default_storage: str) -> GuestPolicy:
    """The tier, RPO, storage and mode of one guest: override > tag > default tier."""
    override = policy.guests.get(guest.vmid)
    tier_name = override.tier if override is not None and override.tier else None
    if tier_name is None:
        tags = set(guest.tags)
        tier_name = next(
            (tier for tag, tier in policy.tier_tags.items() if tag.lower() in tags),
            policy.default_tier,
        )
    tier = policy.tiers[tier_name]
    storage = (
        (override.storage if override is not None else None)
        or tier.storage
        or policy.storage
        or default_storage
    )
    mode = (override.mode if override is not None else None) or tier.mode or policy.mode
    return GuestPolicy(
        tier=tier_name,
        rpo_s=tier.rpo,
        refresh_after_s=tier.refresh_after_s,
        storage=storage,
        mode=mode,
    )


def default_storage(policy: BackupPolicy, pbs: PbsSystem | None) -> str:
    """``backups.storage``, else the PVE storage that points at the configured PBS."""
    storage = policy.storage or (pbs.pve_storage if pbs else None)
    if not storage:
        raise ConfigError(
            "backups.storage: not set, and systems.pbs.pve_storage does not name one either"
        )
    return storage


def backup_storages(policy: BackupPolicy, storage: str) -> list[str]:
    """Every storage whose backups count: the default, the scanned ones, tiers' and guests'
    (a PBS storage is one datastore and namespace: a guest written to a namespace is found
    only through the storage whose config names it)."""
    return sorted(
        {storage, *policy.scan_storages}
        | {t.storage for t in policy.tiers.values() if t.storage}
        | {o.storage for o in policy.guests.values() if o.storage}
    )


# --- recovery points ------------------------------------------------------------------------


def by_vmid(copies: Iterable[BackupCopy]) -> dict[int, list[BackupCopy]]:
    """Backups grouped by guest, oldest first."""
    groups: dict[int, list[BackupCopy]] = defaultdict(list)
    for copy in copies:
        groups[copy.vmid].append(copy)
    for items in groups.values():
        items.sort(key=lambda c: (c.ctime, c.volid))
    return dict(groups)


def last_good(copies: Sequence[BackupCopy]) -> BackupCopy | None:
    """The newest backup with data that did not fail verification."""
    good = [c for c in copies if c.good]
    return max(good, key=lambda c: (c.ctime, c.volid)) if good else None


def plan_guest(
    guest: BackupGuest,
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    default_storage: str,
    now: float,
    offline_nodes: frozenset[str] = frozenset(),
) -> GuestPlan:
    """Decide backup/skip for one guest, with the reason an operator reads in a dry run."""
    best = last_good(copies)
    age = now - best.ctime if best is not None else None
    if guest.template and not policy.selection.templates:
        return GuestPlan(
            guest=guest,
            action=PlanAction.TEMPLATE,
            last_good=best,
            age_s=age,
            reason="template: not backed up (selection.templates is off); checked for coverage",
        )
    excluded = exclusion_reason(guest, policy.selection, policy)
    if excluded is not None:
        return GuestPlan(
            guest=guest, action=PlanAction.EXCLUDED, reason=excluded, last_good=best, age_s=age
        )
    gp = policy_for(guest, policy, default_storage)
    window = human_age(gp.refresh_after_s)
    if best is None:
        failed = [c for c in copies if c.verify_state == "failed"]
        why = "no good backup yet" + (f" ({len(failed)} failed verification)" if failed else "")
        action = PlanAction.BACKUP
    elif age is not None and age >= gp.refresh_after_s:
        why = (
            f"last good backup {human_age(age)} old, past the {gp.tier} tier's refresh point "
            f"({window})"
        )
        action = PlanAction.BACKUP
    else:
        why = (
            f"last good backup {human_age(age)} old, inside the {gp.tier} tier "
            f"(refresh after {window})"
        )
        action = PlanAction.SKIP
    if action is PlanAction.BACKUP and guest.node in offline_nodes:
        return GuestPlan(
            guest=guest,
            action=PlanAction.NODE_OFFLINE,
            policy=gp,
            last_good=best,
            age_s=age,
            reason=f"not backed up: node {guest.node} offline ({why})",
        )
    return GuestPlan(guest=guest, action=action, reason=why, policy=gp, last_good=best, age_s=age)


def plan_backups(
    guests: Sequence[BackupGuest],
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    default_storage: str,
    now: float | None = None,
    offline_nodes: Iterable[str] = (),
) -> list[GuestPlan]:
    """The plan for every guest of the cluster, sorted by vmid."""
    now = time.time() if now is None else now
    groups = by_vmid(copies)
    offline = frozenset(offline_nodes)
    return [
        plan_guest(g, groups.get(g.vmid, []), policy, default_storage, now, offline)
        for g in sorted(guests, key=lambda g: g.vmid)
    ]
