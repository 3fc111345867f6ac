"""After the run, pure: each guest's row (what happened, its recovery point, verification), the
checks of a new backup (listed, plausible size, verified recently), the PBS maintenance jobs, and
the coverage audit (templates without a backup, guests in no job, orphans)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from labops.backups.models import (
    BackupCopy,
    BackupOutcome,
    GuestPlan,
    JobCheck,
    OrphanGroup,
    PlanAction,
)
from labops.backups.plan import by_vmid, human_age, last_good
from labops.backups.report import GuestRow, GuestStatus
from labops.backups.vzdump import classify_exitstatus
from labops.config.policies.backups import BackupPolicy, format_duration
from labops.outcome import CouldNotCheck


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
                protected=sum(c.protected for c in items),
            )
        )
    return out


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
        result = f"last result {state}" if state else "last result unknown"
        ago = human_age(age)
        ago = ago.removesuffix("0h") if ago.endswith("d0h") else ago  # "9d", as the limit reads
        detail = f"TOO OLD: last run {ago} ago, limit {limit} ({result})"
    elif failed:
        detail = f"last run {human_age(age)} ago FAILED: {state}"
    return JobCheck(
        job=job, last_run=last_run, state=state, max_age_s=max_age_s, ok=ok, detail=detail
    )
