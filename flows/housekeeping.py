"""Housekeeping of the Prefect server labops runs on.

Runbook: prune this lab's flow runs (with their artifacts and logs) older than the retention
period -> release this lab's concurrency slots while none of its runs is running -> make sure
the zombie-run automation exists (a run whose heartbeats stop is marked Crashed, so a dead worker
never leaves runs Running forever). Other labs sharing the server keep their runs and slots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from prefect import flow
from prefect.states import State

from blocks.context import LabContext
from labops.flow_params import ConfigPath, RetentionDays
from labops.housekeeping import HousekeepingReport
from tasks.prefect_admin import ensure_zombie_automation, prune_flow_runs, release_orphan_slots
from tasks.publish import publish_report


@flow(name="housekeeping", log_prints=False)
def housekeeping(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    retention_days: RetentionDays | None = None,
) -> HousekeepingReport | State:
    """CHANGES the Prefect server (not the lab): prune this lab's old runs, release its orphan
    concurrency slots, ensure the zombie-run automation. Other labs' runs and slots stay.

    Args:
        config: Path of the labops config (default: LABOPS_CONFIG or ./labops.yaml).
        dry_run: Count what would be pruned or released; change nothing.
        retention_days: Override `platform.retention_days` for this run.
    """
    ctx = LabContext.load(config)
    policy = ctx.config.platform
    lab = ctx.config.lab.name
    days = retention_days or policy.retention_days
    report = HousekeepingReport(lab=lab, dry_run=dry_run, retention_days=days)
    # 1. Prune this lab's runs (with their artifacts and logs) older than the retention period.
    pruned = prune_flow_runs(datetime.now(UTC) - timedelta(days=days), dry_run, lab)
    report.flow_runs_pruned = pruned.flow_runs
    report.artifacts_pruned = pruned.artifacts
    # 2. Release this lab's concurrency slots that no running run holds.
    report.slots_released = release_orphan_slots(lab, dry_run=dry_run)
    # 3. Make sure a run whose heartbeats stop is marked Crashed.
    report.zombie_automation = ensure_zombie_automation(policy.zombie_after_seconds, dry_run)
    return cast("HousekeepingReport | State", publish_report(report, ctx.delivery()))
