"""PVE storage replication as off-site copies, pure: each replicated guest gets one off-site row
per replication job, on the target ``replication:<node>``, aged from the job's last good sync
against the guest's off-site RPO (the same tiers as its PBS sync copies).

A job that keeps failing (``fail_count``, ``error``) or is disabled is a problem, named with its
job id; a job whose status its guest's node could not give is could-not-check, never fresh. The
status keeps only the failed command (``command '... | ssh ...' failed: exit code 255``); why it
failed is in the job's log (``/nodes/{node}/replication/{id}/log``, the last run only): the
lines the run wrote that are none of pvesr's own steps, such as ssh's ``Host key verification
failed.``. Text from the node is put on one line, stripped of control characters and cut short
before it reaches a report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from labops.backups.models import BackupGuest
from labops.backups.offsite import OffsiteRow, OffsiteStatus, offsite_rpo
from labops.backups.plan import human_age
from labops.config.policies.backups import OffsitePolicy
from labops.errors import one_line
from labops.models.pve import PveReplicationJob, PveReplicationState

PREFIX = "replication:"
ERROR_MAX = 240  # characters of a node's error text a report repeats


def replication_target(node: str) -> str:
    """The off-site target a replication job to ``node`` writes to, as rows name it."""
    return f"{PREFIX}{node}"


def bounded(text: str, limit: int = ERROR_MAX) -> str:
    """Untrusted text for a report: one line, printable characters only, at most ``limit``.
    A long text keeps its start and its end (a failed command's reason is at its end: ``...
    failed: exit code 255``), the middle replaced by ``…``."""
    flat = "".join(c if c.isprintable() else " " for c in one_line(text))
    flat = " ".join(flat.split())
    if len(flat) <= limit:
        return flat
    head = (limit - 1) // 2
    return flat[:head] + "…" + flat[len(flat) - (limit - 1 - head) :]


# A log line: "2026-12-06 05:55:00 101-0: <message>".
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<job>[1-9]\d*-\d+): (?P<msg>.*)$")
_END_ERROR = "end replication job with error: "
# pvesr's own steps (PVE::Replication, the storage export/import), which say nothing of a
# failure: everything else a failed run logged is the failing command's own complaint.
_STEPS = (
    "start replication job",
    "guest => ",
    "volumes => ",
    "create snapshot ",
    "using secure transmission",
    "using insecure transmission",
    "full sync ",
    "incremental sync ",
    "send from ",
    "full send of ",
    "total estimated size",
    "TIME ",
    "successfully imported",
    "delete previous replication snapshot",
    "delete stale replication snapshot",
    "freeze guest filesystem",
    "thaw guest filesystem",
    "end replication job",
)
_PROGRESS = re.compile(r"^\d\d:\d\d:\d\d\s+\S+\s+\S+@\S+$")  # zfs send's per-second lines
CAUSE_LINES = 3  # a failed run's complaints kept (the last ones: nearest the failure)


def log_reason(lines: Iterable[str], job: str) -> str | None:
    """Why ``job``'s last run failed, from its log: the run's own complaints (the lines that
    are none of pvesr's steps, the last few) and the error its end line names; None when the
    log shows no failed run (it ended well, or holds no run of this job)."""
    run: list[str] = []
    for line in lines:
        m = _LOG_LINE.match(line.strip())
        if m is None or m.group("job") != job:
            if run and line.strip():  # a message of several lines goes on without a stamp
                run.append(line.strip())
            continue
        msg = m.group("msg").strip()
        if msg == "start replication job":
            run = []
        run.append(msg)
    end = next((m for m in reversed(run) if m.startswith("end replication job")), None)
    if end is None or not end.startswith(_END_ERROR):
        return None
    causes = [m for m in run if m and not m.startswith(_STEPS) and not _PROGRESS.match(m)][
        -CAUSE_LINES:
    ]
    error = end.removeprefix(_END_ERROR).strip()
    if not causes:
        return error or None
    return f"{'; '.join(causes)} ({error})" if error else "; ".join(causes)


def _watched(guest: BackupGuest, policy: OffsitePolicy) -> bool:
    return not guest.template and not any(t in guest.tags for t in policy.exclude_tags)


def replication_rows(
    guests: Sequence[BackupGuest],
    jobs: Sequence[PveReplicationJob],
    status: Mapping[str, PveReplicationState],
    policy: OffsitePolicy,
    now: float,
    unreadable: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> list[OffsiteRow]:
    """One row per replication job of a watched guest. ``jobs``: the cluster's job config;
    ``status``: job id -> its state as the guest's node reports it; ``unreadable``: node -> why
    its replication status could not be read; ``reasons``: failed job id -> why, from its log
    (:func:`log_reason`), or why the log could not tell. Jobs of guests not in ``guests`` (not
    watched, excluded, gone) have no row."""
    by_vmid = {g.vmid: g for g in guests if _watched(g, policy)}
    out: list[OffsiteRow] = []
    for job in sorted(jobs, key=lambda j: (j.guest, j.jobnum or 0, j.id)):
        guest = by_vmid.get(job.guest)
        if guest is None:
            continue
        target = replication_target(job.target)
        row = OffsiteRow(
            vmid=guest.vmid,
            name=guest.name,
            target=target,
            rpo_s=offsite_rpo(guest, policy),
            jobs=[job.id],
        )
        state = status.get(job.id)
        if state is None:  # could not check: neither fresh nor stale
            why = (unreadable or {}).get(guest.node)
            row.unknown = (
                f"replication status of {guest.node} could not be read: {bounded(why)}"
                if why is not None
                else f"replication job {job.id} is not in {guest.node}'s replication status"
            )
            row.status = OffsiteStatus.UNKNOWN
        else:
            _judge(row, job, state, now, (reasons or {}).get(job.id))
        out.append(row)
    return out


def failing(state: PveReplicationState) -> bool:
    """Whether the job's last runs failed (its log says why)."""
    return state.fail_count > 0 or bool(state.error)


def _judge(
    row: OffsiteRow,
    job: PveReplicationJob,
    state: PveReplicationState,
    now: float,
    reason: str | None = None,
) -> None:
    """Age from the last good sync; then, in order of what to fix first: disabled, failing
    (why: ``reason``, from its log, else the status's error), never synced, older than the
    RPO."""
    name = f"replication job {job.id} to {job.target}"
    if state.last_sync > 0:
        row.newest, row.age_s = float(state.last_sync), max(0.0, now - state.last_sync)
    problems: list[str] = []
    if job.disable or state.disable:
        problems.append(f"{name} is disabled")
        row.status = OffsiteStatus.DISABLED
    if failing(state):
        times = f" {state.fail_count} time(s) in a row" if state.fail_count > 0 else ""
        text = reason or state.error
        why = f": {bounded(text)}" if text else ""
        problems.append(f"{name} failed{times}{why}")
        if row.status is OffsiteStatus.OK:
            row.status = OffsiteStatus.SYNC_FAILED
    if row.age_s is None:
        problems.append(f"{name} never synced")
        if row.status is OffsiteStatus.OK:
            row.status = OffsiteStatus.NO_COPY
    elif row.age_s > row.rpo_s:
        problems.append(
            f"last sync to {job.target} {human_age(row.age_s)} ago "
            f"(off-site RPO {human_age(row.rpo_s)})"
        )
        if row.status is OffsiteStatus.OK:
            row.status = OffsiteStatus.STALE
    row.problem = "; ".join(problems) or None
