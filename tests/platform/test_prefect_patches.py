"""labops' heartbeat fix (labops.prefect_patches) over a real Prefect server: installed by
importing the flows, heartbeats still reach the server (the zombie-run automation lives on them),
and the heartbeat thread is gone the moment the flow run returns instead of up to a second later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

import flows  # noqa: F401  (installs the fix, as every labops flow module does)
from labops import prefect_server as server


def heartbeat_events(api_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    resp = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    resp.raise_for_status()
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


def test_the_fix_is_installed_for_this_prefect() -> None:
    import prefect.flow_engine as engine

    from labops.prefect_patches import _send_heartbeats, apply

    # False here means a Prefect upgrade changed the engine: re-check the fix against it
    assert apply() is True
    assert engine._send_heartbeats is _send_heartbeats


def test_heartbeats_reach_the_server_and_stop_with_the_run(
    prefect_server: server.ServerInfo,
) -> None:
    from prefect import flow
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    during: list[str] = []

    @flow(name="heartbeat-fix")
    def short() -> str:
        during.extend(t.name for t in threading.enumerate())
        return str(flow_run.id)

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        run_id = short()
    assert "flow-run-heartbeat" in during, "the run's heartbeat thread is not labops' one"
    alive_after = [t.name for t in threading.enumerate() if t.name == "flow-run-heartbeat"]
    assert alive_after == [], "the heartbeat thread outlived its flow run"

    deadline = time.monotonic() + 20
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not events:
        events = heartbeat_events(prefect_server.api_url, run_id)
        time.sleep(0.5)
    assert len(events) == 1, events  # one at the start; the run ended long before the next
