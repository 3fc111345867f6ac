"""Probe a batch of targets and classify each: the whole "probing stage" in one call.

Runs inside one Prefect task per batch (a task run per endpoint would cost more than the probe
itself); per-endpoint results travel in the returned models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from labops.certificates.chain import TrustAnchors, cert_info, check_chain
from labops.certificates.classify import classify
from labops.certificates.models import ChainCheck, ChainVerdict, Target
from labops.certificates.probe import RawProbe, probe_all
from labops.certificates.report import EndpointResult
from labops.config.policies.certificates import CertificatePolicy


def lab_anchors(
    roots_pem: Iterable[str],
    intermediates_pem: Iterable[str],
    policy: CertificatePolicy,
    ca_bundle: str | None = None,
) -> TrustAnchors:
    """The lab's anchors (the CA's roots and intermediates, ``trusted_roots``, the system store
    when enabled), plus ``ca_bundle``: the CA bundle of the system an endpoint belongs to, which
    that system's API client trusts (a PVE node's cluster CA, PBS's, step-ca's root)."""
    roots = [p.encode() for p in roots_pem]
    roots += [path.read_bytes() for path in policy.trusted_roots if path.is_file()]
    if ca_bundle is not None and Path(ca_bundle).is_file():
        roots.append(Path(ca_bundle).read_bytes())
    return TrustAnchors.from_pem(
        roots, [p.encode() for p in intermediates_pem], use_system_store=policy.use_system_store
    )


def anchors_per_bundle(
    targets: Iterable[Target],
    roots_pem: Iterable[str],
    intermediates_pem: Iterable[str],
    policy: CertificatePolicy,
) -> dict[str, TrustAnchors]:
    """The anchors of each CA bundle the targets name (built once per bundle)."""
    roots, inter = list(roots_pem), list(intermediates_pem)
    wanted = sorted({t.ca_bundle for t in targets if t.ca_bundle})
    return {b: lab_anchors(roots, inter, policy, b) for b in wanted}


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
    bundles: Mapping[str, TrustAnchors] | None = None,
) -> list[EndpointResult]:
    """Probe ``targets`` (at most ``policy.concurrency`` at once) and judge each.

    ``bundles``: the anchors of a target with ``ca_bundle`` (its system's own CA bundle on top of
    ``anchors``), by bundle path; the others are judged against ``anchors``.
    """
    at = now or datetime.now(UTC)
    per_bundle = bundles or {}
    return probe_all(
        targets,
        policy.concurrency,
        policy.connect_timeout_s,
        policy.handshake_timeout_s,
        then=lambda raw: judge(
            raw, per_bundle.get(raw.target.ca_bundle or "", anchors), policy, at
        ),
    )
