"""Which node certificates to renew: pure planning from the classified results."""

from __future__ import annotations

from collections.abc import Iterable

from labops.certificates.classify import CertStatus
from labops.certificates.report import EndpointResult

_LEVELS = {
    "critical": {CertStatus.CRITICAL, CertStatus.EXPIRED},
    "warning": {
        CertStatus.CRITICAL,
        CertStatus.EXPIRED,
        CertStatus.WARNING,
        CertStatus.RENEWAL_OVERDUE,
    },
}


def renewal_candidates(
    results: Iterable[EndpointResult], acme_nodes: set[str], only_when: str = "critical"
) -> list[EndpointResult]:
    """Node endpoints with ACME configured whose status is at ``only_when`` or worse.

    Only time-related statuses count: renewing does not fix an untrusted chain or a wrong name.
    """
    levels = _LEVELS[only_when]
    return [
        r
        for r in results
        if r.target.kind == "node" and r.target.node in acme_nodes and r.status in levels
    ]
