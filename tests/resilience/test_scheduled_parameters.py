"""Scheduled runs must be able to start: every deployment's parameters (the config's
``platform.schedules`` merged into the spec) are accepted by its flow.

A mismatch is not caught by ``labops deploy`` or ``serve``: the run is created, then fails in
the engine (``SignatureMismatchError``) at its scheduled time, every time (the example config's
``patch-apply: {apply: true}`` did exactly that). The config now refuses such a schedule when it
loads; the test below deploys the example config itself with ``labops serve`` and runs every
deployment once with its scheduled parameters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deployments.catalog import FLOWS, load_flow
from deployments.definitions import deployment_specs
from labops.config.loader import parse_config
from labops.prefect_server import api_headers
from labops.scope import deployment_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
SPECS = {s.flow: s for s in deployment_specs(parse_config({}), "/etc/labops/labops.yaml")}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.mark.parametrize("name", list(FLOWS))
def test_default_deployment_parameters_fit_the_flow(name: str) -> None:
    flow = load_flow(name)
    flow.validate_parameters(SPECS[name].parameters)


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    """POST, retried while the SQLite-backed server answers 503 (busy): safe with an
    idempotency key."""
    for _ in range(10):
        response = httpx.post(url, json=body, headers=api_headers(), timeout=30)
        if response.status_code != 503:
            break
        time.sleep(1)
    return response


def _deployments(api: str, config: Path, timeout: float = 180) -> dict[str, dict[str, Any]]:
    """The lab's deployment of every flow (``<flow>/<lab>``), once ``labops serve`` registered
    it with this config."""
    lab = deployment_name(yaml.safe_load(config.read_text())["lab"]["name"])
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for flow in set(FLOWS) - set(found):
            response = httpx.get(
                f"{api}/deployments/name/{flow}/{lab}", headers=api_headers(), timeout=30
            )
            if response.status_code == 200 and response.json()["parameters"].get("config") == str(
                config
            ):
                found[flow] = response.json()
        if set(found) == set(FLOWS):
            return found
        time.sleep(0.5)
    raise AssertionError(f"serve registered only {sorted(found)}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_config_deployments_start_with_their_scheduled_parameters(
    prefect_server: Any, tmp_path: Path
) -> None:
    # The example's secrets (env:LABOPS_...) become files that exist while `labops serve`
    # checks the config and are gone when the runs start: every flow then stops at its first
    # line (loading the config), before it reaches any system of the example's lab. What is
    # tested is that the runner got that far with the scheduled parameters.
    secrets = tmp_path / "secrets"
    secrets.mkdir()

    def as_files(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: as_files(v) for k, v in node.items()}
        if isinstance(node, list):
            return [as_files(v) for v in node]
        if isinstance(node, str) and node.startswith("env:"):
            (secrets / node[4:]).write_text("not-a-secret")
            return f"file:{secrets / node[4:]}"
        return node

    raw = as_files(yaml.safe_load(EXAMPLE.read_text()))
    raw["lab"]["state_dir"] = str(tmp_path / "state")
    config = tmp_path / "labops.yaml"
    config.write_text(yaml.safe_dump(raw))
    api = prefect_server.api_url
    env = {**os.environ, "PREFECT_API_URL": api}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--config", str(config), "--limit", "8"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    runs: dict[str, str] = {}
    try:
        deployed = _deployments(api, config)
        shutil.rmtree(secrets)
        assert deployed["patch-apply"]["parameters"] == {"config": str(config)}
        for name, deployment in deployed.items():
            # no parameters of its own: the run gets the deployment's, as a scheduled run does
            created = _post(
                f"{api}/deployments/{deployment['id']}/create_flow_run",
                {"tags": ["scheduled-parameters-test"], "idempotency_key": f"{config}:{name}"},
            )
            assert created.status_code == 201, created.text
            runs[name] = created.json()["id"]
        states: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and len(states) < len(runs):
            for name, run_id in runs.items():
                state = httpx.get(
                    f"{api}/flow_runs/{run_id}", headers=api_headers(), timeout=30
                ).json()["state"]
                if state["type"] in FINAL:
                    states[name] = state
            time.sleep(0.5)
        tail = log.read_text(errors="replace")[-3000:]
        assert set(states) == set(runs), f"unfinished: {set(runs) - set(states)}; {tail}"
        for name, state in states.items():
            message = state.get("message") or ""
            assert "parameters" not in message.lower(), (name, message)
            # the flow itself ran: it stopped at the config's missing secrets
            assert str(secrets) in message, (name, state["type"], message, tail)
    finally:
        serve.terminate()
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
        for run_id in runs.values():
            httpx.delete(f"{api}/flow_runs/{run_id}", headers=api_headers(), timeout=30)
