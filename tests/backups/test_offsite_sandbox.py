"""Off-site copies over a real connection: labops's PBS client reads the sandbox PBS's push sync
job and its last run's task log, and the core judges the run partial, naming the groups whose
sync failed and which guests that leaves without a fresh off-site copy."""

from __future__ import annotations

import time

from labops.backups.models import BackupGuest
from labops.backups.offsite import offsite_rows, sync_run, target_of
from labops.config import load_config
from labops.config.policies.backups import OffsitePolicy
from labops.config.secrets import resolve_secret
from labops.config.systems import HttpRetry
from labops.proxmox import PbsClient
from tests.fixtures.sandbox import SandboxHandle

FAST = HttpRetry(attempts=3, backoff_s=0.01, backoff_max_s=0.05, jitter=0.0, timeout_s=5)


def test_sync_partial_failure_read_from_the_sandbox_pbs(sandbox: SandboxHandle) -> None:
    cfg = load_config(str(sandbox.config_path))
    assert cfg.systems.pbs is not None
    system = cfg.systems.pbs.model_copy(update={"retry": FAST})
    pbs = PbsClient(system, resolve_secret(system.token_secret))

    (job,) = pbs.sync_jobs()
    assert (job.sync_direction, target_of(job)) == ("push", "pbs2:offsite/home")
    assert job.group_filter == ["type:ct", "exclude:group:ct/100"]
    assert job.last_run_upid is not None
    run = sync_run(job, pbs.task_log(job.last_run_upid))
    expected = sandbox.state()["services"]["pbs"]["seed"]["sync_failed_groups"]
    assert run.state == "partial" and sorted(run.failed_groups) == sorted(expected)

    # Every container the job covers; the off-site PBS lists everything as copied an hour ago.
    guests = [BackupGuest(vmid=int(g.split("/")[1]), node="pve1", type="lxc") for g in expected] + [
        BackupGuest(vmid=100, node="pve1", type="lxc")
    ]
    now = time.time()
    newest = {"pbs2:offsite/home": {f"ct/{g.vmid}": now - 3600 for g in guests}}
    rows = offsite_rows(guests, "store1", [job], {job.id: run}, newest, OffsitePolicy(), now)
    problems = {f"ct/{r.vmid}": r.problem for r in rows}
    for group in expected:
        assert f"sync job s-offsite failed for {group}" in (problems[group] or "")
    assert problems["ct/100"] == "no sync job copies ct/100 to pbs2:offsite/home"
