"""The sandbox's PVE API against the real API schema (pve-docs apidata, PVE 9.x).

Every served route+method must exist in the schema; list/status responses carry only declared
fields (plus the few the real implementation adds beyond its schema, cited below) with the
declared types, booleans as 0/1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer.tools import Tasks

from sandbox.pve.api import router
from sandbox.pve.params import PARAMS_FILE, extract
from tests.fixtures.sandbox import SandboxHandle

REFERENCE = (Path(__file__).resolve().parents[2] / "../shared/reference").resolve()
SCHEMA_FILE = REFERENCE / "pve-api-schema.json"

# Fields real PVE returns beyond its own schema (homelab-api-facts.md):
# storage content adds content/subtype (pve-storage Storage.pm volume_list, §1.8);
# task status adds tokenid for token-owned tasks (pve-manager Tasks.pm $convert_token_task, §1.2);
# backup jobs carry type "vzdump" from jobs.cfg (pve-manager API2/Backup.pm, §1.9);
# replication status items are the job's config plus the node's kept state (pve-manager
# API2/Replication.pm status, pve-guest-common ReplicationState.pm job_status).
IMPLEMENTATION_EXTRAS = {
    "/cluster/backup": {"type"},
    "/nodes/{node}/replication": {
        "guest",
        "jobnum",
        "type",
        "target",
        "schedule",
        "source",
        "disable",
        "rate",
        "comment",
        "vmtype",
        "next_sync",
        "last_sync",
        "last_try",
        "fail_count",
        "error",
        "duration",
    },
    "/nodes/{node}/storage/{storage}/content": {"content", "subtype"},
    "/nodes/{node}/tasks/{upid}/status": {"tokenid"},
}

pytestmark = pytest.mark.skipif(
    not SCHEMA_FILE.exists(), reason=f"PVE API schema not found at {SCHEMA_FILE}"
)


@pytest.fixture
def sb(private_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """This module's own lab (it changes the lab); faults reset after each test."""
    try:
        yield private_sandbox
    finally:
        private_sandbox.reset_faults()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return data


def test_every_route_is_in_the_schema(schema: dict[str, Any]) -> None:
    routes = router.routes()
    assert len(routes) > 40
    missing = [f"{m} {p}" for m, p in routes if m not in schema.get(p, {})]
    assert not missing, f"served but not in the PVE API schema: {missing}"


def test_param_table_in_sync_with_schema(schema: dict[str, Any]) -> None:
    """sandbox/pve/params.json is generated from the schema for exactly the served routes."""
    expected = extract(schema, router.routes())
    assert set(expected) == {f"{m} {p}" for m, p in router.routes()}
    assert json.loads(PARAMS_FILE.read_text()) == expected, (
        "regenerate: python -m sb.pve.params <pve-api-schema.json>"
    )


def _check_type(value: Any, decl: dict[str, Any]) -> bool:
    kind = decl.get("type")
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return value in (0, 1) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _props(schema: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    returns = schema[path]["GET"]["returns"]
    if returns.get("type") == "array":
        return returns["items"].get("properties", {}), "array"
    return returns.get("properties", {}), "object"


def _assert_matches(schema: dict[str, Any], path: str, data: Any) -> None:
    props, shape = _props(schema, path)
    items = data if shape == "array" else [data]
    assert items, f"{path}: nothing to check"
    extras = IMPLEMENTATION_EXTRAS.get(path, set())
    required = {k for k, v in props.items() if not v.get("optional")}
    for item in items:
        undeclared = set(item) - set(props) - extras
        assert not undeclared, f"{path}: undeclared fields {undeclared} in {item}"
        for key, value in item.items():
            if key in props:
                assert _check_type(value, props[key]), (
                    f"{path}: {key}={value!r} is not {props[key].get('type')}"
                )
        assert required <= set(item), f"{path}: missing required {required - set(item)}"


def test_responses_match_schema(sb: SandboxHandle, schema: dict[str, Any]) -> None:
    pve = sb.pve()
    _assert_matches(schema, "/nodes", pve.nodes.get())
    _assert_matches(schema, "/nodes/{node}/lxc", pve.nodes("pve1").lxc.get())
    _assert_matches(
        schema, "/nodes/{node}/qemu", pve.nodes("pve1").qemu.get() + pve.nodes("pve2").qemu.get()
    )
    _assert_matches(schema, "/cluster/resources", pve.cluster.resources.get())
    _assert_matches(
        schema,
        "/nodes/{node}/lxc/{vmid}/status/current",
        pve.nodes("pve1").lxc(100).status.current.get(),
    )
    _assert_matches(schema, "/nodes/{node}/storage", pve.nodes("pve1").storage.get())
    for storage in ("pbs", "local"):
        _assert_matches(
            schema,
            "/nodes/{node}/storage/{storage}/content",
            pve.nodes("pve1").storage(storage).content.get(content="backup"),
        )
    _assert_matches(schema, "/nodes/{node}/apt/update", pve.nodes("pve1").apt.update.get())
    _assert_matches(
        schema, "/nodes/{node}/certificates/info", pve.nodes("pve1").certificates.info.get()
    )
    _assert_matches(schema, "/cluster/backup", pve.cluster.backup.get())
    _assert_matches(schema, "/cluster/replication", pve.cluster.replication.get())
    _assert_matches(
        schema,
        "/nodes/{node}/replication",
        pve.nodes("pve1").replication.get() + pve.nodes("pve2").replication.get(),
    )
    _assert_matches(
        schema, "/cluster/backup-info/not-backed-up", pve("cluster/backup-info/not-backed-up").get()
    )
    upid = pve.nodes("pve1").vzdump.post(vmid="100", storage="pbs")
    _assert_matches(
        schema, "/nodes/{node}/tasks/{upid}/status", pve.nodes("pve1").tasks(upid).status.get()
    )  # running: no exitstatus
    Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    _assert_matches(
        schema, "/nodes/{node}/tasks/{upid}/status", pve.nodes("pve1").tasks(upid).status.get()
    )
    _assert_matches(schema, "/nodes/{node}/tasks", pve.nodes("pve1").tasks.get())
    _assert_matches(
        schema, "/nodes/{node}/tasks/{upid}/log", pve.nodes("pve1").tasks(upid).log.get()
    )
