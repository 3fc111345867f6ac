"""A run started through the REST API, exactly as docs/triggers.md shows with curl, completes in a
`labops serve` process (the serve-mode CLI, as a subprocess against the session server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labops import prefect_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(prefect_server: prefect_server.ServerInfo, tmp_path: Path) -> Iterator[dict[str, Any]]:
    path = tmp_path / "labops.yaml"
    path.write_text(
        yaml.safe_dump({"lab": {"name": "apilab", "state_dir": str(tmp_path / "state")}})
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--config", str(path),
         "--only", "housekeeping", "--limit", "1"],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect_server.api_url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield {"config": path, "log": tmp_path / "serve.log", "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def deployment_id(api: str, name: str, config: Path, timeout: float = 90) -> str:
    """The id, as `curl -X POST $API/deployments/filter` finds it, once serve registered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.post(
            f"{api}/deployments/filter",
            json={"deployments": {"name": {"any_": [name]}}, "limit": 1},
            timeout=10,
        )
        found.raise_for_status()
        if found.json() and found.json()[0]["parameters"].get("config") == str(config):
            return str(found.json()[0]["id"])
        time.sleep(0.5)
    raise AssertionError(f"serve never registered {name} with {config}")


def test_rest_api_run_completes(
    prefect_server: prefect_server.ServerInfo, served: dict[str, Any]
) -> None:
    api = prefect_server.api_url
    dep = deployment_id(api, "housekeeping", served["config"])

    refused = httpx.post(
        f"{api}/deployments/{dep}/create_flow_run",
        json={"parameters": {"dry_run": "maybe"}},
        timeout=10,
    )
    # Parameters are checked against the flow signature: 409 Conflict naming the field.
    assert refused.status_code == 409 and "dry_run" in refused.text, refused.text

    started = time.monotonic()
    created = httpx.post(
        f"{api}/deployments/{dep}/create_flow_run",
        json={"parameters": {"dry_run": True}, "tags": ["api"], "idempotency_key": "api-test-1"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["state"]["type"] == "SCHEDULED"
    assert run["parameters"] == {"config": str(served["config"]), "dry_run": True}
    again = httpx.post(
        f"{api}/deployments/{dep}/create_flow_run",
        json={"parameters": {"dry_run": True}, "idempotency_key": "api-test-1"},
        timeout=10,
    )
    assert again.json()["id"] == run["id"]  # a retried POST starts nothing new

    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120
    state = ""
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state"]["type"]
        seen.setdefault(state, time.monotonic() - started)
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(0.2)
    log = served["log"].read_text(errors="replace")[-3000:]
    assert state == "COMPLETED", f"{seen}; serve log: {log}"
    print(
        "API run: running after {:.1f} s, completed after {:.1f} s".format(
            seen.get("RUNNING", float("nan")), seen["COMPLETED"]
        )
    )
    assert seen["COMPLETED"] < 90
