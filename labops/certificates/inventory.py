"""Which endpoints a certificates run checks: the targets of every source that answered, each
endpoint once, and the certificates read from APIs instead of probed (pure)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field

from labops.certificates.check import judge_ca_certificate
from labops.certificates.discover import (
    config_targets,
    dns_targets,
    system_bundle,
    traefik_targets,
    url_target,
)
from labops.certificates.models import Target
from labops.certificates.pem import pem_to_der
from labops.certificates.pve import effective_certificate
from labops.certificates.report import EndpointResult
from labops.certificates.sources import Discovered, NodeCertificates
from labops.certificates.targets import merge_targets
from labops.config import LabopsConfig
from labops.config.policies.certificates import CertificatePolicy
from labops.reports import Failure

NODE_GROUP = "nodes"
"""Group of the Proxmox node endpoints (one line per cluster in the report)."""


class Inventory(BaseModel):
    """The endpoints to probe, each once, and how they were found."""

    targets: list[Target] = Field(default_factory=list)
    sources: dict[str, int] = Field(default_factory=dict, description="Source -> targets found.")
    duplicates: int = Field(0, description="Targets found by several sources, merged.")
    skipped: list[str] = Field(default_factory=list, description="Offline nodes, not checked.")


def lab_targets(config: LabopsConfig, found: Discovered, entrypoint: str | None) -> Inventory:
    """Every endpoint of the lab from the config and the sources that answered; ``entrypoint``:
    Traefik's TLS entrypoint (its routers and DNS names that point at it are served there)."""
    policy = config.certificates
    systems = config.systems
    entrypoint = entrypoint if found.traefik is not None else None
    skipped: list[str] = []
    targets: list[Target] = []
    if policy.sources.config:
        targets += config_targets(config.inventory.endpoints)
    if found.traefik is not None and entrypoint is not None:
        targets += traefik_targets(found.traefik, entrypoint)
    if found.technitium is not None:
        records = [
            (r.name, r.value)
            for r in found.technitium
            if r.type in ("A", "AAAA") and not r.disabled
        ]
        targets += dns_targets(
            records, policy.dns.traefik_addresses, entrypoint, policy.dns.direct_ports
        )
    pve_bundle = system_bundle(systems.proxmox.tls if systems.proxmox else None)
    for node in found.nodes:
        if not node.online:
            skipped.append(f"node {node.node}: offline, certificate not checked")
        elif node.url:
            targets.append(
                url_target(
                    node.url,
                    "node",
                    "proxmox",
                    node=node.node,
                    group=NODE_GROUP,
                    default_port=8006,
                    ca_bundle=pve_bundle,
                )
            )
    pbs = systems.pbs
    if policy.sources.pbs and pbs is not None and pbs.url is not None:
        bundle = system_bundle(pbs.tls)
        targets.append(url_target(str(pbs.url), "pbs", "pbs", default_port=8007, ca_bundle=bundle))
    step_ca = systems.step_ca
    if found.step_ca is not None and step_ca is not None and step_ca.url:
        bundle = system_bundle(step_ca.tls)
        targets.append(url_target(str(step_ca.url), "ca", "step_ca", ca_bundle=bundle))
    sources = Counter(s.split(":", 1)[0] for t in targets for s in t.sources)
    merged, duplicates = merge_targets(targets)
    return Inventory(targets=merged, sources=dict(sources), duplicates=duplicates, skipped=skipped)


def api_only_nodes(nodes: list[NodeCertificates], bundle: str | None) -> list[tuple[Target, str]]:
    """Online nodes without a probe URL, with the PEM the API says pveproxy serves: judged from
    the API instead of a handshake."""
    out = []
    for node in nodes:
        served = effective_certificate(node.certificates)
        if node.url or not node.online or served is None or not served.pem:
            continue
        target = Target(
            name=node.node,
            address=node.node,
            port=8006,
            kind="node",
            node=node.node,
            group=NODE_GROUP,
            sources=("proxmox-api",),
            ca_bundle=bundle,
        )
        out.append((target, served.pem))
    return out


def ca_roots(roots: list[str], policy: CertificatePolicy, now: datetime) -> list[EndpointResult]:
    """The CA's own roots, judged for expiry like any endpoint."""
    return [
        judge_ca_certificate(
            Target(
                name=f"step-ca root {i}",
                address="step-ca",
                port=443,
                kind="ca",
                sources=("step_ca:/roots",),
            ),
            pem_to_der(pem),
            policy,
            now,
        )
        for i, pem in enumerate(roots, start=1)
    ]


def missing_roots(policy: CertificatePolicy) -> list[Failure]:
    """A trusted root file that is missing: that root is not trusted, the run says so."""
    return [
        Failure(
            entity="certificates.trusted_roots", reason=f"{path}: no such file (root not trusted)"
        )
        for path in policy.trusted_roots
        if not path.is_file()
    ]


def unread_nodes(nodes: list[NodeCertificates]) -> list[Failure]:
    """Nodes whose certificate files could not be read."""
    return [
        Failure(entity=f"node {n.node}", system="proxmox", reason=f"certificates/info: {n.error}")
        for n in nodes
        if n.error
    ]
