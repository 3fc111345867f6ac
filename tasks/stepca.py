"""step-ca tasks: the CA's published roots and intermediates. Reads only."""

from __future__ import annotations

from prefect import task

from blocks.edge import StepCa
from labops.certificates.sources import CaBundle
from labops.errors import ApiError


@task(name="step-ca-certificates", retries=1)
def ca_certificates(block: StepCa) -> CaBundle:
    """``/health``, ``/roots`` and ``/intermediates`` (both answer 201 Created). Reads only."""
    with block.get_client() as client:
        health = client.get_json("/health")
        roots = client.get_json("/roots", ok=(200, 201)).get("crts", [])
        try:
            inter = client.get_json("/intermediates", ok=(200, 201)).get("crts", [])
        except ApiError as exc:
            # 404 on old CAs (no endpoint), 501 when no intermediate is configured.
            if exc.status not in (404, 501):
                raise
            inter = []
    return CaBundle(
        healthy=isinstance(health, dict) and health.get("status") == "ok",
        roots=[str(p) for p in roots],
        intermediates=[str(p) for p in inter],
    )
