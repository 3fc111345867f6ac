"""Clock edge: a deployment scheduled in the lab's timezone runs once per local day across both
daylight-saving changes (Europe/Berlin, 2027: spring forward on 28 March 02:00 -> 03:00, fall back
on 31 October 03:00 -> 02:00), so the 02:30 backup neither disappears nor runs twice.

The schedule is built the way labops builds every deployment (config -> ``deployment_specs`` ->
``_deploy_kwargs``: ``prefect.schedules.Cron(cron, timezone=lab.timezone)``), applied to the real
session server, and the server itself generates the runs for those nights.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from prefect import flow
from prefect.deployments.runner import RunnerDeployment

from deployments.definitions import _deploy_kwargs, deployment_specs
from labops.config.loader import parse_config

BERLIN = ZoneInfo("Europe/Berlin")
SPRING = date(2027, 3, 28)
AUTUMN = date(2027, 10, 31)


@flow(name="labops-dst-probe")
def dst_probe() -> None:
    """Never run: only its deployment's schedule is read."""


def _runs_per_local_day(api_url: str, deployment_id: str, around: date) -> Counter[date]:
    start = datetime.combine(around - timedelta(days=2), datetime.min.time(), BERLIN)
    end = datetime.combine(around + timedelta(days=3), datetime.min.time(), BERLIN)
    window = {
        "start_time": start.astimezone(UTC).isoformat(),
        "end_time": end.astimezone(UTC).isoformat(),
        # the server stops at 3 runs / 1 hour unless asked for the whole window
        "min_runs": 50,
        "max_runs": 50,
        "min_time": (end - start).total_seconds(),
    }
    with httpx.Client(base_url=api_url, timeout=30) as http:
        # A loaded SQLite server answers 503 (SQLITE_BUSY) now and then; Prefect's own client
        # retries it, and scheduling the same window again creates nothing twice.
        for _ in range(10):
            scheduled = http.post(f"/deployments/{deployment_id}/schedule", json=window)
            if scheduled.status_code != 503:
                break
            time.sleep(1)
        scheduled.raise_for_status()
        runs = http.post(
            "/flow_runs/filter",
            json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 200},
        ).json()
    times = [datetime.fromisoformat(r["expected_start_time"]).astimezone(BERLIN) for r in runs]
    return Counter(t.date() for t in times if start <= t < end)


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 2 * * *"])
def test_daily_run_happens_once_on_both_dst_nights(prefect_server: Any, cron: str) -> None:
    config = parse_config(
        {
            "lab": {"timezone": "Europe/Berlin"},
            "platform": {"schedules": {"backups": {"cron": cron}}},
        }
    )
    spec = next(
        s for s in deployment_specs(config, "/nonexistent/labops.yaml") if s.flow == "backups"
    )
    kwargs = _deploy_kwargs(spec)
    kwargs["name"] = f"dst-{uuid.uuid4().hex[:8]}"
    kwargs.pop("concurrency_limit", None)
    deployment = cast(RunnerDeployment, dst_probe.to_deployment(**kwargs))
    deployment_id = str(deployment.apply())
    try:
        for night in (SPRING, AUTUMN):
            per_day = _runs_per_local_day(prefect_server.api_url, deployment_id, night)
            days = [night + timedelta(days=d) for d in range(-2, 3)]
            assert [per_day.get(d, 0) for d in days] == [1] * 5, (
                f"{cron} Europe/Berlin around {night}: runs per local day {dict(per_day)}"
            )
    finally:
        with httpx.Client(base_url=prefect_server.api_url, timeout=30) as http:
            http.delete(f"/deployments/{deployment_id}")
