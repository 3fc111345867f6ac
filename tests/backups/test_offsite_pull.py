"""A pull sync job end to end on the sandbox: the off-site PBS pbs2 (``systems.pbs_offsite``,
read directly) pulls the VMs from the home PBS (its remote ``home``) into its datastore
``offsite``, namespace ``lab``. Its last run "finished" with ``sync failed with some errors.``
for two groups, named in PBS's pull task log: their rows carry the group's own reason and a
copy a week old; the other VMs are fresh; containers, which the job's filter leaves out, are
uncovered on that target. pbs2's sync jobs unreadable leave its target unknown, never fine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labops.backups.offsite import OffsiteStatus
from labops.outcome import Outcome
from tests.backups.test_flow import config, report_of
from tests.fixtures.sandbox import SandboxHandle

TARGET = "pbs2:offsite/lab"
PUSH = "pbs2:offsite/home"


def run(sandbox: SandboxHandle, directory: Path) -> Any:
    from flows.backups import backups

    offsite = {"rpo": "3d", "targets": [TARGET, PUSH]}
    cfg = config(sandbox, directory, offsite_pbs=True, offsite=offsite)
    return report_of(backups(config=cfg, dry_run=True, return_state=True))


def test_pull_job_rows_with_a_partial_failure_end_to_end(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    services = sandbox_clean.state()["services"]
    failed = set(services["pbs_offsite"]["seed"]["pull_failed_groups"])
    vms = set(services["pbs"]["seed"]["home_vmids"])
    assert len(failed) == 2 and {int(g[3:]) for g in failed} <= vms

    report = run(sandbox_clean, tmp_path)
    pulled = {r.vmid: r for r in report.offsite if r.target == TARGET}
    for vmid in vms:
        row = pulled[vmid]
        assert row.jobs == ["pbs2/s-pull"], row
        if f"vm/{vmid}" in failed:
            assert row.status is OffsiteStatus.SYNC_FAILED
            assert row.age_s is not None and row.age_s > 7 * 86400
            assert f"sync job pbs2/s-pull failed for vm/{vmid}: " in (row.problem or "")
        else:
            assert row.status is OffsiteStatus.OK and row.problem is None, row
            assert row.age_s is not None and row.age_s < 3 * 86400
    reasons = " ".join(pulled[int(g[3:])].problem or "" for g in failed)
    assert "locked by another operation" in reasons and "operation timed out" in reasons
    container = next(r for v, r in pulled.items() if v not in vms)
    assert container.status is OffsiteStatus.NO_JOB
    assert container.problem == f"no sync job copies ct/{container.vmid} to {TARGET}"
    # the push target on the same PBS, read directly there: the push job's rows as before
    pushed = [r for r in report.offsite if r.target == PUSH and r.jobs == ["s-offsite"]]
    assert pushed and all(r.status is not OffsiteStatus.UNKNOWN for r in pushed)
    ages = {
        (m.labels["vmid"], m.labels["target"])
        for m in report.metrics()
        if m.name == "labops_backup_offsite_age_seconds"
    }
    assert {(str(v), TARGET) for v in vms} <= ages
    found = [n for f in report.found() for n in f.names]
    assert all(f"{pulled[int(g[3:])].label} on {TARGET}" in found for g in failed)


def test_unreadable_offsite_sync_jobs_leave_its_target_unknown(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    sandbox_clean.set_faults("pbs_offsite", extra={"job_config_unreadable": ["sync"]})
    report = run(sandbox_clean, tmp_path)
    pulled = [r for r in report.offsite if r.target == TARGET]
    assert pulled and all(r.status is OffsiteStatus.UNKNOWN for r in pulled)
    assert all("sync jobs of pbs2 unreadable: " in (r.unknown or "") for r in pulled)
    assert all("unable to parse sync job config" in (r.unknown or "") for r in pulled)
    assert report.outcome is Outcome.FAILED
