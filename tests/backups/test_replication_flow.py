"""The backups flow's off-site step with PVE storage replication on the sandbox: beside the PBS
sync rows, each replicated guest gets a row per job on ``replication:<node>`` in the report, its
table, markdown and metrics; the failing and the disabled job are findings; a node whose
replication state cannot be read leaves its guests' rows could-not-check and the run failed.
Dry runs: nothing in the lab changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labops.backups.offsite import OffsiteStatus
from tests.backups.test_flow import config, report_of
from tests.backups.test_offsite_flow import TARGET
from tests.fixtures.sandbox import SandboxHandle


def replication_config(sandbox: SandboxHandle, directory: Path) -> str:
    return config(sandbox, directory, offsite={"rpo": "7d", "targets": [TARGET]})


def jobs_of(sandbox: SandboxHandle) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in sandbox.pve().cluster.replication.get()}


def test_replication_rows_in_the_report_table_markdown_and_metrics(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups

    jobs = jobs_of(sandbox_clean)
    report = report_of(
        backups(config=replication_config(sandbox_clean, tmp_path), dry_run=True, return_state=True)
    )
    rows = {r.jobs[0]: r for r in report.offsite if r.target.startswith("replication:")}
    assert set(rows) == set(jobs)
    assert {r.target for r in report.offsite} == {TARGET} | {
        f"replication:{j['target']}" for j in jobs.values()
    }
    for job_id, row in rows.items():
        assert row.vmid == jobs[job_id]["guest"] and row.rpo_s == 7 * 86400

    ok = next(r for r in rows.values() if r.status is OffsiteStatus.OK)
    failing = next(r for r in rows.values() if r.status is OffsiteStatus.SYNC_FAILED)
    disabled = next(r for r in rows.values() if r.status is OffsiteStatus.DISABLED)
    assert ok.problem is None and ok.age_s is not None and ok.age_s < 3600
    assert "exit code 255" in (failing.problem or "") and failing.age_s is not None
    assert f"replication job {disabled.jobs[0]}" in (disabled.problem or "")
    assert "is disabled" in (disabled.problem or "")

    # findings name the failing and the disabled guest on their replication targets
    found = [n for f in report.found() for n in f.names]
    assert f"{failing.label} on {failing.target}" in found
    assert f"{disabled.label} on {disabled.target}" in found
    assert f"{ok.label} on {ok.target}" not in found

    table = {r["guest"]: r for r in report.table()}
    assert table[f"{ok.vmid} {ok.name} off-site {ok.target}"]["check"] == "ok"
    assert table[f"{failing.vmid} {failing.name} off-site {failing.target}"]["check"] == "found"
    markdown = report.markdown()
    assert f"| {ok.target} |" in markdown and ok.jobs[0] in markdown

    ages = {
        (m.labels["vmid"], m.labels["target"]): m.value
        for m in report.metrics()
        if m.name == "labops_backup_offsite_age_seconds"
    }
    assert ages[(str(ok.vmid), ok.target)] == ok.age_s
    problems = {
        (m.labels["vmid"], m.labels["target"]): m.value
        for m in report.metrics()
        if m.name == "labops_backup_offsite_problem"
    }
    assert problems[(str(ok.vmid), ok.target)] == 0.0
    assert problems[(str(failing.vmid), failing.target)] == 1.0
    assert problems[(str(disabled.vmid), disabled.target)] == 1.0


def test_unreadable_replication_state_is_could_not_check_never_fresh(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups

    jobs = jobs_of(sandbox_clean)
    sandbox_clean.set_faults("pve", extra={"replication_unreadable": True})
    state = backups(
        config=replication_config(sandbox_clean, tmp_path), dry_run=True, return_state=True
    )
    report = report_of(state)

    assert state.is_failed()  # could not check: the run cannot be clean
    rows = [r for r in report.offsite if r.target.startswith("replication:")]
    assert {r.jobs[0] for r in rows} == set(jobs)
    assert all(r.status is OffsiteStatus.UNKNOWN for r in rows)
    assert all(r.age_s is None and r.newest is None and r.problem is None for r in rows)
    unchecked = [u for u in report.unchecked() if "replication:" in u]
    assert unchecked and all("pve-replication-state.json" in u for u in unchecked)
    assert all(report.offsite_key(r) in report.offsite_since for r in rows)
    ages = [
        m
        for m in report.metrics()
        if m.name == "labops_backup_offsite_age_seconds" and "replication:" in m.labels["target"]
    ]
    assert not ages
    unknown = {
        m.labels["target"]
        for m in report.metrics()
        if m.name == "labops_backup_offsite_unknown" and m.value == 1.0
    }
    assert {r.target for r in rows} <= unknown
    table = {r["guest"]: r for r in report.table()}
    one = rows[0]
    assert table[f"{one.vmid} {one.name} off-site {one.target}"]["check"] == "unknown"


def test_replication_turned_off_adds_no_rows(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups

    cfg = config(
        sandbox_clean, tmp_path, offsite={"rpo": "7d", "targets": [TARGET], "replication": False}
    )
    report = report_of(backups(config=cfg, dry_run=True, return_state=True))
    assert report.offsite and {r.target for r in report.offsite} == {TARGET}


def test_unreadable_replication_jobs_fail_the_run_without_rows(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    """Which guests replicate is unknown: a failure of the run, no made-up rows; the PBS sync
    rows are still there."""
    from flows.backups import backups

    sandbox_clean.set_faults("pve", extra={"replication_unreadable": ["cluster"]})
    state = backups(
        config=replication_config(sandbox_clean, tmp_path), dry_run=True, return_state=True
    )
    report = report_of(state)

    assert state.is_failed()
    (failure,) = [f for f in report.failures if f.entity == "replication jobs"]
    assert "/etc/pve/replication.cfg" in failure.reason and failure.system == "proxmox"
    assert not [r for r in report.offsite if r.target.startswith("replication:")]
    assert {r.target for r in report.offsite} == {TARGET}


def test_a_failing_jobs_reason_comes_from_its_log(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    """The node's status keeps only the failed command (``... failed: exit code 255``); the
    job's log says why (the target's host key): the row, a finding, carries both."""
    from flows.backups import backups

    report = report_of(
        backups(config=replication_config(sandbox_clean, tmp_path), dry_run=True, return_state=True)
    )
    failing = next(
        r
        for r in report.offsite
        if r.status is OffsiteStatus.SYNC_FAILED and r.target.startswith("replication:")
    )
    job = failing.jobs[0]
    problem = failing.problem or ""
    assert f"replication job {job} to pve4 failed 96 time(s) in a row: " in problem
    assert "Host key verification failed. (command 'set -o pipefail" in problem
    assert problem.endswith("failed: exit code 255)")
    assert f"{failing.label} on {failing.target}" in [n for f in report.found() for n in f.names]
    assert "Host key verification failed." in report.markdown()
