"""What the live lab says, per source, for doc reconciliation (each source may be absent)."""

from __future__ import annotations

import re

from prefect import task

from blocks.edge import TechnitiumDns, TraefikApi
from blocks.observability import BeszelHub, VictoriaMetrics
from blocks.security import WazuhApi
from labops.docs.models import LiveGuest, LiveRecord, LiveRouter
from labops.models.pve import PveGuestConfig
from labops.models.traefik import rule_hosts
from labops.proxmox import PveClient
from tasks.technitium import zone_records
from tasks.traefik import http_routers

_NET_IP = re.compile(r"(?:^|,)ip=(?P<ip>[\d.]+)")


def guest_ips(config: PveGuestConfig) -> list[str]:
    """IPv4 addresses of a guest's config (LXC ``netN: ...,ip=A/B`` or QEMU ``ipconfigN``)."""
    ips = []
    for _key, value in sorted({**config.nets, **config.ipconfigs}.items()):
        m = _NET_IP.search(value)
        if m:
            ips.append(m.group("ip"))
    return ips


def proxmox_facts(pve: PveClient) -> tuple[list[str], list[LiveGuest], str]:
    """Nodes, guests (id, name, node, type, status, tags, IPs) and the PVE version: the body
    of the doc task, a plain function so a task can use it without nesting a task run."""
    nodes = [n.node for n in pve.nodes()]
    guests = []
    for g in pve.guests():
        ips: list[str] = []
        if g.status != "unknown":
            ips = guest_ips(pve.guest_config(g.node, g.type, g.vmid))
        guests.append(
            LiveGuest(
                vmid=g.vmid,
                name=g.name or f"CT{g.vmid}",
                node=g.node,
                type="qemu" if g.type == "qemu" else "lxc",
                status=g.status,
                template=g.template,
                tags=g.tags,
                ips=ips,
            )
        )
    return nodes, guests, pve.version().version


@task(name="live-traefik", retries=1)
def traefik_facts(block: TraefikApi) -> list[LiveRouter]:
    """Every HTTP router with its host names and whether it serves TLS."""
    return [
        LiveRouter(name=r.name, hosts=rule_hosts(r.rule), tls=r.probed) for r in http_routers(block)
    ]


@task(name="live-technitium", retries=1)
def technitium_facts(block: TechnitiumDns) -> list[LiveRecord]:
    """Enabled A/AAAA/CNAME records of the internal zone."""
    return [
        LiveRecord(name=r.name, type=r.type, value=r.value)
        for r in zone_records(block)
        if not r.disabled
    ]


@task(name="live-beszel", retries=1)
def beszel_facts(block: BeszelHub) -> list[str]:
    """Names of the systems (agents) the Beszel hub knows."""
    client = block.get_client()
    names: list[str] = []
    page = 1
    while True:
        body = client.get_json(
            "/api/collections/systems/records", params={"page": page, "perPage": 200}
        )
        names.extend(str(item.get("name", "")) for item in body.get("items", []))
        if page >= int(body.get("totalPages", 1)):
            return names
        page += 1


@task(name="live-scrape-targets", retries=1)
def scrape_target_facts(block: VictoriaMetrics) -> list[str]:
    """Active scrape targets of VictoriaMetrics (``/api/v1/targets``)."""
    body = block.get_client().get_json("/api/v1/targets")
    active = body.get("data", {}).get("activeTargets", []) or []
    return [str(t.get("scrapeUrl") or t.get("labels", {}).get("instance", "")) for t in active]


@task(name="live-wazuh-agents", retries=1)
def wazuh_agent_facts(block: WazuhApi) -> list[str]:
    """Names of the Wazuh agents (the manager itself, agent 000, is not an agent)."""
    with block.get_client() as client:
        body = client.get_json("/agents", params={"limit": 100000, "select": "id,name"})
    items = ((body or {}).get("data") or {}).get("affected_items") or []
    return [str(a.get("name")) for a in items if str(a.get("id")) != "000"]
