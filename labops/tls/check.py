"""Probe a batch of targets and classify each: the whole "probing stage" in one call.

Runs inside one Prefect task per batch (a task run per endpoint would cost more than the probe
itself); per-endpoint results travel in the returned models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from labops.config.policies.certificates import CertificatePolicy
from labops.tls.chain import TrustAnchors, cert_info, check_chain
from labops.tls.classify import classify
from labops.tls.models import ChainCheck, ChainVerdict, Target
from labops.tls.probe import RawProbe, probe_all
from labops.tls.report import EndpointResult


def judge(
    raw: RawProbe, anchors: TrustAnchors, policy: CertificatePolicy, now: datetime
) -> EndpointResult:
    """Chain validation and classification of one raw probe (pure but for cached parsing)."""
    t = raw.target
    thresholds = policy.thresholds_for(t.name, t.group)
    chain = [cert_info(d) for d in raw.chain_der]
    check: ChainCheck | None = None
    if raw.ok:
        try:
            check = check_chain(t.name, raw.chain_der, anchors, now)
        except ValueError as exc:  # a certificate cryptography cannot read
            check = ChainCheck(verdict=ChainVerdict.INVALID, detail=str(exc))
        if not raw.chain_complete and check.verdict is not ChainVerdict.TRUSTED:
            check = check.model_copy(
                update={"detail": check.detail + " (this Python exposes only the leaf)"}
            )
    verdict = classify(
        t.name,
        chain,
        check,
        thresholds,
        now,
        error=raw.error,
        weak_rsa_bits=policy.weak_rsa_bits,
    )
    return EndpointResult(
        target=t,
        status=verdict.status,
        reason=verdict.reason,
        classification=verdict,
        chain=chain,
        anchor=check.anchor if check else None,
        tls_version=raw.tls_version,
        elapsed_ms=raw.elapsed_ms,
    )


def judge_ca_certificate(
    target: Target, der: bytes, policy: CertificatePolicy, now: datetime
) -> EndpointResult:
    """A CA certificate published by the CA (a root from ``/roots``): its dates only."""
    info = cert_info(der)
    verdict = classify(
        target.name,
        [info],
        None,
        policy.thresholds_for(target.name, target.group),
        now,
        weak_rsa_bits=policy.weak_rsa_bits,
    )
    return EndpointResult(
        target=target,
        status=verdict.status,
        reason=verdict.reason,
        classification=verdict,
        chain=[info],
    )


def check_endpoints(
    targets: Sequence[Target],
    anchors: TrustAnchors,
    policy: CertificatePolicy,
    now: datetime | None = None,
) -> list[EndpointResult]:
    """Probe ``targets`` (at most ``policy.concurrency`` at once) and judge each."""
    at = now or datetime.now(UTC)
    return probe_all(
        targets,
        policy.concurrency,
        policy.connect_timeout_s,
        policy.handshake_timeout_s,
        then=lambda raw: judge(raw, anchors, policy, at),
    )
