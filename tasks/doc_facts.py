"""Live facts doc reconciliation needs beyond the shared ones: node addresses (PVE) and the
records of every DNS zone (Technitium), so a wildcard in whatever zone a doc uses is checked.
Read only."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks.edge import TechnitiumDns
from blocks.proxmox import ProxmoxCredentials
from labops.docs.models import LiveGuest, LiveRecord
from tasks.live_facts import proxmox_facts
from tasks.technitium import _response


def node_addresses(status: Any) -> dict[str, str]:
    """Node -> address from PVE ``/cluster/status`` (its ``type: node`` entries carry ``ip``)."""
    out: dict[str, str] = {}
    for entry in status if isinstance(status, list) else []:
        if isinstance(entry, dict) and entry.get("type") == "node" and entry.get("ip"):
            out[str(entry.get("name"))] = str(entry["ip"])
    return out


@task(name="live-proxmox-docs", retries=1, tags=["proxmox"])
def proxmox_doc_facts(
    block: ProxmoxCredentials,
) -> tuple[list[str], list[LiveGuest], str, dict[str, str]]:
    """Nodes, guests, the PVE version and each node's address. Reads only."""
    nodes, guests, version = proxmox_facts.fn(block)
    return nodes, guests, version, node_addresses(block.get_client().get("cluster/status"))


def zone_names(response: dict[str, Any]) -> list[str]:
    """The enabled zones of Technitium's ``zones/list`` answer."""
    return [
        str(z["name"])
        for z in response.get("zones", [])
        if isinstance(z, dict) and z.get("name") and not z.get("disabled")
    ]


@task(name="live-dns-all-zones", retries=1, tags=["technitium"])
def dns_doc_facts(block: TechnitiumDns) -> list[LiveRecord]:
    """Enabled A/AAAA/CNAME records of every zone the server holds. Reads only."""
    records: list[LiveRecord] = []
    with block.get_client() as client:
        zones = zone_names(_response(client.get_json("/api/zones/list"), "/api/zones/list"))
        for zone in zones:
            path = "/api/zones/records/get"
            body = client.get_json(path, params={"domain": zone, "zone": zone, "listZone": "true"})
            for r in _response(body, path).get("records", []):
                data = r.get("rData") or {}
                value = data.get("ipAddress") or data.get("cname") or ""
                if r.get("type") in ("A", "AAAA", "CNAME") and value and not r.get("disabled"):
                    name = str(r["name"]).lower().rstrip(".")
                    records.append(LiveRecord(name=name, type=str(r["type"]), value=str(value)))
    return records
