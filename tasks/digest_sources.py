"""The digest's other sources: failed Proxmox tasks and labops' own latest flow results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from blocks.proxmox import ProxmoxCredentials
from labops.digest.findings import Collected, Finding
from labops.digest.sources import labops_row_findings, pve_task_findings
from labops.reports import Severity
from labops.scope import artifact_key

# The other flows' operations whose table artifacts the digest reads (tasks/publish.py keys them
# with labops.scope.artifact_key: this lab's only).
LABOPS_TABLES = {
    "backups": "backups",
    "certificates": "certificates",
    "patching": "patch_check",
}


@task(name="pve-failed-tasks")
def pve_failed_tasks(block: ProxmoxCredentials, since: datetime) -> Collected:
    """Tasks of the cluster that failed in the window (``GET /cluster/tasks``). Reads only."""
    tasks = block.get_client().cluster_tasks()
    rows = [t.model_dump() for t in tasks]
    return Collected(findings=pve_task_findings(rows, since))


def _latest_table(key: str) -> tuple[list[dict[str, Any]], datetime | None] | None:
    import json

    from prefect.artifacts import Artifact

    artifact: Any = Artifact.get(key)  # sync inside a sync task
    if artifact is None:
        return None
    data: Any = artifact.data
    if isinstance(data, str):
        data = json.loads(data)
    rows = data if isinstance(data, list) else []
    created = getattr(artifact, "created", None)
    return [r for r in rows if isinstance(r, dict)], created


@task(name="labops-results")
def labops_results(lab: str, stale_after_hours: int, now: datetime) -> Collected:
    """The latest table artifacts of the backups, certificates and patch flows of ``lab`` (never
    another lab's on the same server). Reads only.

    Each row says whether its entity was checked (fine or found) or could not be checked (why,
    since when). A flow that never reported is named in the note; one whose latest report is
    older than ``stale_after_hours`` is itself a finding (its schedule may have stopped).
    """
    out = Collected()
    findings = out.findings
    missing = []
    for flow, operation in LABOPS_TABLES.items():
        found = _latest_table(artifact_key(lab, operation, "table"))
        if found is None:
            missing.append(flow)
            continue
        rows, created = found
        rows_said = labops_row_findings(flow, rows, created or now)
        findings.extend(rows_said.findings)
        out.checked += rows_said.checked
        out.unknown.update(rows_said.unknown)
        if created is not None and (now - created).total_seconds() > stale_after_hours * 3600:
            findings.append(
                Finding(
                    source="labops",
                    severity=Severity.WARNING,
                    title=f"{flow} flow has not reported since {created:%Y-%m-%d %H:%M} UTC",
                    entity=f"{flow} flow",
                    rule=f"{flow}:silent",
                    last_seen=created,
                )
            )
    out.note = f"no report yet from: {', '.join(missing)}" if missing else ""
    return out


@task(name="mqtt-retain-latest")
def publish_latest(broker: Any, lab: str, topic: str, payload: dict[str, Any]) -> str:
    """Publish ``payload`` retained on ``<prefix>/<lab>/<topic>/latest`` (QoS from config), so a
    dashboard that subscribes later still gets the last digest. Returns the full topic."""
    import json

    notifier = broker.get_client(lab=lab)
    full = notifier.topic(f"{topic.strip('/')}/latest")
    notifier.publish(full, json.dumps(payload, default=str), retain=True)
    return str(full)
