"""Schedules of lab-changing flows: the defaults do not overlap; `labops deploy` and `serve`
warn, one line per pair, when configured ones can (tests/platform/test_deployments.py checks the
line in `labops deploy`'s output)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from deployments.overlaps import schedule_warnings
from labops.config.loader import parse_config
from labops.schedules import Planned, overlaps

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday


def cfg(**platform: Any) -> Any:
    return parse_config({"lab": {"timezone": "Europe/Berlin"}, "platform": platform})


def test_overlap_planner_half_open_runs() -> None:
    t0 = START
    a = Planned(name="a", cron="-", minutes=60, starts=[t0, t0 + timedelta(days=1)])
    touching = Planned(name="b", cron="-", minutes=30, starts=[t0 + timedelta(minutes=60)])
    inside = Planned(name="c", cron="-", minutes=30, starts=[t0 + timedelta(days=1, minutes=59)])
    found = overlaps([a, touching, inside])
    assert [(o.first.name, o.second.name, o.at) for o in found] == [
        ("a", "c", t0 + timedelta(days=1, minutes=59))
    ]
    again = Planned(name="d", cron="-", minutes=90, starts=[t0, t0 + timedelta(hours=1)])
    assert [(o.first.name, o.second.name) for o in overlaps([again])] == [("d", "d")]


def test_defaults_and_example_do_not_overlap() -> None:
    assert schedule_warnings(parse_config({}), START) == []
    example = parse_config(yaml.safe_load((ROOT / "config.example.yaml").read_text()))
    assert schedule_warnings(example, START) == []


def test_the_old_defaults_warn() -> None:
    """backups 02:30 (~2 h) and patch apply Wednesday 03:00 overlapped every Wednesday; and on
    the day DST starts, Prefect moves the 02:30 that does not exist to 03:30, into the Sunday
    05:00 restore drill."""
    old = cfg(schedules={"backups": {"cron": "30 2 * * *"}})
    assert schedule_warnings(old, START) == [
        "warning: schedules of backups (30 2 * * *, ~120 min) and patch-apply (0 3 * * 3, "
        "~120 min) overlap, e.g. Wed 2026-12-02 03:00 (Europe/Berlin): move one, or set "
        "platform.assumed_run_minutes if runs are shorter",
        "warning: schedules of backups (30 2 * * *, ~120 min) and restore-drill (0 5 * * 0, "
        "~60 min) overlap, e.g. Sun 2027-03-28 05:00 (Europe/Berlin): move one, or set "
        "platform.assumed_run_minutes if runs are shorter",
    ]
    # runs known to be short: no overlap
    short = cfg(schedules={"backups": {"cron": "30 2 * * *"}}, assumed_run_minutes={"backups": 30})
    assert schedule_warnings(short, START) == []
    # a disabled schedule never runs
    off = cfg(schedules={"backups": {"cron": "30 2 * * *", "enabled": False}})
    assert schedule_warnings(off, START) == []


def test_only_lab_changing_schedules_count() -> None:
    # housekeeping and the digest at the same minute as backups: they do not change the lab
    same = cfg(
        schedules={
            "backups": {"cron": "0 1 * * *"},
            "housekeeping": {"cron": "0 1 * * *"},
            "security-digest": {"cron": "0 1 * * *"},
            "certificates": {"cron": "0 1 * * *"},
        }
    )
    assert schedule_warnings(same, START) == []
    renewing = parse_config(
        {
            "certificates": {"renewal": {"enabled": True}},
            "platform": {"schedules": {"certificates": {"cron": "0 1 * * *"},
                                       "backups": {"cron": "0 1 * * *"}}},
        }
    )  # fmt: skip
    lines = schedule_warnings(renewing, START)
    assert len(lines) == 1 and "backups" in lines[0] and "certificates" in lines[0]


def test_a_schedule_that_overlaps_itself() -> None:
    hourly = cfg(schedules={"backups": {"cron": "0 * * * *"}})
    lines = schedule_warnings(hourly, START)
    assert lines[0].startswith("warning: schedule of backups (0 * * * *) starts again before")
