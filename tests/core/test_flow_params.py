"""Every flow parameter is bounded, declared once (labops/flow_params.py) and enforced where a
run can come from: the flow's signature (Prefect's engine and UI form), the deployment's
parameter schema (the REST API answers 409), the config's schedules and the MQTT bridge."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from deployments.catalog import FLOWS, load_flow
from labops.flow_params import FLOW_PARAMETERS, MAX_HOSTS

BAD: list[tuple[str, dict[str, Any]]] = [
    ("housekeeping", {"retention_days": -1}),
    ("housekeeping", {"retention_days": 0}),
    ("backups", {"vmids": [5]}),
    ("backups", {"vmids": [1_000_000_000]}),
    ("backups", {"vmids": []}),
    ("restore-drill", {"scratch_vmid": 99}),
    ("restore-drill", {"node": "pve1; reboot"}),
    ("restore-drill", {"storage": "../etc"}),
    ("patch-check", {"hosts": ["dns", "$(reboot)"]}),
    ("patch-apply", {"hosts": ["-oProxyCommand=x"]}),
    ("patch-apply", {"hosts": [f"h{i}" for i in range(MAX_HOSTS + 1)]}),
    ("security-digest", {"period": "hourly"}),
    ("certificates", {"config": "/etc/labops.yaml\n--evil"}),
]


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    drop = {"title", "position", "description"}
    return {k: {kk: vv for kk, vv in v.items() if kk not in drop} for k, v in properties.items()}


@pytest.mark.parametrize("name", list(FLOWS))
def test_signature_is_the_core_declaration(name: str) -> None:
    """Prefect's schema of the flow (what the UI form and the server enforce) equals the core's:
    same names, order, types, bounds and defaults."""
    from prefect.utilities.callables import parameter_schema

    flow_schema = parameter_schema(load_flow(name)).model_dump()["properties"]
    core_schema = FLOW_PARAMETERS[name].model_json_schema()["properties"]
    assert list(flow_schema) == list(core_schema)
    assert _schema(flow_schema) == _schema(core_schema)


@pytest.mark.parametrize(("name", "params"), BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_engine_refuses_out_of_bounds(name: str, params: dict[str, Any]) -> None:
    """What the engine checks before a flow runs, however the run was created (even with
    `enforce_parameter_schema: false` in the request)."""
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError):
        load_flow(name).validate_parameters(params)


def test_rest_api_refuses_out_of_bounds(prefect_server: Any, tmp_path: Any) -> None:
    """`POST /deployments/{id}/create_flow_run` with a parameter out of bounds: 409, no run."""
    from deployments.definitions import deployment_specs, runner_deployments
    from labops.config.loader import parse_config
    from labops.prefect_server import api_headers

    path = tmp_path / "labops.yaml"
    path.write_text("lab: {name: bounds}\n")
    names = sorted({name for name, _ in BAD})
    specs = [s for s in deployment_specs(parse_config({}), path) if s.flow in names]
    ids = {d.flow_name: str(d.apply()) for d in runner_deployments(specs)}
    api = prefect_server.api_url
    created: list[str] = []
    try:
        for name, params in BAD:
            response = httpx.post(
                f"{api}/deployments/{ids[name]}/create_flow_run",
                json={"parameters": params, "idempotency_key": uuid.uuid4().hex},
                headers=api_headers(),
                timeout=30,
            )
            if response.status_code in (200, 201):
                created.append(response.json()["id"])
            assert response.status_code == 409, (name, params, response.text)
            assert "Validation failed for field" in response.text, response.text
        ok = httpx.post(
            f"{api}/deployments/{ids['housekeeping']}/create_flow_run",
            json={"parameters": {"retention_days": 1, "dry_run": True}},
            headers=api_headers(),
            timeout=30,
        )
        assert ok.status_code == 201, ok.text
        created.append(ok.json()["id"])
    finally:
        for run_id in created:  # never left for another test's serve process
            httpx.delete(f"{api}/flow_runs/{run_id}", headers=api_headers(), timeout=30)
