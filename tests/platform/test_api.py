"""A run started through the REST API, exactly as docs/triggers.md shows with curl, completes in a
`labops serve` process (the serve-mode CLI, as a subprocess against the session server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labops import prefect_server

ROOT = Path(__file__).resolve().parents[2]


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


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    """POST like `curl --retry 5`: a 503 (server busy, e.g. SQLite locked) is retried; with an
    idempotency key the retry cannot start a second run."""
    for _ in range(5):
        response = httpx.post(url, json=body, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(1)
    return response


def deployment_id(api: str, name: str, config: Path, timeout: float = 90) -> str:
    """The id, as `curl $API/deployments/name/<flow>/<lab>` finds it, once serve registered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.get(f"{api}/deployments/name/{name}", timeout=10)
        if found.status_code == 200 and found.json()["parameters"].get("config") == str(config):
            return str(found.json()["id"])
        time.sleep(0.5)
    raise AssertionError(f"serve never registered {name} with {config}")


def test_rest_api_run_completes(
    prefect_server: prefect_server.ServerInfo, served: dict[str, Any]
) -> None:
    api = prefect_server.api_url
    dep = deployment_id(api, "housekeeping/apilab", served["config"])

    refused = post(f"{api}/deployments/{dep}/create_flow_run", {"parameters": {"dry_run": "maybe"}})
    # Parameters are checked against the flow signature: 409 Conflict naming the field.
    assert refused.status_code == 409 and "dry_run" in refused.text, refused.text

    key = f"api-test-{uuid.uuid4().hex}"
    started = time.monotonic()
    created = post(
        f"{api}/deployments/{dep}/create_flow_run",
        {"parameters": {"dry_run": True}, "tags": ["api"], "idempotency_key": key},
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["state"]["type"] == "SCHEDULED"
    assert run["parameters"] == {"config": str(served["config"]), "dry_run": True}
    again = post(
        f"{api}/deployments/{dep}/create_flow_run",
        {"parameters": {"dry_run": True}, "idempotency_key": key},
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
