"""TLS tasks of the certificates flow: probing in batches, judging a certificate read from an API.

Proxmox node certificates and their renewal are PVE calls and live in ``tasks.pve``.

One task run probes a whole batch (thousands of endpoints, ``policy.concurrency`` at once):
a task run costs 10-30 ms, more than a TLS handshake on a LAN, so per-endpoint task runs would
make the flow slower than the probing itself. Per-endpoint results travel in the returned models.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from labops.certificates.check import anchors_per_bundle, check_endpoints, judge, lab_anchors
from labops.certificates.models import Target
from labops.certificates.pem import pem_to_der
from labops.certificates.probe import RawProbe
from labops.certificates.report import EndpointResult
from labops.config.policies.certificates import CertificatePolicy


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
