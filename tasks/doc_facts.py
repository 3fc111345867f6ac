"""Live facts doc reconciliation needs beyond the shared ones: node addresses (PVE), the
records of every DNS zone (Technitium), so a wildcard in whatever zone a doc uses is checked,
and what runbooks say about a host, checked on it (SSH). Read only."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.edge import TechnitiumDns
from blocks.proxmox import ProxmoxCredentials
from blocks.ssh import SshCredentials
from labops.docs.models import Claim, HostProbe, LiveGuest, LiveRecord
from labops.docs.runbook import HostTarget, probe_script, read_probe
from labops.ssh import SshTarget
from tasks.live_facts import proxmox_facts
from tasks.pve import client
from tasks.ssh import HostAccess, HostCommand, run_many
from tasks.technitium import _response


@task(name="live-proxmox-docs", retries=1)
def proxmox_doc_facts(
    block: ProxmoxCredentials,
) -> tuple[list[str], list[LiveGuest], str, dict[str, str]]:
    """Nodes, guests, the PVE version and each node's address (``/cluster/status``). Reads only."""
    pve = client(block)
    nodes, guests, version = proxmox_facts(pve)
    addresses = {m.name: m.ip for m in pve.cluster_status() if m.type == "node" and m.ip}
    return nodes, guests, version, addresses


def zone_names(response: dict[str, Any]) -> list[str]:
    """The enabled zones of Technitium's ``zones/list`` answer."""
    return [
        str(z["name"])
        for z in response.get("zones", [])
        if isinstance(z, dict) and z.get("name") and not z.get("disabled")
    ]


@task(name="live-dns-all-zones", retries=1)
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


@task(name="docs-host-checks", cache_policy=NO_CACHE)
def host_probe_facts(
    ssh: SshCredentials,
    targets: list[HostTarget],
    claims: dict[str, list[Claim]],
    parallel: int = 10,
) -> dict[str, HostProbe]:
    """Check runbook claims (paths, interfaces, units, commands, ports) on their hosts. Reads
    only: each host runs one script of fixed read-only templates (``test -e``, ``systemctl
    cat``, ``command -v``, ``ip -o link show``, ``ss -ltn``) with validated, quoted values;
    nothing of the doc is run. A host that cannot be asked gets its error, never a verdict."""
    jobs = [
        HostCommand(
            access=HostAccess(
                name=t.ref,
                ssh=SshTarget(name=t.node, address=t.address, port=t.port),
                vmid=t.vmid,
            ),
            command=probe_script(claims[t.ref]),
            timeout_s=60,
        )
        for t in targets
    ]
    runner = ssh.get_client()
    try:
        runs = run_many(runner, jobs, parallel)
    finally:
        runner.close()
    out: dict[str, HostProbe] = {}
    for t, run in zip(targets, runs, strict=True):
        if run.state != "ok" or run.result is None:
            out[t.ref] = HostProbe(host=t.ref, error=f"{run.state}: {run.detail}")
        else:
            out[t.ref] = read_probe(t.ref, claims[t.ref], run.result.stdout)
    return out
