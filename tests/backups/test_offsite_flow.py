"""The backups flow's off-site step on the sandbox: the PBS's push sync job to pbs2 ended
"sync failed with some errors." for two container groups, excludes ct/100 and covers no VM; the
flow reads the job, its task log and pbs2's datastore (namespace ``home``) through the PBS, and
reports each watched guest on that target. Dry runs: nothing in the lab changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labops.backups.offsite import OffsiteStatus
from tests.backups.test_flow import config, report_of
from tests.fixtures.sandbox import SandboxHandle

TARGET = "pbs2:offsite/home"


def remote_copies(sandbox: SandboxHandle) -> dict[str, int]:
    """Group -> newest copy's backup time on pbs2, as the PBS lists them."""
    groups = sandbox.pbs().config.remote("pbs2").scan("offsite").groups.get(namespace="home")
    return {f"{g['backup-type']}/{g['backup-id']}": int(g["last-backup"]) for g in groups}


def offsite_config(sandbox: SandboxHandle, directory: Path) -> str:
    """PBS sync copies alone (the replication rows have their own tests)."""
    offsite = {"rpo": "7d", "targets": [TARGET], "replication": False}
    return config(sandbox, directory, offsite=offsite)


def test_offsite_rows_name_partial_failures_uncovered_guests_and_fresh_copies(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups

    seed = sandbox_clean.state()["services"]["pbs"]["seed"]
    failed, stale = seed["sync_failed_groups"], set(seed["stale_vmids"])
    copies = remote_copies(sandbox_clean)

    cfg = offsite_config(sandbox_clean, tmp_path)
    report = report_of(backups(config=cfg, dry_run=True, return_state=True))
    rows = {r.vmid: r for r in report.offsite}
    watched = {r.vmid for r in report.guests if r.watched}
    assert set(rows) == watched and {r.target for r in report.offsite} == {TARGET}

    # the partial run names each failed group's guest; its newest copy is eight days old
    for group in failed:
        row = rows[int(group.split("/")[1])]
        assert row.status is OffsiteStatus.SYNC_FAILED, row
        assert f"sync job s-offsite failed for {group}" in (row.problem or "")
        assert "off-site RPO 7d" in (row.problem or "")
    found = " ".join(f.what for f in report.found())
    assert "without a fresh off-site copy" in found and rows[int(failed[0][3:])].label in found

    # excluded by the job's filter, and a VM (the job copies containers only)
    assert rows[100].status is OffsiteStatus.NO_JOB
    assert rows[100].problem == f"no sync job copies ct/100 to {TARGET}"
    vm = next(r for r in report.guests if r.watched and f"vm/{r.vmid}" not in copies)
    assert rows[vm.vmid].status is OffsiteStatus.NO_JOB

    # a container the last run synced: fresh, its age the metric's value
    fresh = next(
        r
        for vmid, r in sorted(rows.items())
        if f"ct/{vmid}" in copies and f"ct/{vmid}" not in failed and vmid not in stale
    )
    assert fresh.status is OffsiteStatus.OK and fresh.problem is None and fresh.unknown is None
    assert fresh.newest == copies[f"ct/{fresh.vmid}"]
    assert fresh.age_s is not None and fresh.age_s < 7 * 86400
    metric = next(
        m
        for m in report.metrics()
        if m.name == "labops_backup_offsite_age_seconds" and m.labels["vmid"] == str(fresh.vmid)
    )
    assert metric.value == fresh.age_s and metric.labels["target"] == TARGET
    assert not report.unchecked()
    table = {r["guest"]: r for r in report.table()}
    assert table[f"{fresh.vmid} {fresh.name} off-site {TARGET}"]["check"] == "ok"
    assert "## Off-site copies" in report.markdown()


def test_an_unreachable_offsite_pbs_is_could_not_check_never_fresh(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups

    failed = sandbox_clean.state()["services"]["pbs"]["seed"]["sync_failed_groups"]
    sandbox_clean.set_faults("pbs", extra={"remote_down": ["pbs2"]})
    state = backups(config=offsite_config(sandbox_clean, tmp_path), dry_run=True, return_state=True)
    report = report_of(state)

    assert state.is_failed()  # could not check: the run cannot be clean
    assert report.unchecked() and "Connection refused" in report.unchecked()[0]
    rows = {r.vmid: r for r in report.offsite}
    covered = [r for r in rows.values() if r.jobs and f"ct/{r.vmid}" not in failed]
    assert covered and all(r.status is OffsiteStatus.UNKNOWN for r in covered)
    assert all(r.age_s is None and r.problem is None for r in covered)
    # what is known without the target stays known: the failed groups, the uncovered guests
    assert all(rows[int(g[3:])].status is OffsiteStatus.SYNC_FAILED for g in failed)
    assert rows[100].status is OffsiteStatus.NO_JOB
    ages = [m for m in report.metrics() if m.name == "labops_backup_offsite_age_seconds"]
    assert not ages
    table = {r["guest"]: r for r in report.table()}
    one = covered[0]
    assert table[f"{one.vmid} {one.name}"]["check"] != "unknown"  # its own backups were listed
    assert table[f"{one.vmid} {one.name} off-site {TARGET}"]["check"] == "unknown"
