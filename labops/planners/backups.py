"""Backup decisions, pure: which guests are selected, which policy each gets, whether each needs a
backup now (and why), how the backups are spread over node lanes, and the coverage audit
(stale guests, unverified backups, orphans, unprotected templates, a retention dry run).

Times are epoch seconds; ``now`` is always passed in so that every decision is reproducible.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from labops.config.policies.backups import BackupPolicy, Retention, Selection, format_duration
from labops.config.systems import PbsSystem
from labops.errors import ConfigError
from labops.models.backups import (
    BackupCopy,
    BackupGuest,
    GuestPlan,
    GuestPolicy,
    JobCheck,
    OrphanGroup,
    PlanAction,
    RetentionGroup,
    RetentionMark,
)

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


def lanes(
    plans: Sequence[GuestPlan],
    per_node: int,
    weight: Callable[[GuestPlan], float] | None = None,
) -> list[list[GuestPlan]]:
    """Split the guests to back up into ``per_node`` sequential lanes per node.

    Each lane runs one backup after another, so a node never waits for a concurrency slot its
    own lane holds. Heaviest guests go first onto the lightest lane (LPT), which keeps a node's
    lanes even; lanes of different nodes are interleaved so every node starts at once.
    """
    weigh = weight or (lambda p: float(p.last_good.size) if p.last_good else 0.0)
    per_node_plans: dict[str, list[GuestPlan]] = defaultdict(list)
    for plan in plans:
        if plan.action is PlanAction.BACKUP:
            per_node_plans[plan.guest.node].append(plan)
    node_lanes: list[list[list[GuestPlan]]] = []
    for node in sorted(per_node_plans, key=lambda n: -sum(weigh(p) for p in per_node_plans[n])):
        buckets: list[list[GuestPlan]] = [[] for _ in range(max(1, per_node))]
        loads = [0.0] * len(buckets)
        for plan in sorted(per_node_plans[node], key=lambda p: (-weigh(p), p.guest.vmid)):
            i = loads.index(min(loads))
            buckets[i].append(plan)
            loads[i] += weigh(plan) or 1.0
        # Guests of one storage run back to back, so a lane takes each storage's slot once.
        node_lanes.append(
            [sorted(b, key=lambda p: p.policy.storage if p.policy else "") for b in buckets if b]
        )
    out: list[list[GuestPlan]] = []
    depth = max((len(n) for n in node_lanes), default=0)
    for i in range(depth):
        out.extend(n[i] for n in node_lanes if i < len(n))
    return out


# --- checks after the run -------------------------------------------------------------------


def upid_start_time(upid: str | None) -> float | None:
    """Start time of a PVE (8 fields) or PBS (9 fields) UPID, epoch seconds."""
    if not upid or not upid.startswith("UPID:"):
        return None
    parts = upid.split(":")
    index = 5 if len(parts) >= 10 else 4  # PBS has the extra task-id field before starttime
    try:
        return float(int(parts[index], 16))
    except (IndexError, ValueError):
        return None


def verification_problem(copy: BackupCopy | None, now: float, max_age_s: float) -> str | None:
    """None when the backup was verified ok recently enough, else what is wrong."""
    if copy is None:
        return None
    if copy.verify_state is None:
        return "never verified"
    if copy.verify_state != "ok":
        return f"verification {copy.verify_state}"
    verified_at = upid_start_time(copy.verify_upid)
    if verified_at is None:
        return "verification time unknown"
    if now - verified_at > max_age_s:
        return f"last verified {human_age(now - verified_at)} ago"
    return None


def size_problem(
    new: BackupCopy, previous: BackupCopy | None, min_bytes: int, min_ratio: float
) -> str | None:
    """None when the new backup's size is plausible, else why it is not."""
    if new.size < min_bytes:
        return f"implausible size {new.size} bytes (below {min_bytes})"
    if previous is not None and previous.size > 0 and new.size < previous.size * min_ratio:
        return (
            f"implausible size {new.size} bytes, under {min_ratio:.0%} of the previous "
            f"backup ({previous.size} bytes)"
        )
    return None


def find_new_backup(
    copies: Sequence[BackupCopy], vmid: int, storage: str, started: float, slack_s: float = 5.0
) -> BackupCopy | None:
    """The backup a vzdump started at ``started`` produced, if storage lists it."""
    candidates = [
        c
        for c in copies
        if c.vmid == vmid and c.storage == storage and c.ctime >= started - slack_s
    ]
    return max(candidates, key=lambda c: c.ctime) if candidates else None


def orphans(copies: Sequence[BackupCopy], existing_vmids: Iterable[int]) -> list[OrphanGroup]:
    """Backups of guests the cluster no longer has, one entry per (guest, storage)."""
    present = set(existing_vmids)
    groups: dict[tuple[int, str], list[BackupCopy]] = defaultdict(list)
    for copy in copies:
        if copy.vmid not in present:
            groups[(copy.vmid, copy.storage)].append(copy)
    out = []
    for (vmid, storage), items in sorted(groups.items()):
        newest = max(items, key=lambda c: c.ctime)
        out.append(
            OrphanGroup(
                vmid=vmid,
                storage=storage,
                count=len(items),
                newest=newest.ctime,
                size=sum(c.size for c in items),
                notes=newest.notes,
            )
        )
    return out


# --- retention (dry run) --------------------------------------------------------------------

_PERIODS: list[tuple[str, str | None]] = [
    ("keep-last", None),
    ("keep-hourly", "%Y/%m/%d/%H"),
    ("keep-daily", "%Y/%m/%d"),
    ("keep-weekly", "%G/%V"),
    ("keep-monthly", "%Y/%m"),
    ("keep-yearly", "%Y"),
]


def prune_marks(copies: Sequence[BackupCopy], retention: Retention) -> dict[str, str]:
    """volid -> keep | remove | protected, as PBS/PVE prune selects (periods in UTC).

    Each keep-* option walks the backups newest first and keeps the newest one of each period
    not already covered by a backup an earlier option kept; protected backups are never removed
    and do not count. Without any keep option everything is kept.
    """
    options = retention.options()
    newest_first = sorted(copies, key=lambda c: (c.ctime, c.volid), reverse=True)
    if not options:
        return {c.volid: "keep" for c in newest_first}
    marks: dict[str, str] = {}
    for option, fmt in _PERIODS:
        keep = options.get(option)
        if not keep:
            continue

        def period(c: BackupCopy, fmt: str | None = fmt) -> str:
            return c.volid if fmt is None else time.strftime(fmt, time.gmtime(c.ctime))

        covered = {period(c) for c in newest_first if marks.get(c.volid) == "keep"}
        chosen: set[str] = set()
        for copy in newest_first:
            if copy.volid in marks:
                continue
            if copy.protected:
                marks[copy.volid] = "protected"
                continue
            key = period(copy)
            if key in covered:
                continue
            if key in chosen:  # an older backup of a period already kept: PBS marks it now
                marks[copy.volid] = "remove"
                continue
            if len(chosen) >= keep:
                break
            chosen.add(key)
            marks[copy.volid] = "keep"
    for copy in newest_first:
        if copy.volid not in marks:
            marks[copy.volid] = "protected" if copy.protected else "remove"
    return marks


def retention_dry_run(copies: Sequence[BackupCopy], retention: Retention) -> list[RetentionGroup]:
    """Per guest and storage: how many backups a prune would keep and remove."""
    groups: dict[tuple[int, str], list[BackupCopy]] = defaultdict(list)
    for copy in copies:
        groups[(copy.vmid, copy.storage)].append(copy)
    out = []
    for (vmid, storage), items in sorted(groups.items()):
        marks = prune_marks(items, retention)
        listed = [
            RetentionMark(volid=c.volid, ctime=c.ctime, mark=marks[c.volid])  # type: ignore[arg-type]
            for c in sorted(items, key=lambda c: c.ctime)
        ]
        counts: dict[str, int] = defaultdict(int)
        for m in listed:
            counts[m.mark] += 1
        out.append(
            RetentionGroup(
                vmid=vmid,
                storage=storage,
                keep=counts["keep"],
                remove=counts["remove"],
                protected=counts["protected"],
                marks=[m for m in listed if m.mark == "remove"],
            )
        )
    return out


def classify_exitstatus(exitstatus: str) -> str:
    """``OK`` -> ok, ``WARNINGS: n`` -> warning, anything else -> error (as PVE classifies)."""
    text = exitstatus.strip()
    if text == "OK":
        return "ok"
    if text.startswith("WARNINGS"):
        return "warning"
    return "error"


_LOCK = re.compile(r"\bis locked\b|\blocked \(|can't lock file|got timeout|lock.*timeout", re.I)


def is_lock_error(text: str) -> bool:
    """True for the messages PVE gives when a guest is locked by another operation."""
    return bool(_LOCK.search(text or ""))


def job_check(
    job: str,
    last_run: float | None,
    state: str | None,
    max_age_s: float,
    now: float,
    unknown: str = "",
) -> JobCheck:
    """Whether a PBS maintenance job ran successfully within ``max_age_s`` (unknown is not ok)."""
    limit = format_duration(max_age_s) if max_age_s % 3600 == 0 else human_age(max_age_s)
    if last_run is None:
        return JobCheck(
            job=job,
            max_age_s=max_age_s,
            ok=False,
            state=state,
            detail=unknown or f"no record of a {job} run",
        )
    age = now - last_run
    failed = state is not None and classify_exitstatus(state) == "error"
    ok = age <= max_age_s and not failed
    detail = f"last run {human_age(age)} ago ({state or 'state unknown'}), limit {limit}"
    if age > max_age_s:
        detail = f"last run {human_age(age)} ago, older than {limit} ({state or 'state unknown'})"
    elif failed:
        detail = f"last run {human_age(age)} ago FAILED: {state}"
    return JobCheck(
        job=job, last_run=last_run, state=state, max_age_s=max_age_s, ok=ok, detail=detail
    )
