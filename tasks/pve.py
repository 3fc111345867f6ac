"""Proxmox VE tasks: the one PVE surface of the flows, thin, typed wrappers over
``labops.proxmox.PveClient`` (one client per thread and block: :func:`client`).

Reads are retried by the client's HTTP policy; a task that changes the lab says so in its
docstring and is never retried by Prefect (a retried vzdump could back a guest up twice): where a
start is ambiguous, the task looks at the node's task list instead of starting again
(:func:`start_once`), then follows the task to its end (:func:`follow`, the one poller).
Sections: discovery, backups, guests (power, config, restore, destroy), LXC snapshots and node
activity (patch flow).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.proxmox import ProxmoxCredentials
from labops.backups.models import BackupCopy, BackupGuest, BackupOutcome, TaskResult
from labops.backups.offsite import OffsiteRow
from labops.backups.replication import failing, log_reason, replication_rows
from labops.backups.vzdump import classify_exitstatus
from labops.backups.vzdump_job import VzdumpSettings, run_lane
from labops.certificates.renewed import RenewalOutcome
from labops.certificates.sources import NodeCertificates
from labops.config.policies.backups import OffsitePolicy
from labops.errors import ApiError, LabopsError, MaybeApplied
from labops.models.pve import (
    PveBackupJob,
    PveGuest,
    PveGuestConfig,
    PveGuestRef,
    PveNode,
    PveReplicationState,
    PveSnapshot,
    PveStorage,
    PveStorageConfig,
    PveTaskItem,
    PveUpid,
)
from labops.proxmox import PveClient
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


@task(name="pve-nodes")
def list_nodes(block: ProxmoxCredentials) -> list[PveNode]:
    """The cluster's nodes and whether each is online. Reads only."""
    return client(block).nodes()


@task(name="pve-guests")
def list_guests(block: ProxmoxCredentials) -> list[BackupGuest]:
    """Every guest of ``/cluster/resources`` (templates included). Reads only."""
    return [BackupGuest.from_pve(g) for g in client(block).guests()]


@task(name="pve-storages")
def list_storages(block: ProxmoxCredentials, node: str) -> list[PveStorage]:
    """Storages ``node`` sees that hold backups. Reads only."""
    return client(block).storages(node, content="backup")


@task(name="pve-storage-configs")
def storage_configs(block: ProxmoxCredentials) -> list[PveStorageConfig]:
    """The cluster's storage definitions (``GET /storage``): where each PBS storage keeps its
    backups (datastore and namespace; PVE lists a PBS storage's content in its namespace only).
    Reads only."""
    return client(block).storage_configs()


@task(name="pve-backups", task_run_name="backups-{storage}-via-{node}")
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


@task(name="pve-not-backed-up")
def guests_without_job(block: ProxmoxCredentials) -> list[PveGuestRef]:
    """Guests no scheduled backup job covers (``/cluster/backup-info/not-backed-up``)."""
    return client(block).not_backed_up()


@task(name="pve-backup-jobs")
def backup_jobs(block: ProxmoxCredentials) -> list[PveBackupJob]:
    """The cluster's scheduled backup jobs (``/cluster/backup``): what each selects, where it
    writes, whether it is enabled. Reads only."""
    return client(block).backup_jobs()


@task(name="pve-replication")
def replication_checks(
    block: ProxmoxCredentials, guests: list[BackupGuest], policy: OffsitePolicy
) -> list[OffsiteRow]:
    """Each watched guest's PVE storage replication jobs as off-site rows: the cluster's jobs,
    then ``pvesr status`` of each node holding a replicated guest, then the log of each failing
    job (why it failed: the status keeps only the failed command). Reads only.

    The job list unreadable raises (nobody can tell which guests are replicated); a node whose
    status cannot be read leaves its guests' rows unknown, never fresh; a log that cannot be
    read leaves the status's error as the reason, saying so.
    """
    pve = client(block)
    jobs = pve.replication_jobs()
    where = {g.vmid: g.node for g in guests}
    status: dict[str, PveReplicationState] = {}
    unreadable: dict[str, str] = {}
    for node in sorted({where[j.guest] for j in jobs if j.guest in where}):
        try:
            status |= {s.id: s for s in pve.replication_status(node)}
        except LabopsError as exc:
            unreadable[node] = str(exc)
    reasons: dict[str, str] = {}
    for job in jobs:
        state = status.get(job.id)
        if state is None or not failing(state) or job.guest not in where:
            continue
        try:  # the log is on the node that ran the job: the guest's
            why = log_reason(pve.replication_log(where[job.guest], job.id), job.id)
        except LabopsError as exc:
            why = f"{state.error or 'failed'} (its log could not be read: {exc})"
        if why:
            reasons[job.id] = why
    return replication_rows(guests, jobs, status, policy, time.time(), unreadable, reasons)


# -- backups of one node lane ------------------------------------------------------------------


# One task run per lane and storage, not per guest: recording a task run costs the Prefect
# server ~25-50 ms of CPU, paid once per guest, which made a 475-guest run's orchestration cost
# more than its vzdumps. Each guest stays visible: one log line each (a failure in one warning),
# the progress artifact and the report's per-guest table.
# No tags: a tagged task run asks the Prefect API for tag concurrency slots when it starts; the
# flow bounds these runs with its own node and storage limits instead.
@task(
    name="backup-guests",
    task_run_name="backup-{node}-{storage}",
    cache_policy=NO_CACHE,
)
def backup_guests(
    block: ProxmoxCredentials,
    node: str,
    storage: str,
    jobs: list[tuple[BackupGuest, VzdumpSettings]],
    tell: Callable[[BackupOutcome], None],
) -> list[BackupOutcome]:
    """Back up the guests of one node lane and storage with vzdump, one after another, each
    waited for (CHANGES THE LAB: writes backups). ``tell`` hears each guest's outcome as soon as
    it is known.

    Run while the flow holds the node's and the storage's concurrency slots. Never retried by
    Prefect: a running or just-finished vzdump of a guest is adopted instead of starting
    another. A locked guest is waited for; an error fails that guest only.
    """
    logger = get_run_logger()
    return run_lane(client(block), jobs, tell, log=logger.info, warn=logger.warning)


# -- restore drill ------------------------------------------------------------------------------


def follow(pve: PveClient, node: str, upid: str, timeout_s: float, poll_s: float) -> TaskResult:
    """Follow a task to its end (the client's one poller) and say how it ended; ``TaskTimeout``
    when it outlives ``timeout_s`` (the task is left running)."""
    status = pve.wait_task(node, upid, timeout_s, poll_s)
    exitstatus = status.exitstatus or "unknown"
    return TaskResult(
        upid=upid,
        status=classify_exitstatus(exitstatus),  # type: ignore[arg-type]
        exitstatus=exitstatus,
        started=float(status.starttime) if status.starttime else None,
        ended=time.time(),
    )


def _follow_ok(pve: PveClient, node: str, upid: str, what: str, timeout_s: float) -> None:
    """Follow a task to its end; ``ApiError`` naming ``what`` when it failed."""
    result = follow(pve, node, upid, timeout_s, poll_s=0.5)
    if result.status == "error":
        raise ApiError("proxmox", f"{what} failed: {result.exitstatus}")


def start_once(
    pve: PveClient,
    node: str,
    vmid: int,
    task_type: str,
    start: Callable[[], str],
    owner: str | None = None,
    wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    sends: int = 3,
) -> str:
    """Start a lab-changing task at most once. When the answer to the request was lost, the
    node may act on it now or seconds later (a busy pvedaemon): its task list is watched for up
    to ``wait_s`` and the task that appears is adopted; the request is sent again only when the
    list, read at the end, still shows none (at most ``sends`` requests in all, each one after a
    list that proved the one before started nothing). When the list cannot be read it is never
    sent again (``MaybeApplied`` is raised). ``owner``: adopt only a task whose UPID names this
    user or token."""
    since = int(time.time()) - 5
    for attempt in range(1, sends + 1):
        try:
            return start()
        except MaybeApplied as lost:
            if attempt == sends:
                raise
            adopted = _adopt_started(pve, node, vmid, task_type, owner, since, wait_s, lost, sleep)
            if adopted is not None:
                return adopted
    raise AssertionError("unreachable: the last send returns or raises")


def _adopt_started(
    pve: PveClient,
    node: str,
    vmid: int,
    task_type: str,
    owner: str | None,
    since: int,
    wait_s: float,
    lost: MaybeApplied,
    sleep: Callable[[float], None],
) -> str | None:
    """The UPID of the task a lost request started, watched for up to ``wait_s``; None when the
    list, read at the end, shows none."""
    deadline = time.monotonic() + wait_s
    pause = 0.2
    while True:
        try:
            listed = pve.tasks(node, vmid=vmid, typefilter=task_type, since=since)
        except LabopsError as exc:
            raise MaybeApplied(
                lost.system,
                f"{lost.message}; the task list could not be read ({exc}), so it is not sent again",
            ) from None
        for item in listed:
            if owner is None or _upid_user(item.upid) == owner:
                return item.upid  # newest first: the one this request started
        if time.monotonic() >= deadline:
            return None
        sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 5.0)


def _upid_user(upid: str) -> str | None:
    try:
        return PveUpid.parse(upid).user
    except ValueError:
        return None


@task(name="pve-vmids")
def used_vmids(block: ProxmoxCredentials) -> list[int]:
    """Every vmid the cluster uses (guests and templates). Reads only."""
    return sorted(g.vmid for g in client(block).guests())


@task(name="pve-restore", task_run_name="restore-{volid}-as-{vmid}")
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


@task(name="pve-wait-task")
def wait_for_task(
    block: ProxmoxCredentials, node: str, upid: str, timeout_s: float, poll_s: float = 2.0
) -> TaskResult:
    """Follow task ``upid`` to its end (``TaskTimeout`` when it outlives ``timeout_s``; the task
    is left running). Reads only."""
    return follow(client(block), node, upid, timeout_s, poll_s)


@task(name="pve-token-privileges")
def token_privileges(block: ProxmoxCredentials, paths: list[str]) -> dict[str, list[str]]:
    """The privileges the configured token holds on each of ``paths``. Reads only."""
    pve = client(block)
    return {path: sorted(pve.permissions(path)) for path in dict.fromkeys(paths)}


@task(name="pve-set-tags", task_run_name="tags-{vmid}")
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


@task(name="pve-power", task_run_name="{action}-{vmid}")
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
    """start | stop | shutdown | reboot a guest (``kind`` lxc or qemu) and follow PVE's task to
    its end (CHANGES THE LAB). The one way labops powers a guest.

    A guest is started (stopped, rebooted) safely after a lost API answer here: the request is
    sent once through :func:`start_once`, which, when the answer was lost, watches the node's
    task list for up to ``lost_answer_wait_s`` and adopts the power task of this token that the
    request began; it is sent again only when the list, read to the end of the wait, shows none,
    and never when the list cannot be read. A reboot is PVE's own reboot task, never a stop and
    start of labops' own that a lost answer could leave half done. A task that ended in error is
    returned (``status == "error"``), not raised."""
    return _power(client(block), node, kind, vmid, action, timeout_s, poll_s, lost_answer_wait_s)


def _power(
    pve: PveClient,
    node: str,
    kind: str,
    vmid: int,
    action: str,
    timeout_s: float,
    poll_s: float,
    lost_answer_wait_s: float,
) -> TaskResult:
    prefix = "vz" if kind == "lxc" else "qm"
    try:
        upid = start_once(
            pve,
            node,
            vmid,
            f"{prefix}{action}",
            lambda: pve.power(node, kind, vmid, action),
            owner=pve.token_id,
            wait_s=lost_answer_wait_s,
        )
    except MaybeApplied as lost:
        # The answer was lost and the task list could not tell: the guest's own status does.
        reached = _power_reached(pve, node, kind, vmid, action, lost_answer_wait_s)
        if reached is None:
            raise
        return TaskResult(
            upid="",
            status="ok",
            exitstatus=f"OK (its answer was lost: {lost.message}; the guest is {reached} now)",
            ended=time.time(),
        )
    return follow(pve, node, upid, timeout_s, poll_s)


_POWER_GOAL = {"start": "running", "stop": "stopped", "shutdown": "stopped"}


def _power_reached(
    pve: PveClient, node: str, kind: str, vmid: int, action: str, wait_s: float
) -> str | None:
    """The guest's status once it shows what ``action`` was for, watched for up to ``wait_s``;
    None when it never does (or cannot be read): the action is not taken as done."""
    goal = _POWER_GOAL.get(action)
    if goal is None:  # a reboot leaves the status as it was: it proves nothing
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status = pve.guest_state(node, kind, vmid).status
        except LabopsError:
            return None
        if status == goal:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)


@task(name="pve-restore-over", task_run_name="restore-{vmid}-from-backup")
def restore_over_guest(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    volid: str,
    timeout_s: float = 3600.0,
    power_timeout_s: float = 600.0,
    lost_answer_wait_s: float = 30.0,
) -> str:
    """Put guest ``vmid`` back to its backup ``volid``, over itself (CHANGES THE LAB): stopped
    first when it runs (PVE refuses to restore over a running guest), restored with ``force``
    (``POST /nodes/{node}/lxc restore=1 ostemplate=`` / ``POST /nodes/{node}/qemu archive=``),
    the task followed to its end, then started again when it was running. Every request is sent
    at most once (a lost answer is followed to its task). Returns "" when done, else what failed
    (never raises for a failed step: the caller reports it per guest)."""
    pve = client(block)
    try:
        was = pve.guest_state(node, kind, vmid).status
        if was == "running":
            done = _power(pve, node, kind, vmid, "stop", power_timeout_s, 1.0, lost_answer_wait_s)
            if done.status == "error":
                return f"stop before the restore failed: {done.exitstatus}"
        task_type = "vzrestore" if kind == "lxc" else "qmrestore"
        upid = start_once(
            pve,
            node,
            vmid,
            task_type,
            lambda: pve.restore_over(node, kind, vmid, volid),
            owner=pve.token_id,
            wait_s=lost_answer_wait_s,
        )
        done = follow(pve, node, upid, timeout_s, 1.0)
        if done.status == "error":
            return f"restore task failed: {done.exitstatus}"
        if was == "running":
            done = _power(pve, node, kind, vmid, "start", power_timeout_s, 1.0, lost_answer_wait_s)
            if done.status == "error":
                return f"restored, but the start after it failed: {done.exitstatus}"
    except LabopsError as exc:
        return str(exc)
    return ""


@task(name="pve-migrate", task_run_name="migrate-{vmid}-to-{target}")
def migrate_guest(
    block: ProxmoxCredentials,
    node: str,
    kind: str,
    vmid: int,
    target: str,
    timeout_s: float = 1800.0,
    lost_answer_wait_s: float = 30.0,
) -> TaskResult:
    """Migrate a guest to ``target`` and follow PVE's task to its end (CHANGES THE LAB): a
    running VM live, a running container by restart. Sent once (:func:`start_once`: a lost
    answer is followed to the migration task it started); a failed task is returned
    (``status == "error"``), not raised."""
    pve = client(block)
    running = pve.guest_state(node, kind, vmid).status == "running"
    upid = start_once(
        pve,
        node,
        vmid,
        "vzmigrate" if kind == "lxc" else "qmigrate",
        lambda: pve.migrate(node, kind, vmid, target, running=running),
        owner=pve.token_id,
        wait_s=lost_answer_wait_s,
    )
    return follow(pve, node, upid, timeout_s, 1.0)


@task(name="pve-guest-config", task_run_name="config-{vmid}")
def guest_config(block: ProxmoxCredentials, node: str, kind: str, vmid: int) -> PveGuestConfig:
    """The config of guest ``vmid`` (network interfaces, digest). Reads only."""
    return client(block).guest_config(node, kind, vmid)


@task(name="pve-set-network", task_run_name="network-{vmid}")
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


@task(name="pve-guest-state")
def guest_running(block: ProxmoxCredentials, node: str, kind: str, vmid: int, wait_s: float) -> str:
    """Wait up to ``wait_s`` for the guest to report ``running``; return its last status."""
    pve = client(block)
    deadline = time.time() + wait_s
    while True:
        status = pve.guest_state(node, kind, vmid).status
        if status == "running" or time.time() >= deadline:
            return status
        time.sleep(min(1.0, max(0.05, deadline - time.time())))


@task(name="pve-destroy", task_run_name="destroy-{vmid}")
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
        follow(pve, node, stop, timeout_s, poll_s)
    upid = start_once(
        pve,
        node,
        vmid,
        f"{prefix}destroy",
        lambda: pve.destroy(node, kind, vmid, purge=True),
        wait_s=lost_answer_wait_s,
    )
    return follow(pve, node, upid, timeout_s, poll_s)


# -- snapshots (LXC and QEMU) and node activity (patch flow) ---------------------------------------

_SNAPSHOT_TIMEOUT_S = 600.0


@task(name="pve-inventory", retries=2, retry_delay_seconds=2)
def inventory(block: ProxmoxCredentials) -> tuple[list[PveNode], list[PveGuest]]:
    """Nodes and guests of the cluster. Reads only."""
    pve = client(block)
    return pve.nodes(), pve.guests()


@task(name="pve-guest-lock", retries=2, retry_delay_seconds=2)
def guest_lock(block: ProxmoxCredentials, node: str, vmid: int, kind: str = "lxc") -> str | None:
    """The lock a PVE task holds on a guest (``backup``, ``snapshot``...), or None. Reads
    only."""
    return client(block).guest_state(node, kind, vmid).lock


@task(name="pve-node-activity", retries=2, retry_delay_seconds=2)
def node_activity(block: ProxmoxCredentials, node: str) -> tuple[list[PveTaskItem], list[PveGuest]]:
    """The tasks running on ``node`` (``/nodes/{node}/tasks?source=active``) and the cluster's
    guests with their locks: what says a node is busy. Reads only."""
    pve = client(block)
    return pve.tasks(node, source="active"), pve.guests()


def _snap_task(kind: str, verb: str) -> str:
    """PVE's task type of a snapshot action: vzsnapshot / qmsnapshot, ...rollback, ..."""
    return ("vz" if kind == "lxc" else "qm") + verb


@task(name="pve-snapshot-create")
def create_snapshot(
    block: ProxmoxCredentials,
    node: str,
    vmid: int,
    name: str,
    description: str = "",
    kind: str = "lxc",
) -> str:
    """Snapshot a guest (``kind`` lxc or qemu; a VM without its RAM) and wait for it. CHANGES
    THE LAB. Idempotent: an existing snapshot of that name (a re-run of the same run) is kept,
    not duplicated."""
    pve = client(block)
    if any(s.name == name for s in pve.snapshots(node, vmid, kind)):
        return name
    # a lost answer: the snapshot task it may have started is followed, never started twice
    upid = start_once(
        pve,
        node,
        vmid,
        _snap_task(kind, "snapshot"),
        lambda: pve.snapshot_create(node, vmid, name, description, kind),
        owner=pve.token_id,
    )
    _follow_ok(pve, node, upid, f"snapshot {name} of {vmid}", _SNAPSHOT_TIMEOUT_S)
    return name


@task(name="pve-snapshot-rollback")
def rollback_snapshot(
    block: ProxmoxCredentials, node: str, vmid: int, name: str, kind: str = "lxc"
) -> None:
    """Roll a guest back to a snapshot and wait for it; a guest that was running is started
    again (a VM's snapshot has no RAM: PVE stops it for the rollback). CHANGES THE LAB."""
    pve = client(block)
    running = pve.guest_state(node, kind, vmid).status == "running"
    upid = start_once(
        pve,
        node,
        vmid,
        _snap_task(kind, "rollback"),
        lambda: pve.snapshot_rollback(node, vmid, name, start=running, kind=kind),
        owner=pve.token_id,
    )
    _follow_ok(pve, node, upid, f"rollback of {vmid} to {name}", _SNAPSHOT_TIMEOUT_S)


@task(name="pve-snapshot-delete", retries=1, retry_delay_seconds=3)
def delete_snapshot(
    block: ProxmoxCredentials, node: str, vmid: int, name: str, kind: str = "lxc"
) -> bool:
    """Delete a guest's snapshot and wait for it. CHANGES THE LAB. Returns False when it was
    already gone (so a retry or a re-run does nothing twice)."""
    pve = client(block)
    if not any(s.name == name for s in pve.snapshots(node, vmid, kind)):
        return False
    upid = start_once(
        pve,
        node,
        vmid,
        _snap_task(kind, "delsnapshot"),
        lambda: pve.snapshot_delete(node, vmid, name, kind),
        owner=pve.token_id,
    )
    _follow_ok(pve, node, upid, f"deleting snapshot {name} of {vmid}", _SNAPSHOT_TIMEOUT_S)
    return True


@task(name="pve-find-snapshots", retries=1, retry_delay_seconds=2)
def find_snapshots(
    block: ProxmoxCredentials,
    guests: list[tuple[str, str, int]] | list[tuple[str, str, int, str]],
    prefix: str,
) -> list[tuple[str, int, str]]:
    """Snapshots whose name starts with ``prefix`` on each (host, node, vmid[, kind]) (kind lxc
    when not given), as (host, vmid, name); guests the API cannot list are left out. Reads
    only."""
    pve = client(block)
    found: list[tuple[str, int, str]] = []
    for host, node, vmid, *rest in guests:
        try:
            snaps: list[PveSnapshot] = pve.snapshots(node, vmid, rest[0] if rest else "lxc")
        except Exception:
            continue
        found += [(host, vmid, s.name) for s in snaps if s.name.startswith(prefix)]
    return found


# -- node certificates (certificates flow) ------------------------------------------------


@task(name="pve-node-certificates", retries=1)
def node_certificates(block: ProxmoxCredentials) -> list[NodeCertificates]:
    """Each node's certificate files and ACME setup (``certificates/info``, node config).

    A node that does not answer is listed with its error; the others go on. Reads only.
    """
    pve = client(block)
    out = []
    for n in pve.nodes():
        override = block.settings.nodes.get(n.node)
        url = str(override.url) if override and override.url else None
        item = NodeCertificates(node=n.node, online=n.online, url=url)
        if n.online:
            try:
                item.certificates = pve.certificates_info(n.node)
                item.acme = pve.acme_domains_configured(n.node)
            except LabopsError as exc:
                item.error = str(exc)
        out.append(item)
    return out


@task(name="pve-renew-acme-certificate")
def renew_node_certificate(
    block: ProxmoxCredentials, node: str, force: bool, timeout_s: float
) -> RenewalOutcome:
    """Order the renewal of a node's ACME certificate and wait for the task. CHANGES THE NODE.

    Not retried by Prefect: a second order would be a second renewal.
    """
    pve = client(block)
    try:
        upid = pve.renew_acme_certificate(node, force=force)
    except LabopsError as exc:
        return RenewalOutcome(node=node, ok=False, detail=f"refused: {exc}")
    try:
        status = pve.wait_task(node, upid, timeout_s=timeout_s, poll_s=1.0)
    except LabopsError as exc:
        return RenewalOutcome(node=node, upid=upid, ok=False, detail=str(exc))
    if status.succeeded:
        return RenewalOutcome(node=node, upid=upid, ok=True, detail="task OK")
    return RenewalOutcome(node=node, upid=upid, ok=False, detail=f"task failed: {status.error}")
