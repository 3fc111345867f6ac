"""Proxmox Backup Server tasks: thin, typed wrappers over ``labops.proxmox.PbsClient``."""

from __future__ import annotations

import time

from prefect import task

from blocks.proxmox import PbsCredentials
from labops.config.policies.backups import PbsJobAges
from labops.errors import LabopsError
from labops.models.backups import JobCheck
from labops.models.pbs import PbsJobStatus
from labops.planners.backups import job_check, upid_start_time


def _newest(jobs: list[PbsJobStatus]) -> PbsJobStatus | None:
    ran = [j for j in jobs if j.last_run_endtime is not None]
    return max(ran, key=lambda j: j.last_run_endtime or 0) if ran else None


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
        except LabopsError as exc:
            checks.append(job_check(job, None, None, max_age, now, f"job list unreadable: {exc}"))
            continue
        newest = _newest(jobs)
        if newest is None:
            what = "configured" if not jobs else "that has run"
            checks.append(job_check(job, None, None, max_age, now, f"no {job} job {what}"))
            continue
        checks.append(job_check(
            f"{job} ({newest.id})", newest.last_run_endtime, newest.last_run_state, max_age, now
        ))
    return checks
