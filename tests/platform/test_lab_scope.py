"""Two labs, one Prefect server: each lab's runs read only that lab's results.

Two sandboxes (small labs of their own) with different lab names report to the session Prefect
server. Lab A backs up (dry run), which leaves its table artifact; lab B's security digest reads
labops' own results from the server and must not see A's, and publishes under B's MQTT topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from labops.scope import lab_slug
from tests.fixtures.sandbox import SandboxHandle


def lab_config(sandbox: SandboxHandle, tmp: Path, lab: str, **sections: Any) -> str:
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["lab"].update(name=lab, state_dir=str(tmp / lab / "state"))
    cfg.update(sections)
    path = tmp / f"{lab}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_two_labs_on_one_server_never_see_each_others_results(
    make_sandbox: Callable[..., SandboxHandle], prefect_server: Any, mqtt: Any, tmp_path: Path
) -> None:
    from flows.backups import backups
    from flows.security_digest import security_digest
    from labops.backups.report import BackupReport
    from labops.digest.report import SecurityDigest
    from tasks.digest_sources import labops_results

    run = uuid.uuid4().hex[:6]
    alpha, bravo = f"Alpha {run}", f"bravo-{run}"
    lab_a = make_sandbox(containers=6, vms=1, seed=7)
    lab_b = make_sandbox(containers=6, vms=1, seed=8)

    state: Any = backups(config=lab_config(lab_a, tmp_path, alpha), dry_run=True, return_state=True)
    report_a = state.result(raise_on_failure=False)
    assert isinstance(report_a, BackupReport) and report_a.lab == alpha and report_a.table()

    cfg_b = yaml.safe_load(lab_b.config_path.read_text())
    systems = cfg_b["systems"]
    systems["mqtt"] = {"host": mqtt.host, "port": mqtt.port, "topic_prefix": mqtt.prefix}
    for name in ("wazuh", "crowdsec", "loki", "victoriametrics", "beszel", "llm"):
        systems.pop(name, None)
    digest_policy = {"llm_summary": False, "proxmox_failed_tasks": False, "prom_checks": []}
    sub = mqtt.subscribe()
    state = security_digest(
        config=lab_config(lab_b, tmp_path, bravo, systems=systems, digest=digest_policy),
        return_state=True,
    )
    digest = state.result(raise_on_failure=False)
    assert isinstance(digest, SecurityDigest) and digest.lab == bravo
    labops_source = next(s for s in digest.sources if s.name == "labops")
    assert labops_source.state == "ok"
    # nothing of lab A: B's own flows have not reported yet
    assert labops_source.detail == "no report yet from: backups, certificates, patching"
    assert not [f for f in digest.findings if f.source == "labops"]
    a_guests = {f"{r.vmid} {r.name}".strip() for r in report_a.guests}
    assert not [f for f in digest.findings if f.entity in a_guests]

    # lab B's messages go under B's own topic level
    messages = sub.wait_for(2, timeout=15)
    topics = {m.topic for m in messages}
    assert topics == {
        f"{mqtt.prefix}/{lab_slug(bravo)}/security/digest",
        f"{mqtt.prefix}/{lab_slug(bravo)}/security/digest/latest",
    }, topics
    # while lab A sees its own results on the same server
    seen_by_a = labops_results.fn(alpha, 48, datetime.now(UTC))
    assert "backups" not in seen_by_a.note, seen_by_a.note
