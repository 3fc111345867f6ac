"""One guest's vzdump, start to end, against the PVE client (no Prefect).

Lost answers are the hard part: a vzdump request whose answer never arrived may have started a
backup now or seconds later (a busy pvedaemon). The job watches the node's task list and adopts
the task that appears instead of starting another, so a guest is never backed up twice. A guest
locked by another operation is waited for; a failure says why (the task log's own words).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from labops.backups.models import BackupGuest, BackupOutcome
from labops.backups.vzdump import classify_exitstatus, is_lock_error, vzdump_failure
from labops.errors import LabopsError, MaybeApplied
from labops.models.pve import PveTaskItem
from labops.proxmox import PveClient, TaskTimeout

# A guest's vzdump tasks read while the lane's previous guest was still backing up are used
# instead of reading them again only when read this recently (the same lag as between reading
# and starting; a long wait for a lock or a long vzdump before means they are read again).
LOOKED_AHEAD_FRESH_S = 1.0

# A short backup ends within a few polls, so the first look comes soon; the node's slot is held
# until the end is seen, and a late look would delay the node's next guest.
FIRST_POLL_S = 0.02

Sleep = Callable[[float], None]
Log = Callable[[str], None]
Tell = Callable[[BackupOutcome], None]


class VzdumpSettings(BaseModel):
    """How one vzdump runs and how long the job waits around it."""

    storage: str
    mode: str = "snapshot"
    compress: str | None = "zstd"
    notes_template: str | None = None
    protected: bool = False
    task_timeout_s: float = 7200
    poll_s: float = 2.0
    lock_wait_s: float = 600
    lock_retry_s: float = 15
    start_attempts: int = Field(3, ge=1, description="Starts tried after a lost answer.")
    lost_answer_wait_s: float = Field(
        30.0,
        ge=0,
        description=(
            "After a start whose answer was lost, how long the node's task list is watched for "
            "the vzdump it may have begun (a busy node acts on a request its client gave up "
            "on) before the start is sent again."
        ),
    )
    listed_at: float | None = Field(
        None,
        description=(
            "When the flow listed the existing backups (epoch). A vzdump of this guest that "
            "ended OK after that made a backup the plan could not see (a killed run's task "
            "finished meanwhile): no other is started."
        ),
    )


class LookedAhead(BaseModel):
    """A guest's vzdump tasks as read before its turn (``read_at``: monotonic, before the read)."""

    read_at: float
    tasks: list[PveTaskItem]


def vzdump_tasks(pve: PveClient, guest: BackupGuest, settings: VzdumpSettings) -> list[PveTaskItem]:
    """The guest's vzdump tasks that may have made or be making a backup the plan did not see."""
    since = int(settings.listed_at - settings.task_timeout_s) if settings.listed_at else None
    return pve.tasks(guest.node, vmid=guest.vmid, typefilter="vzdump", source="all", since=since)


def look_ahead(pve: PveClient, guest: BackupGuest, settings: VzdumpSettings) -> LookedAhead | None:
    """Read the guest's vzdump tasks ahead of its turn; None when they could not be read (they
    are read again at its turn)."""
    read_at = time.monotonic()
    try:
        return LookedAhead(read_at=read_at, tasks=vzdump_tasks(pve, guest, settings))
    except LabopsError:
        return None


def run_backup(
    pve: PveClient,
    guest: BackupGuest,
    settings: VzdumpSettings,
    sleep: Sleep = time.sleep,
    log: Log = lambda _m: None,
    ahead: LookedAhead | None = None,
    while_running: Callable[[], None] = lambda: None,
) -> BackupOutcome:
    """Back up one guest and follow its task to the end. CHANGES THE LAB (writes a backup).

    ``ahead``: its vzdump tasks read before its turn, used when still fresh. ``while_running``
    is called once its vzdump runs, before waiting for it (the lane reads the next guest's
    tasks meanwhile)."""
    out = BackupOutcome(vmid=guest.vmid, status="failed")
    lock_deadline = time.time() + settings.lock_wait_s
    if guest.lock:
        out.lock_waits += 1
        still = _wait_unlocked(pve, guest, lock_deadline, settings.lock_retry_s, sleep)
        if still:
            out.reason = f"locked ({still}) for longer than {settings.lock_wait_s:g}s"
            return out
    while True:
        upid = _start_or_adopt(pve, guest, settings, out, log, sleep, ahead)
        ahead = None  # a second start (after a lock error) reads the tasks again
        if upid is None:
            return out
        while_running()
        while_running = _nothing
        try:
            status = pve.wait_task(
                guest.node,
                upid,
                settings.task_timeout_s,
                settings.poll_s,
                first_poll_s=FIRST_POLL_S,
                read_first=False,  # just started or adopted: at most one first poll later
            )
        except TaskTimeout:
            out.upid = upid
            out.reason = (
                f"vzdump still running after {settings.task_timeout_s:g}s (left running; a "
                "re-run waits for it instead of starting another)"
            )
            return out
        out.upid, out.exitstatus = upid, status.exitstatus
        out.started = float(status.starttime) if status.starttime else out.started
        out.ended = time.time()
        if status.succeeded:
            out.status = "warning" if status.warnings else "ok"
            out.reason = status.exitstatus or ""
            return out
        detail = vzdump_failure(pve.task_log(guest.node, upid), guest.vmid) or status.error or ""
        if is_lock_error(detail) and time.time() + settings.lock_retry_s <= lock_deadline:
            out.lock_waits += 1
            log(f"{guest.label}: {detail}; waiting for the lock")
            sleep(settings.lock_retry_s)
            still = _wait_unlocked(pve, guest, lock_deadline, settings.lock_retry_s, sleep)
            if still is None:
                continue
            detail = f"{detail} (still locked after {settings.lock_wait_s:g}s)"
        out.reason = detail or "vzdump failed"
        return out


def run_lane(
    pve: PveClient,
    jobs: Sequence[tuple[BackupGuest, VzdumpSettings]],
    tell: Tell,
    log: Log = lambda _m: None,
    warn: Log = lambda _m: None,
    sleep: Sleep = time.sleep,
) -> list[BackupOutcome]:
    """Back up ``jobs`` one after another on one node lane (CHANGES THE LAB). Each guest's
    outcome is told as soon as it is known and named in one log line (a failure in one warning);
    a guest failing in any way, even a bug, never stops the next."""
    outcomes: list[BackupOutcome] = []
    ahead: list[LookedAhead | None] = [None]
    for i, (guest, settings) in enumerate(jobs):
        mine, ahead[0] = ahead[0], None
        after = jobs[i + 1] if i + 1 < len(jobs) else None

        def read_next(after: tuple[BackupGuest, VzdumpSettings] | None = after) -> None:
            if after is not None:  # the next guest's tasks, read while this vzdump runs
                ahead[0] = look_ahead(pve, *after)

        try:
            outcome = run_backup(
                pve, guest, settings, sleep=sleep, log=log, ahead=mine, while_running=read_next
            )
        except Exception as exc:  # a bug fails this guest only, never the next
            outcome = BackupOutcome(
                vmid=guest.vmid, status="failed", reason=f"{type(exc).__name__}: {exc}"
            )
        if outcome.status == "failed":
            warn(f"{guest.label}: {outcome.reason}")
        else:
            log(f"{guest.label}: {outcome.status} ({outcome.upid})")
        outcomes.append(outcome)
        tell(outcome)
    return outcomes


def _nothing() -> None:
    return None


def _wait_unlocked(
    pve: PveClient, guest: BackupGuest, deadline: float, retry_s: float, sleep: Sleep
) -> str | None:
    """Wait until the guest has no lock; return the lock still held at ``deadline``, else None."""
    while True:
        lock = pve.guest_state(guest.node, guest.type, guest.vmid).lock
        if not lock:
            return None
        if time.time() + retry_s > deadline:
            return lock
        sleep(retry_s)


def _start_or_adopt(
    pve: PveClient,
    guest: BackupGuest,
    settings: VzdumpSettings,
    out: BackupOutcome,
    log: Log,
    sleep: Sleep,
    ahead: LookedAhead | None = None,
) -> str | None:
    """The UPID to follow: a running vzdump of this guest, else a new one. None when the
    outcome is already decided (``out`` filled in)."""
    if ahead is not None and time.monotonic() - ahead.read_at <= LOOKED_AHEAD_FRESH_S:
        known = ahead.tasks
    else:
        known = vzdump_tasks(pve, guest, settings)
    mine = [t for t in known if t.id in (None, "", str(guest.vmid))]
    running = [t for t in mine if t.running]
    if running:
        out.adopted = True
        log(f"{guest.label}: a vzdump is already running ({running[0].upid}); waiting for it")
        return running[0].upid
    if settings.listed_at is not None:
        done = [
            t
            for t in mine
            if t.endtime is not None
            and t.endtime >= settings.listed_at - 1
            and t.status
            and classify_exitstatus(t.status) != "error"
        ]
        if done:
            out.status, out.upid, out.adopted = "fresh", done[0].upid, True
            out.reason = "backed up meanwhile by a vzdump that ended after the plan was made"
            return None
    seen = {t.upid for t in known}
    last_error: LabopsError | None = None
    for _ in range(settings.start_attempts):
        out.attempts += 1
        t0 = time.time()
        try:
            upid = pve.vzdump(
                guest.node,
                guest.vmid,
                settings.storage,
                mode=settings.mode,
                compress=settings.compress,
                notes_template=settings.notes_template,
                protected=settings.protected or None,
            )
        except MaybeApplied as exc:
            # Sent, answer lost: the node may act on it now or seconds later. Watch its task
            # list; send again only once it was read and showed nothing for the whole wait.
            last_error = exc
            found = _await_new_task(pve, guest, seen, t0, settings.lost_answer_wait_s, sleep)
            if isinstance(found, PveTaskItem):
                log(f"{guest.label}: {exc}; adopting the vzdump it started ({found.upid})")
                return found.upid
            if found is not None:
                out.reason = (
                    f"vzdump sent but its answer was lost ({exc.message}), and the task list "
                    f"could not be read ({found}): not sent again, so it never runs twice"
                )
                return None
            log(
                f"{guest.label}: {exc}; no vzdump began within "
                f"{settings.lost_answer_wait_s:g}s: sending it again"
            )
            continue
        except LabopsError as exc:
            # Refused with an answer (4xx, or 5xx after retries): a started task would be listed.
            last_error = exc
            new = _new_task(pve, guest, seen, t0)
            if isinstance(new, PveTaskItem):
                return new.upid
            continue
        if not upid.startswith("UPID:"):
            out.reason = f"vzdump answered {upid!r}: the guest is not on node {guest.node}"
            return None
        out.started = t0
        return upid
    out.reason = f"vzdump could not be started: {last_error}"
    return None


def _new_task(
    pve: PveClient, guest: BackupGuest, seen: set[str], t0: float
) -> PveTaskItem | str | None:
    """The guest's vzdump that is not in ``seen``; None when there is none; the reason as text
    when the task list could not be read."""
    try:
        tasks = pve.tasks(
            guest.node, vmid=guest.vmid, typefilter="vzdump", source="all", since=int(t0) - 60
        )
    except LabopsError as exc:
        return str(exc)
    fresh = [t for t in tasks if t.upid not in seen]
    return fresh[0] if fresh else None


def _await_new_task(
    pve: PveClient,
    guest: BackupGuest,
    seen: set[str],
    t0: float,
    wait_s: float,
    sleep: Sleep,
) -> PveTaskItem | str | None:
    """Look for the vzdump a lost start may have begun until ``wait_s`` after ``t0``: the task,
    else None when the last look (at the end) found none, else why the list was unreadable."""
    deadline = t0 + wait_s
    pause = 0.2
    while True:
        found = _new_task(pve, guest, seen, t0)
        if isinstance(found, PveTaskItem) or time.time() >= deadline:
            return found
        sleep(min(pause, max(0.0, deadline - time.time())))
        pause = min(pause * 2, 5.0)
