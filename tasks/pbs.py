"""Proxmox Backup Server tasks: thin, typed wrappers over ``labops.proxmox.PbsClient``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from prefect import task

from blocks.proxmox import PbsCredentials, PbsOffsiteCredentials
from labops.backups.audit import job_check, upid_start_time
from labops.backups.models import BackupGuest, JobCheck
from labops.backups.namespaces import JobKind, JobsRead, NamespaceCoverage, namespace_coverage
from labops.backups.offsite import (
    OffsiteRow,
    SyncRun,
    offsite_pulls,
    offsite_rows,
    parse_target,
    sync_run,
    target_of,
    unchecked_rows,
)
from labops.config.policies.backups import OffsitePolicy, PbsJobAges
from labops.errors import ApiError, LabopsError
from labops.models.pbs import PbsJobStatus, PbsSyncJob
from labops.proxmox import PbsClient


def _newest(jobs: list[PbsJobStatus]) -> PbsJobStatus | None:
    ran = [j for j in jobs if j.last_run_endtime is not None]
    return max(ran, key=lambda j: j.last_run_endtime or 0) if ran else None


def _prune_from_tasks(pbs: PbsClient, max_age: float, now: float) -> JobCheck:
    try:
        tasks = pbs.tasks(limit=1000)
    except LabopsError as exc:
        return job_check("prune", None, None, max_age, now, f"task list unreadable: {exc}")
    prunes = [t for t in tasks if t.worker_type in ("prune", "prunejob") and t.endtime is not None]
    if not prunes:
        return job_check("prune", None, None, max_age, now, "no prune job or prune task on record")
    newest = max(prunes, key=lambda t: t.endtime or 0)
    return job_check("prune (task)", newest.endtime, newest.status, max_age, now)


@task(name="pbs-maintenance")
def maintenance_checks(block: PbsCredentials, ages: PbsJobAges) -> list[JobCheck]:
    """Whether PBS's prune, garbage collection and verify jobs ran recently. Reads only.

    Anything PBS does not tell (an endpoint missing, no job configured) is reported as not ok:
    an unknown maintenance state is a finding, not a pass.
    """
    pbs = block.get_client()
    now = time.time()
    checks: list[JobCheck] = []
    try:
        gc = pbs.gc_status()
        last = gc.last_run_endtime or upid_start_time(gc.upid)
        checks.append(job_check("gc", last, gc.last_run_state, ages.gc, now))
    except LabopsError as exc:
        checks.append(job_check("gc", None, None, ages.gc, now, f"GC status unreadable: {exc}"))
    for job, read, max_age in (
        ("verify", pbs.verify_jobs, ages.verify),
        ("prune", pbs.prune_jobs, ages.prune),
    ):
        try:
            jobs = read()
        except ApiError as exc:
            if job == "prune" and exc.status in (404, 501):
                # PBS before 2.2 has no prune jobs: the datastore's prune tasks tell instead.
                checks.append(_prune_from_tasks(pbs, max_age, now))
            else:
                checks.append(job_check(job, None, None, max_age, now, f"jobs unreadable: {exc}"))
            continue
        except LabopsError as exc:
            checks.append(job_check(job, None, None, max_age, now, f"jobs unreadable: {exc}"))
            continue
        newest = _newest(jobs)
        if newest is None:
            what = "configured" if not jobs else "that has run"
            checks.append(job_check(job, None, None, max_age, now, f"no {job} job {what}"))
            continue
        checks.append(
            job_check(
                f"{job} ({newest.id})", newest.last_run_endtime, newest.last_run_state, max_age, now
            )
        )
    return checks


@task(name="pbs-namespace-jobs")
def namespace_checks(
    block: PbsCredentials, namespaces: dict[tuple[str, str], list[str]]
) -> list[NamespaceCoverage]:
    """Whether PBS's verify and prune jobs reach each namespace holding backups
    (``(datastore, namespace) -> PVE storages``), by each job's ``ns`` and ``max-depth``. Reads
    only. Jobs that cannot be read leave their namespaces unknown, never covered. The backup
    groups of each namespace are listed in it (``ns``): an empty one needs no job yet; one that
    cannot be listed counts as holding backups."""
    pbs = block.get_client()
    groups: dict[tuple[str, str], int] = {}
    for store, ns in namespaces:
        # not known: the namespace counts as holding backups (a gap when no job reaches it)
        with contextlib.suppress(LabopsError):
            groups[(store, ns)] = len(pbs.groups(store, ns))
    readers: dict[JobKind, Callable[[str], list[PbsJobStatus]]] = {
        "verify": pbs.verify_jobs,
        "prune": pbs.prune_jobs,
    }
    jobs: dict[tuple[JobKind, str], JobsRead] = {}
    for store in sorted({store for store, _ in namespaces}):
        for kind, read in readers.items():
            try:
                jobs[(kind, store)] = read(store)
            except LabopsError as exc:
                jobs[(kind, store)] = f"{kind} jobs unreadable: {exc}"
    return namespace_coverage(namespaces, jobs, groups)


def _last_run(pbs: PbsClient, job: PbsSyncJob, on: str | None = None) -> SyncRun:
    """The job's last run on ``pbs`` (``on``: the off-site PBS's name, for its pull jobs); its
    log only when it did not end OK (it names the failed groups)."""
    if job.last_run_upid is None or job.last_run_state in (None, "OK"):
        return sync_run(job, on=on)
    try:
        return sync_run(job, pbs.task_log(job.last_run_upid), on)
    except LabopsError as exc:  # the state alone still says partial or failed
        run = sync_run(job, on=on)
        return run.model_copy(update={"detail": f"{run.detail} (log unreadable: {exc})"})


def _newest_copies(
    pbs: PbsClient, target: str, offsite: tuple[str, PbsClient] | None = None
) -> dict[str, float]:
    """Group -> newest copy time on ``target``: a datastore of this PBS, of the off-site PBS
    (``offsite``: its name and client; read directly), or of a remote through this PBS."""
    remote, store, ns = parse_target(target)
    if remote and offsite is not None and remote == offsite[0]:
        groups = offsite[1].groups(store, ns)
    else:
        groups = pbs.remote_groups(remote, store, ns) if remote else pbs.groups(store, ns)
    return {g.group: float(g.last_backup) for g in groups}


@task(name="pbs-offsite-copies")
def offsite_checks(
    block: PbsCredentials,
    guests: list[BackupGuest],
    policy: OffsitePolicy,
    where: dict[int, list[str]] | None = None,
    offsite: PbsOffsiteCredentials | None = None,
) -> list[OffsiteRow]:
    """Each guest's newest copy on each off-site target, against its off-site RPO: the sync
    jobs (pull and push), their last runs (a partial failure names its groups) and the groups
    each target holds. Reads only.

    ``where``: guest -> the PBS places (``store[/ns]``) its backups are in (default: the root
    namespace of the configured datastore). ``offsite``: the off-site PBS (``systems.
    pbs_offsite``), read directly: its pull jobs from the home PBS (its remote
    ``settings.home_remote``), their task logs, and its datastore for every target named after
    it (``settings.name``). Sync jobs that cannot be read leave every guest unknown (the
    off-site PBS's: its targets); a target that cannot be read leaves its rows unknown: never
    fine.
    """
    pbs = block.get_client()
    try:
        jobs = pbs.sync_jobs()
    except LabopsError as exc:
        return unchecked_rows(guests, policy, f"sync jobs unreadable: {exc}")
    runs = {j.id: _last_run(pbs, j) for j in jobs}
    on: dict[str, str] = {}
    jobs_unread: dict[str, str] = {}
    remote = None
    if offsite is not None:
        offsite_name, home_remote = offsite.settings.name, offsite.settings.home_remote
        remote = (offsite_name, offsite.get_client())
        try:
            pulls = offsite_pulls(remote[1].sync_jobs(), offsite_name, home_remote)
        except LabopsError as exc:
            pulls, jobs_unread[offsite_name] = [], f"sync jobs of {offsite_name} unreadable: {exc}"
        on = {j.id: offsite_name for j in pulls}
        runs |= {j.id: _last_run(remote[1], j, offsite_name) for j in pulls}
        jobs = [*jobs, *pulls]
    newest: dict[str, dict[str, float]] = {}
    unreadable: dict[str, str] = {}
    for target in list(policy.targets) or sorted({target_of(j, on.get(j.id)) for j in jobs}):
        try:
            newest[target] = _newest_copies(pbs, target, remote)
        except LabopsError as exc:
            unreadable[target] = str(exc)
    return offsite_rows(
        guests,
        pbs.datastore,
        jobs,
        runs,
        newest,
        policy,
        time.time(),
        unreadable,
        where,
        on,
        jobs_unread,
    )
