"""VictoriaMetrics tasks: the digest's PromQL checks as instant queries (read-only)."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from blocks.observability import VictoriaMetrics
from labops.config.policies.digest import PromCheck
from labops.digest.findings import Collected
from labops.digest.sources import prom_findings


@task(name="promql-checks")
def promql_checks(vm: VictoriaMetrics, checks: list[PromCheck], at: datetime) -> Collected:
    """Evaluate each check at ``at`` (``GET /api/v1/query``); every series returned is a finding.

    Reads only. A check VictoriaMetrics cannot parse (422) is named; the others still run.
    """
    from labops.errors import ApiError

    findings = []
    bad = []
    with vm.get_client() as client:
        for check in checks:
            try:
                body = client.get_json(
                    "/api/v1/query",
                    params={
                        "query": check.query,
                        "time": f"{at.timestamp():.3f}",
                    },
                )
            except ApiError as exc:
                if exc.status in (400, 422):
                    bad.append(f"check {check.name!r} rejected: {exc.message}")
                    continue
                raise
            findings.extend(prom_findings(check, body or {}))
    return Collected(findings=findings, note="; ".join(bad))
