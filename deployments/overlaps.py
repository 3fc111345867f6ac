"""Warn when the configured schedules of lab-changing flows can overlap.

The start times come from Prefect's own cron schedule (the one its scheduler uses, DST rules
included), a year ahead; how long a run lasts is assumed (``platform.assumed_run_minutes``).
Backups and patch apply never change the lab at once anyway (they share a concurrency slot, one
waits for the other); the warning says a schedule makes them wait.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from labops.config import LabopsConfig
from labops.config.policies.platform import run_minutes
from labops.flow_params import CHANGES_LAB
from labops.schedules import Planned, overlaps

HORIZON = timedelta(days=366)
"""How far ahead start times are compared: a year holds every weekday/month-day combination."""


def lab_changing(config: LabopsConfig) -> set[str]:
    """Deployments whose runs change guests or nodes; certificates only when it renews."""
    names = set(CHANGES_LAB)
    if config.certificates.renewal.enabled:
        names.add("certificates")
    return names


def start_times(cron: str, timezone: str, start: datetime) -> list[datetime]:
    """When Prefect's scheduler would start runs of ``cron`` (at most 1000) over the horizon."""
    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=cron, timezone=timezone)
    # the synchronous generator behind the async get_dates (Prefect is pinned: 3.9.1)
    return list(schedule._get_dates_generator(n=1000, start=start, end=start + HORIZON))


def schedule_warnings(config: LabopsConfig, start: datetime | None = None) -> list[str]:
    """One line per pair of lab-changing schedules that can overlap (and per schedule that
    overlaps itself); empty when none do."""
    start = start or datetime.now(UTC)
    timezone = config.lab.timezone
    planned = []
    for name in sorted(lab_changing(config)):
        schedule = config.platform.schedules.get(name)  # type: ignore[call-overload]
        if schedule is None or not schedule.enabled:
            continue
        planned.append(
            Planned(
                name=name,
                cron=schedule.cron,
                minutes=run_minutes(config.platform, name),
                starts=start_times(schedule.cron, timezone, start),
            )
        )
    return [found.line(timezone) for found in overlaps(planned)]
