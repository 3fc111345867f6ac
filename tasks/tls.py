"""TLS tasks of the certificates flow: probing in batches, Proxmox node certificates, renewal.

One task run probes a whole batch (thousands of endpoints, ``policy.concurrency`` at once):
a task run costs 10-30 ms, more than a TLS handshake on a LAN, so per-endpoint task runs would
make the flow slower than the probing itself. Per-endpoint results travel in the returned models.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.proxmox import ProxmoxCredentials
from labops.certificates.check import anchors_per_bundle, check_endpoints, judge, lab_anchors
from labops.certificates.models import Target
from labops.certificates.pem import pem_to_der
from labops.certificates.probe import RawProbe
from labops.certificates.renewed import RenewalOutcome
from labops.certificates.report import EndpointResult
from labops.certificates.sources import NodeCertificates
from labops.config.policies.certificates import CertificatePolicy
from labops.errors import LabopsError


@task(name="tls-probe-batch", cache_policy=NO_CACHE)  # a probe is never served from a cache
def probe_batch(
    targets: list[Target],
    roots_pem: list[str],
    intermediates_pem: list[str],
    policy: CertificatePolicy,
) -> list[EndpointResult]:
    """Probe and classify a batch of endpoints concurrently (bounded). Reads only.

    Never raises for an endpoint: one that cannot be reached is classified "unreachable".
    """
    started = time.perf_counter()
    anchors = lab_anchors(roots_pem, intermediates_pem, policy)
    bundles = anchors_per_bundle(targets, roots_pem, intermediates_pem, policy)
    results = check_endpoints(targets, anchors, policy, bundles=bundles)
    get_run_logger().info(
        "probed %d endpoints in %.2f s (%d at once)",
        len(targets),
        time.perf_counter() - started,
        policy.concurrency,
    )
    return results


@task(name="tls-judge-api-certificate", cache_policy=NO_CACHE)
def judge_api_certificate(
    target: Target,
    pem: str,
    roots_pem: list[str],
    intermediates_pem: list[str],
    policy: CertificatePolicy,
) -> EndpointResult:
    """Classify a certificate read from an API (a node without a probe URL). Reads only."""
    raw = RawProbe(target=target, chain_der=[pem_to_der(pem)], chain_complete=False)
    anchors = lab_anchors(roots_pem, intermediates_pem, policy, target.ca_bundle)
    return judge(raw, anchors, policy, datetime.now(UTC))


@task(name="pve-node-certificates", retries=1, tags=["proxmox"])
def node_certificates(block: ProxmoxCredentials) -> list[NodeCertificates]:
    """Each node's certificate files and ACME setup (``certificates/info``, node config).

    A node that does not answer is listed with its error; the others go on. Reads only.
    """
    pve = block.get_client()
    out = []
    for n in pve.nodes():
        override = block.settings.nodes.get(n.node)
        url = str(override.url) if override and override.url else None
        item = NodeCertificates(node=n.node, online=n.online, url=url)
        if n.online:
            try:
                item.certificates = pve.certificates_info(n.node)
                item.acme = pve.acme_domains_configured(n.node)
            except LabopsError as exc:
                item.error = str(exc)
        out.append(item)
    return out


@task(name="pve-renew-acme-certificate", tags=["proxmox"])
def renew_node_certificate(
    block: ProxmoxCredentials, node: str, force: bool, timeout_s: float
) -> RenewalOutcome:
    """Order the renewal of a node's ACME certificate and wait for the task. CHANGES THE NODE.

    Not retried by Prefect: a second order would be a second renewal.
    """
    pve = block.get_client()
    try:
        upid = pve.renew_acme_certificate(node, force=force)
    except LabopsError as exc:
        return RenewalOutcome(node=node, ok=False, detail=f"refused: {exc}")
    try:
        status = pve.wait_task(node, upid, timeout_s=timeout_s, poll_s=1.0)
    except LabopsError as exc:
        return RenewalOutcome(node=node, upid=upid, ok=False, detail=str(exc))
    if status.succeeded:
        return RenewalOutcome(node=node, upid=upid, ok=True, detail="task OK")
    return RenewalOutcome(node=node, upid=upid, ok=False, detail=f"task failed: {status.error}")
