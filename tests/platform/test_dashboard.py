"""The Grafana dashboard shipped in deploy/grafana/labops.json: importable with a `${DS}`
datasource input, and every panel's query answering with at least one series once the operations
have run on the sandbox and pushed to a real VictoriaMetrics."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "labops.json"
DS = {"type": "prometheus", "uid": "${DS}"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query panel."""
    return [
        (p["title"], t["expr"])
        for p in dashboard()["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


def test_the_dashboard_is_importable_with_a_datasource_input() -> None:
    data = dashboard()
    assert data["__inputs"] == [
        {
            "name": "DS",
            "label": "VictoriaMetrics",
            "description": data["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert data["uid"] and data["title"] and "id" not in data  # a fresh import, not a copy
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    (lab,) = data["templating"]["list"]
    assert lab["name"] == "lab" and lab["datasource"] == DS
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DS for t in panel["targets"])
        assert panel["description"], panel["title"]
    # what the issue asks for, each in some panel's query
    exprs = " ".join(e for _, e in queries())
    for metric in (
        "labops_backup_age_seconds",
        "labops_backup_rpo_seconds",
        "labops_cert_not_after_timestamp_seconds",
        "labops_patch_pending_updates",
        "labops_patch_security_updates",
        "labops_flow_last_run_timestamp_seconds",
        "labops_flow_last_success_timestamp_seconds",
        "labops_digest_source_findings",
    ):
        assert metric in exprs, metric
    # every metric a panel reads is documented
    documented = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(re.findall(r"labops_[a-z_]+", exprs)):
        assert f"`{name}`" in documented, name


def substitute(expr: str, lab: str) -> str:
    """The expr as Grafana sends it: the dashboard's variables replaced."""
    return expr.replace("${lab}", lab).replace("$lab", lab)


def test_every_panel_answers_after_the_operations_ran_on_the_sandbox(
    sandbox_clean: Any, prefect_server: Any, victoriametrics: Any, tmp_path: Path
) -> None:
    from flows.backups import backups
    from flows.certificates import certificates
    from flows.patching import patch_check
    from flows.security_digest import security_digest

    lab = f"dash-{uuid.uuid4().hex[:8]}"  # this test's series only
    cfg = yaml.safe_load(sandbox_clean.config_path.read_text())
    cfg["lab"]["name"] = lab
    cfg["lab"]["state_dir"] = str(tmp_path / "state")
    cfg["systems"]["victoriametrics"] = {"url": victoriametrics.url}
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = str(path)

    # backups only read (a dry run still reports every guest's recovery point and RPO)
    for run in (
        lambda: backups(config=config, dry_run=True, return_state=True),
        lambda: certificates(config=config, return_state=True),
        lambda: patch_check(config=config, return_state=True),
        lambda: security_digest(config=config, return_state=True),
    ):
        run()  # findings or a failed guest still push their metrics: the panels need series

    missing: list[str] = []
    for title, expr in queries():
        query = substitute(expr, lab)
        assert "$" not in query, query
        deadline = time.monotonic() + 20
        while not (found := victoriametrics.wait_for(query)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not found:
            missing.append(f"{title}: {query}")
    assert not missing, missing
