"""The dead-man's switch rules, evaluated by a real vmalert against a real VictoriaMetrics."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.alerts import render
from labops.config.policies.platform import PlatformPolicy
from labops.metrics import Metric
from labops.metrics import render as render_metrics
from tests.fixtures.sshd import free_port
from tests.fixtures.tools import tool
from tests.fixtures.victoriametrics import VictoriaMetrics

VMALERT = tool("victoria-metrics", "usr/bin/vmalert")
SHIPPED = Path(__file__).resolve().parents[2] / "deployments" / "alerts" / "labops-rules.yml"


def test_shipped_rules_match_the_default_policy() -> None:
    assert SHIPPED.read_text() == render(PlatformPolicy(), "homelab")


class Alertmanager(BaseHTTPRequestHandler):
    """Receives what vmalert sends, as an Alertmanager would (POST /api/v2/alerts)."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Alertmanager.received.extend(json.loads(body or b"[]"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vmalert(victoriametrics: VictoriaMetrics, tmp_path: Path) -> Iterator[str]:
    if not os.path.exists(VMALERT):
        pytest.skip(f"{VMALERT} not installed")
    policy = PlatformPolicy(heartbeat_max_age_hours={"backups": 1, "certificates": 1})
    rules = tmp_path / "rules.yml"
    rules.write_text(render(policy, "test").replace("interval: 1m", "interval: 1s"))
    am = ThreadingHTTPServer(("127.0.0.1", free_port()), Alertmanager)
    threading.Thread(target=am.serve_forever, daemon=True).start()
    port = free_port()
    proc = subprocess.Popen(
        [
            VMALERT,
            f"-rule={rules}",
            f"-datasource.url={victoriametrics.url}",
            f"-notifier.url=http://127.0.0.1:{am.server_port}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-evaluationInterval=1s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        am.shutdown()


def firing_names(url: str) -> set[tuple[str, str]]:
    try:
        body = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return set()
    return {
        (a["name"], a["labels"].get("flow", ""))
        for a in (body.get("data") or {}).get("alerts") or []
        if a["state"] == "firing"
    }


def wait_until(url: str, want: set[tuple[str, str]], unwanted: set[tuple[str, str]]) -> set:
    """Poll vmalert until the wanted alerts fire and the unwanted do not (or 30 s pass)."""
    deadline = time.monotonic() + 30
    names: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        names = firing_names(url)
        if want <= names and not names & unwanted:
            break
        time.sleep(0.5)
    return names


def test_stale_and_silent_flows_fire_and_a_fresh_one_does_not(
    victoriametrics: VictoriaMetrics, vmalert: str
) -> None:
    now = time.time()
    samples = [
        # backups runs, but its last success was 3 h ago (limit 1 h): stale.
        Metric(
            name="labops_flow_last_run_timestamp_seconds",
            value=now,
            labels={"flow": "backups", "lab": "test"},
        ),
        Metric(
            name="labops_flow_last_success_timestamp_seconds",
            value=now - 3 * 3600,
            labels={"flow": "backups", "lab": "test"},
        ),
        # certificates of lab "test" never pushed anything: silent, even though another lab
        # on the same VictoriaMetrics runs its certificates flow.
        Metric(
            name="labops_flow_last_run_timestamp_seconds",
            value=now,
            labels={"flow": "certificates", "lab": "other"},
        ),
    ]
    httpx.post(
        f"{victoriametrics.url}/api/v1/import/prometheus",
        content=render_metrics(samples),
        timeout=10,
    ).raise_for_status()
    victoriametrics.wait_for('labops_flow_last_success_timestamp_seconds{flow="backups"}')
    names = wait_until(
        vmalert,
        want={("LabopsFlowStale", "backups"), ("LabopsFlowSilent", "certificates")},
        unwanted={("LabopsFlowSilent", "backups")},
    )
    assert ("LabopsFlowStale", "backups") in names
    assert ("LabopsFlowSilent", "certificates") in names
    assert ("LabopsFlowSilent", "backups") not in names
