"""Proxmox Backup Server tasks: thin, typed wrappers over ``labops.proxmox.PbsClient``."""

from __future__ import annotations

import time

from prefect import task

from blocks.proxmox import PbsCredentials
from labops.backups.audit import job_check, upid_start_time
from labops.backups.models import JobCheck
from labops.config.policies.backups import PbsJobAges
from labops.errors import ApiError, LabopsError
from labops.models.pbs import PbsJobStatus
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


@task(name="pbs-maintenance", tags=["pbs"])
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
