"""Loki tasks: log queries over the digest's window (read-only)."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from blocks.observability import Loki
from labops.config.policies.digest import LogQuery
from labops.digest.findings import Collected
from labops.digest.sources import loki_findings


def _ns(when: datetime) -> str:
    return str(int(when.timestamp() * 1_000_000_000))


@task(name="loki-queries")
def loki_queries(
    loki: Loki, queries: list[LogQuery], since: datetime, until: datetime
) -> Collected:
    """Run each configured LogQL query over the window (``GET /loki/api/v1/query_range``).

    Reads only. Queries run one after the other on one connection: a handful of log queries is
    cheaper than a thread each.
    """
    findings = []
    notes = []
    with loki.get_client() as client:
        for q in queries:
            body = client.get_json(
                "/loki/api/v1/query_range",
                params={
                    "query": q.query,
                    "start": _ns(since),
                    "end": _ns(until),
                    "limit": q.limit,
                    "direction": "backward",
                },
            )
            found = loki_findings(q, body or {})
            lines = sum(
                len(s.get("values") or [])
                for s in ((body or {}).get("data") or {}).get("result") or []
            )
            if lines >= q.limit:
                notes.append(f"{q.name}: only the newest {q.limit} lines read")
            findings.extend(found)
    return Collected(findings=findings, note="; ".join(notes))
