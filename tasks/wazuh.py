"""Wazuh tasks: alerts from the indexer, agent status from the manager API (read-only)."""

from __future__ import annotations

from datetime import datetime

from prefect import task

from blocks.security import WazuhApi, WazuhIndexer
from labops.digest.findings import Collected
from labops.digest.sources import wazuh_agent_findings, wazuh_alert_findings

ALERTS_INDEX = "wazuh-alerts-*"


def alert_query(since: datetime, until: datetime, min_level: int, size: int) -> dict[str, object]:
    """The indexer search body: alerts of the window at or above the level, newest first."""
    return {
        "size": size,
        "sort": [{"timestamp": {"order": "desc"}}],
        "track_total_hits": True,
        "query": {
            "bool": {
                "filter": [
                    {"range": {"timestamp": {"gte": since.isoformat(), "lt": until.isoformat()}}},
                    {"range": {"rule.level": {"gte": min_level}}},
                ]
            }
        },
        "_source": [
            "timestamp",
            "@timestamp",
            "rule.id",
            "rule.level",
            "rule.description",
            "rule.groups",
            "agent.id",
            "agent.name",
            "data.srcip",
            "data.srcuser",
            "data.dstuser",
            "full_log",
            "id",
        ],
    }


@task(name="wazuh-alerts")
def wazuh_alerts(
    indexer: WazuhIndexer,
    since: datetime,
    until: datetime,
    min_level: int,
    critical_level: int,
    max_alerts: int,
) -> Collected:
    """Read the window's alerts at or above ``min_level``, aggregated by rule and agent.

    Reads only (``POST wazuh-alerts-*/_search``); the newest ``max_alerts`` documents are read and
    the digest says so when there were more.
    """
    with indexer.get_client() as client:
        body = client.post_json(
            f"/{ALERTS_INDEX}/_search", json=alert_query(since, until, min_level, max_alerts)
        )
    hits = (body or {}).get("hits") or {}
    docs = hits.get("hits") or []
    total = hits.get("total") or {}
    total_n = int(total.get("value", len(docs)) if isinstance(total, dict) else total)
    note = ""
    if total_n > len(docs):
        note = f"read the newest {len(docs)} of {total_n} Wazuh alerts"
    return Collected(findings=wazuh_alert_findings(docs, critical_level), note=note)


@task(name="wazuh-agents")
def wazuh_agents(api: WazuhApi, statuses: list[str]) -> Collected:
    """Agents in the given states (disconnected, never connected). Reads only."""
    if not statuses:
        return Collected()
    with api.get_client() as client:
        body = client.get_json(
            "/agents",
            params={
                "status": ",".join(statuses),
                "limit": 100000,
                "select": "id,name,ip,status,lastKeepAlive,node_name",
            },
        )
    items = ((body or {}).get("data") or {}).get("affected_items") or []
    return Collected(findings=wazuh_agent_findings(items))
