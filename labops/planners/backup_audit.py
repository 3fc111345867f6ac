"""After the run, pure: each guest's row (what happened, its recovery point, verification) and the
coverage audit (templates without a backup, guests in no job, orphans)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from labops.config.policies.backups import BackupPolicy
from labops.models.backups import BackupCopy, BackupOutcome, GuestPlan, PlanAction
from labops.outcome import CouldNotCheck
from labops.planners.backups import (
    by_vmid,
    find_new_backup,
    human_age,
    last_good,
    size_problem,
    upid_start_time,
)
from labops.reports_backups import GuestRow, GuestStatus


def verification_status(
    copies: Sequence[BackupCopy], now: float, max_age_s: float
) -> tuple[str, str | None]:
    """(what the table shows, the problem or None) for one guest's PBS verification state.

    The question is "is there recent proof that this guest's backups restore": the latest
    verification result counts, and a success must be younger than ``max_age_s``. A failed
    verification wins over a success of the same moment.
    """
    if not copies:
        return "-", None
    pbs = [c for c in copies if (c.format or "").startswith("pbs-")]
    if not pbs:
        return "n/a (not on PBS)", None
    verified = [
        ((upid_start_time(c.verify_upid) or c.ctime), c.verify_state != "ok", c)
        for c in pbs
        if c.verify_state
    ]
    if not verified:
        return "never", "never verified"
    when, failed, latest = max(verified, key=lambda v: (v[0], v[1]))
    if failed:
        return (
            f"FAILED {human_age(now - when)} ago",
            f"verification failed {human_age(now - when)} ago ({latest.volid})",
        )
    age = now - when
    if age > max_age_s:
        return f"ok {human_age(age)} ago (too old)", f"last verified {human_age(age)} ago"
    return f"ok {human_age(age)} ago", None


_STATIC = {
    PlanAction.TEMPLATE: GuestStatus.TEMPLATE,
    PlanAction.EXCLUDED: GuestStatus.EXCLUDED,
    PlanAction.NODE_OFFLINE: GuestStatus.NOT_BACKED_UP,
    PlanAction.SKIP: GuestStatus.FRESH,
}


def guest_row(
    plan: GuestPlan,
    outcome: BackupOutcome | None,
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    now: float,
    dry_run: bool,
    unreadable: Mapping[str, str] | None = None,
) -> GuestRow:
    """One guest's line: status and reason, its recovery point after the run, verification.

    ``unreadable``: storages whose backups could not be listed (storage -> why). A guest whose
    backup storage is one of them could not be checked: no age, no staleness, no verdict.
    """
    g = plan.guest
    row = GuestRow(
        vmid=g.vmid,
        name=g.name,
        node=g.node,
        tier=plan.policy.tier if plan.policy else None,
        rpo_s=plan.policy.rpo_s if plan.policy else None,
        status=_STATIC.get(plan.action, GuestStatus.FAILED),
        reason=plan.reason,
    )
    if plan.action is PlanAction.BACKUP:
        if dry_run:
            row.status = GuestStatus.WOULD_BACK_UP
        else:
            _apply_outcome(row, plan, outcome, copies, policy)
    storage = plan.policy.storage if plan.policy else None
    why = (unreadable or {}).get(storage or "")
    if why is not None and row.watched:
        row.unknown = CouldNotCheck(
            reason=f"storage {storage} could not be listed: {why}",
            kind="error",
            since=datetime.fromtimestamp(now, UTC),
        )
    best = last_good(copies)
    if best is not None:
        row.last_good, row.last_good_volid, row.size = best.ctime, best.volid, best.size
        row.age_s = now - best.ctime
    row.verified, problem = verification_status(copies, now, policy.verification_max_age)
    if problem and row.watched:
        row.problems.append(problem)
    if row.stale:  # never for an unknown row
        row.problems.append(
            "no good backup"
            if row.age_s is None
            else f"stale: last good backup {human_age(row.age_s)} old (tier {row.tier})"
        )
    return row


def _apply_outcome(
    row: GuestRow,
    plan: GuestPlan,
    outcome: BackupOutcome | None,
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
) -> None:
    if outcome is None:
        row.status, row.reason = GuestStatus.FAILED, "backup task did not run"
        return
    row.upid, row.duration_s = outcome.upid, outcome.duration_s
    if outcome.status == "failed":
        row.status, row.reason = GuestStatus.FAILED, outcome.reason or "vzdump failed"
        return
    if outcome.status == "fresh":
        row.status, row.reason = GuestStatus.BACKED_UP, outcome.reason
        return
    storage = plan.policy.storage if plan.policy else ""
    started = outcome.started if outcome.started is not None else 0.0
    new = find_new_backup(copies, row.vmid, storage, started)
    if new is None:
        row.status = GuestStatus.FAILED
        row.reason = f"vzdump ended {outcome.exitstatus} but no new backup is listed on {storage}"
        return
    previous = [c for c in copies if c.ctime < new.ctime and c.good]
    problem = size_problem(
        new, previous[-1] if previous else None, policy.min_size_bytes, policy.min_size_ratio
    )
    if problem:
        row.status, row.reason = GuestStatus.FAILED, problem
        return
    row.status = GuestStatus.WARNING if outcome.status == "warning" else GuestStatus.BACKED_UP
    row.reason = f"{outcome.exitstatus or 'OK'}" + (
        " (adopted a running vzdump)" if outcome.adopted else ""
    )


def guest_rows(
    plans: Sequence[GuestPlan],
    outcomes: Mapping[int, BackupOutcome],
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    now: float,
    dry_run: bool,
    unreadable: Mapping[str, str] | None = None,
) -> list[GuestRow]:
    groups = by_vmid(copies)
    return [
        guest_row(
            p,
            outcomes.get(p.guest.vmid),
            groups.get(p.guest.vmid, []),
            policy,
            now,
            dry_run,
            unreadable,
        )
        for p in plans
    ]


def templates_without_backup(rows: Iterable[GuestRow]) -> list[str]:
    """Templates are the base of new guests; one without any good backup is unprotected."""
    return [r.label for r in rows if r.status is GuestStatus.TEMPLATE and r.last_good is None]


def unreadable_storages(
    problems: Iterable[tuple[str, str]], storages: Iterable[str]
) -> dict[str, str]:
    """Storages whose listing failed (storage -> why), from the scan's (entity, reason) pairs:
    ``storage <name>`` names one, ``cluster`` (no node online) all of them."""
    out: dict[str, str] = {}
    every = list(storages)
    for entity, reason in problems:
        if entity.startswith("storage "):
            out.setdefault(entity.removeprefix("storage "), reason)
        elif entity == "cluster":
            for name in every:
                out.setdefault(name, reason)
    return out
