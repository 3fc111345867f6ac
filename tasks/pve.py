"""Proxmox VE tasks: thin, typed wrappers over ``labops.proxmox.PveClient``.

Reads are retried by the client's HTTP policy; a task that changes the lab says so in its
docstring and is never retried by Prefect (a retried vzdump could back a guest up twice): where a
start is ambiguous, the task looks at the node's task list instead of starting again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from blocks.proxmox import ProxmoxCredentials
from labops.backups.models import BackupCopy, BackupGuest, BackupOutcome, TaskResult
from labops.backups.vzdump import classify_exitstatus, is_lock_error, vzdump_failure
from labops.errors import LabopsError, MaybeApplied
from labops.models.pve import (
    PveGuestConfig,
    PveGuestRef,
    PveNode,
    PveStorage,
    PveTaskItem,
    PveTaskStatus,
    PveUpid,
)
from labops.proxmox import PveClient, TaskTimeout
from labops.reports import Failure

_local = threading.local()


def client(block: ProxmoxCredentials) -> PveClient:
    """One client per thread and block: task runs of a sweep reuse the TLS session."""
    cache: dict[int, tuple[ProxmoxCredentials, PveClient]] = getattr(_local, "pve", None) or {}
    _local.pve = cache
    hit = cache.get(id(block))
    if hit is None or hit[0] is not block:
        hit = (block, block.get_client())
        cache[id(block)] = hit
    return hit[1]


# -- discovery ----------------------------------------------------------------------------------


@task(name="pve-nodes", tags=["proxmox"])
def list_nodes(block: ProxmoxCredentials) -> list[PveNode]:
    """The cluster's nodes and whether each is online. Reads only."""
    return client(block).nodes()


@task(name="pve-guests", tags=["proxmox"])
def list_guests(block: ProxmoxCredentials) -> list[BackupGuest]:
    """Every guest of ``/cluster/resources`` (templates included). Reads only."""
    return [BackupGuest.from_pve(g) for g in client(block).guests()]


@task(name="pve-storages", tags=["proxmox"])
def list_storages(block: ProxmoxCredentials, node: str) -> list[PveStorage]:
    """Storages ``node`` sees that hold backups. Reads only."""
    return client(block).storages(node, content="backup")


@task(name="pve-backups", tags=["proxmox"], task_run_name="backups-{storage}-via-{node}")
def list_backups(block: ProxmoxCredentials, node: str, storage: str) -> list[BackupCopy]:
    """Backups on ``storage`` as ``node`` lists them (content=backup). Reads only."""
    copies = (BackupCopy.from_volume(v) for v in client(block).backup_volumes(node, storage))
    return [c for c in copies if c is not None]


def scan_backups(
    block: ProxmoxCredentials, storages: Sequence[str], online: Sequence[str]
) -> tuple[list[BackupCopy], list[Failure]]:
    """Every backup on ``storages`` (a shared storage is listed once, a local one on each
    online node), and a failure for each storage that could not be listed."""
    if not online:
        return [], [Failure(entity="cluster", reason="no node online", system="proxmox")]
    problems: list[Failure] = []
    shared = {s.storage: s.shared for s in list_storages(block, online[0])}
    copies: list[BackupCopy] = []
    for storage in storages:
        if storage not in shared:
            problems.append(
                Failure(
                    entity=f"storage {storage}",
                    system="proxmox",
                    reason=f"not a backup storage on {online[0]} (check backups.storage)",
                )
            )
            continue
        for node in online[:1] if shared[storage] else online:
            try:
                copies += list_backups(block, node, storage)
            except LabopsError as exc:
                problems.append(
                    Failure(entity=f"storage {storage}", reason=str(exc), system="proxmox")
                )
    return copies, problems


@task(name="pve-not-backed-up", tags=["proxmox"])
def guests_without_job(block: ProxmoxCredentials) -> list[PveGuestRef]:
    """Guests no scheduled backup job covers (``/cluster/backup-info/not-backed-up``)."""
    return client(block).not_backed_up()


# -- one guest's backup -------------------------------------------------------------------------


class VzdumpSettings(BaseModel):
    """How one vzdump runs and how long the task waits around it."""

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


def _wait_unlocked(
    pve: PveClient,
    guest: BackupGuest,
    deadline: float,
    retry_s: float,
    sleep: Callable[[float], None],
) -> str | None:
    """Wait until the guest has no lock; return the lock still held at ``deadline``, else None."""
    while True:
        lock = pve.guest_state(guest.node, guest.type, guest.vmid).lock
        if not lock:
            return None
        if time.time() + retry_s > deadline:
            return lock
        sleep(retry_s)


def follow_task(
    pve: PveClient,
    node: str,
    upid: str,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> PveTaskStatus:
    """Poll a task to its end: first after 20 ms, then 1.5x longer each time up to ``poll_s``.

    Short backups end within a few polls and long ones cost few requests; the node slot is
    held until the end is seen, so a late look delays the node's next guest.
    """
    deadline = time.monotonic() + timeout_s
    interval = min(0.02, poll_s)
    while True:
        sleep(min(interval, max(0.0, deadline - time.monotonic())))
        status = pve.task_status(node, upid)
        if not status.running:
            return status
        if time.monotonic() >= deadline:
            raise TaskTimeout(
                "proxmox", f"task {upid} on {node} still running after {timeout_s:g}s"
            )
        interval = min(interval * 1.5, poll_s)


def run_backup(
    pve: PveClient,
    guest: BackupGuest,
    settings: VzdumpSettings,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _m: None,
) -> BackupOutcome:
    """Back up one guest and follow its task to the end (the body of :func:`backup_guest`)."""
    out = BackupOutcome(vmid=guest.vmid, status="failed")
    lock_deadline = time.time() + settings.lock_wait_s
    if guest.lock:
        out.lock_waits += 1
        still = _wait_unlocked(pve, guest, lock_deadline, settings.lock_retry_s, sleep)
        if still:
            out.reason = f"locked ({still}) for longer than {settings.lock_wait_s:g}s"
            return out
    while True:
        upid = _start_or_adopt(pve, guest, settings, out, log, sleep)
        if upid is None:
            return out
        try:
            status = follow_task(
                pve, guest.node, upid, settings.task_timeout_s, settings.poll_s, sleep
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


def _start_or_adopt(
    pve: PveClient,
    guest: BackupGuest,
    settings: VzdumpSettings,
    out: BackupOutcome,
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """The UPID to follow: a running vzdump of this guest, else a new one. None when the
    outcome is already decided (``out`` filled in)."""
    since = int(settings.listed_at - settings.task_timeout_s) if settings.listed_at else None
    known = pve.tasks(guest.node, vmid=guest.vmid, typefilter="vzdump", source="all", since=since)
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
    sleep: Callable[[float], None],
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


# No tags: a tagged task run asks the Prefect API for tag concurrency slots when it starts,
# measured at up to ~2 s against a busy SQLite-backed server, which is paid once per guest here;
# the flow bounds these runs with its own node and storage limits instead.
@task(name="backup-guest", task_run_name="backup-{guest.vmid}-{guest.name}")
def backup_guest(
    block: ProxmoxCredentials, guest: BackupGuest, settings: VzdumpSettings
) -> BackupOutcome:
    """Back up one guest with vzdump (CHANGES THE LAB: writes a backup) and wait for its task.

    Run while the flow holds the guest's node and storage concurrency slots. Never retried by
    Prefect: a running or just-finished vzdump of the guest is adopted instead of starting
    another. A locked guest is waited for; an error fails this guest only (returned).
    """
    logger = get_run_logger()
    try:
        outcome = run_backup(client(block), guest, settings, log=logger.info)
    except LabopsError as exc:
        outcome = BackupOutcome(vmid=guest.vmid, status="failed", reason=str(exc))
    if outcome.status == "failed":
        logger.warning("%s: %s", guest.label, outcome.reason)
    return outcome


# -- restore drill ------------------------------------------------------------------------------


def wait_result(
    pve: PveClient, node: str, upid: str, timeout_s: float, poll_s: float
) -> TaskResult:
    status = pve.wait_task(node, upid, timeout_s, poll_s)
    exitstatus = status.exitstatus or "unknown"
    kind = classify_exitstatus(exitstatus)
    return TaskResult(
        upid=upid,
        status=kind,  # type: ignore[arg-type]
        exitstatus=exitstatus,
        started=float(status.starttime) if status.starttime else None,
        ended=time.time(),
    )


def start_once(
    pve: PveClient,
    node: str,
    vmid: int,
    task_type: str,
    start: Callable[[], str],
    owner: str | None = None,
    wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Start a lab-changing task at most once. When the answer to the request was lost, the
    node may act on it now or seconds later (a busy pvedaemon): its task list is watched for up
    to ``wait_s`` and the task that appears is adopted; the request is sent again only when the
    list, read at the end, still shows none. When the list cannot be read it is never sent again
    (``MaybeApplied`` is raised). ``owner``: adopt only a task whose UPID names this user or
    token."""
    since = int(time.time()) - 5
    try:
        return start()
    except MaybeApplied as lost:
        deadline = time.monotonic() + wait_s
        pause = 0.2
        while True:
            try:
                listed = pve.tasks(node, vmid=vmid, typefilter=task_type, since=since)
            except LabopsError as exc:
                raise MaybeApplied(
                    lost.system,
                    f"{lost.message}; the task list could not be read ({exc}), so it is not "
                    "sent again",
                ) from None
            for item in listed:
                if owner is None or _upid_user(item.upid) == owner:
                    return item.upid  # newest first: the one this request started
            if time.monotonic() >= deadline:
                return start()
            sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 5.0)


def _upid_user(upid: str) -> str | None:
    try:
        return PveUpid.parse(upid).user
    except ValueError:
        return None


@task(name="pve-vmids", tags=["proxmox"])
def used_vmids(block: ProxmoxCredentials) -> list[int]:
    """Every vmid the cluster uses (guests and templates). Reads only."""
    return sorted(g.vmid for g in client(block).guests())


@task(name="pve-restore", tags=["proxmox"], task_run_name="restore-{volid}-as-{vmid}")
def start_restore(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    volid: str,
    storage: str,
    pool: str | None = None,
    lost_answer_wait_s: float = 30.0,
) -> str:
    """Start restoring ``volid`` as the NEW guest ``vmid`` in ``pool`` (CHANGES THE LAB);
    returns the UPID of the restore task. PVE refuses an existing vmid, so an original guest is
    never overwritten. After a lost answer only a restore task of this token is adopted."""
    pve = client(block)
    task_type = "vzrestore" if kind == "lxc" else "qmrestore"
    return start_once(
        pve,
        node,
        vmid,
        task_type,
        lambda: pve.restore(node, kind, vmid, volid, storage, unique=True, pool=pool),
        owner=pve.token_id,
        wait_s=lost_answer_wait_s,
    )


@task(name="pve-wait-task", tags=["proxmox"])
def wait_for_task(
    block: ProxmoxCredentials, node: str, upid: str, timeout_s: float, poll_s: float = 2.0
) -> TaskResult:
    """Follow task ``upid`` to its end (``TaskTimeout`` when it outlives ``timeout_s``; the task
    is left running). Reads only."""
    return wait_result(client(block), node, upid, timeout_s, poll_s)


@task(name="pve-token-privileges", tags=["proxmox"])
def token_privileges(block: ProxmoxCredentials, paths: list[str]) -> dict[str, list[str]]:
    """The privileges the configured token holds on each of ``paths``. Reads only."""
    pve = client(block)
    return {path: sorted(pve.permissions(path)) for path in dict.fromkeys(paths)}


@task(name="pve-set-tags", tags=["proxmox"], task_run_name="tags-{vmid}")
def set_guest_tags(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    tags: list[str],
    digest: str | None = None,
) -> None:
    """Replace the tags of guest ``vmid`` (CHANGES THE LAB); ``digest`` refuses a config changed
    since it was read. Callers pass only a guest their own restore created."""
    pve = client(block)
    try:
        pve.set_guest_config(node, kind, vmid, {"tags": ";".join(tags)}, digest=digest)
    except MaybeApplied:
        # Setting the same tags again is harmless; the caller reads them back either way.
        pve.set_guest_config(node, kind, vmid, {"tags": ";".join(tags)})


@task(name="pve-power", tags=["proxmox"], task_run_name="{action}-{vmid}")
def power_guest(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    action: str,
    timeout_s: float = 120.0,
    poll_s: float = 1.0,
    lost_answer_wait_s: float = 30.0,
) -> TaskResult:
    """start | stop a guest (CHANGES THE LAB) and wait for the task."""
    pve = client(block)
    prefix = "vz" if kind == "lxc" else "qm"
    upid = start_once(
        pve,
        node,
        vmid,
        f"{prefix}{action}",
        lambda: pve.power(node, kind, vmid, action),
        wait_s=lost_answer_wait_s,
    )
    return wait_result(pve, node, upid, timeout_s, poll_s)


@task(name="pve-guest-config", tags=["proxmox"], task_run_name="config-{vmid}")
def guest_config(block: ProxmoxCredentials, node: str, kind: str, vmid: int) -> PveGuestConfig:
    """The config of guest ``vmid`` (network interfaces, digest). Reads only."""
    return client(block).guest_config(node, kind, vmid)


@task(name="pve-set-network", tags=["proxmox"], task_run_name="network-{vmid}")
def set_guest_network(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    nets: dict[str, str],
    digest: str | None = None,
) -> None:
    """Set the ``netN`` values of guest ``vmid`` (CHANGES THE LAB); ``digest`` refuses a config
    changed since it was read. Callers pass only a vmid the drill itself created."""
    pve = client(block)
    try:
        pve.set_guest_config(node, kind, vmid, nets, digest=digest)
    except MaybeApplied:
        # Setting the same values again is harmless; the digest is dropped because a first
        # PUT that did land changed it. The caller reads the config back either way.
        pve.set_guest_config(node, kind, vmid, nets)


@task(name="pve-guest-state", tags=["proxmox"])
def guest_running(block: ProxmoxCredentials, node: str, kind: str, vmid: int, wait_s: float) -> str:
    """Wait up to ``wait_s`` for the guest to report ``running``; return its last status."""
    pve = client(block)
    deadline = time.time() + wait_s
    while True:
        status = pve.guest_state(node, kind, vmid).status
        if status == "running" or time.time() >= deadline:
            return status
        time.sleep(min(1.0, max(0.05, deadline - time.time())))


@task(name="pve-destroy", tags=["proxmox"], task_run_name="destroy-{vmid}")
def destroy_guest(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    lost_answer_wait_s: float = 30.0,
) -> TaskResult:
    """Destroy the scratch guest ``vmid`` (CHANGES THE LAB; stops it first when running).
    Callers pass only a guest they proved is theirs (the restore drill: its own restore task
    succeeded, its run tag read back just before, its vmid in the scratch range)."""
    pve = client(block)
    prefix = "vz" if kind == "lxc" else "qm"
    if pve.guest_state(node, kind, vmid).status == "running":
        stop = start_once(
            pve,
            node,
            vmid,
            f"{prefix}stop",
            lambda: pve.power(node, kind, vmid, "stop"),
            wait_s=lost_answer_wait_s,
        )
        wait_result(pve, node, stop, timeout_s, poll_s)
    upid = start_once(
        pve,
        node,
        vmid,
        f"{prefix}destroy",
        lambda: pve.destroy(node, kind, vmid, purge=True),
        wait_s=lost_answer_wait_s,
    )
    return wait_result(pve, node, upid, timeout_s, poll_s)
