"""Certificates: every certificate of the lab found, validated and renewed before it can expire.

Runbook: discover targets (config endpoints, Traefik routers, DNS records, Proxmox nodes, PBS, the
CA) -> each endpoint once -> probe in batches (TLS handshake with SNI, the chain as served) ->
validate against the lab's roots and the system store -> classify with reasons (thresholds in
days and in lifetime fraction, renewal lag) -> renew ACME node certificates when enabled ->
report, table artifact by time to expiry, notification on changes only, metrics.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from blocks.context import LabContext
from blocks.edge import StepCa, TechnitiumDns, TraefikApi
from labops.certificates.alerts import CertStates, plan_alerts
from labops.certificates.check import judge_ca_certificate
from labops.certificates.classify import CertStatus
from labops.certificates.discover import (
    config_targets,
    dns_targets,
    system_bundle,
    traefik_targets,
    url_target,
)
from labops.certificates.models import Target
from labops.certificates.pve import effective_certificate
from labops.certificates.renewal import renewal_candidates
from labops.certificates.report import CertificateReport, EndpointResult, RenewalResult
from labops.certificates.targets import merge_targets
from labops.config.policies.certificates import CertificatePolicy
from labops.flow_params import ConfigPath
from labops.reports import Failure
from tasks.publish import publish_report
from tasks.stepca import CaBundle, ca_certificates
from tasks.technitium import zone_records
from tasks.tls import (
    NodeCertificates,
    judge_api_certificate,
    node_certificates,
    probe_batch,
    renew_node_certificate,
)
from tasks.traefik import http_routers

STATE_KEY = "certificates"
NODE_GROUP = "nodes"


def _pem_der(pem: str) -> bytes:
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)


def _discover(ctx: LabContext, report: CertificateReport) -> dict[str, Any]:
    """Ask every configured source at once; a source that fails is a failure, not a stop."""
    policy = ctx.config.certificates
    wanted: dict[str, tuple[bool, Callable[[], PrefectFuture[Any]]]] = {
        "traefik": (
            policy.sources.traefik,
            lambda: http_routers.submit(
                cast(TraefikApi, ctx.block("traefik")), policy.traefik_page_size
            ),
        ),
        "technitium": (
            policy.sources.technitium,
            lambda: zone_records.submit(cast(TechnitiumDns, ctx.block("technitium"))),
        ),
        "proxmox": (policy.sources.proxmox, lambda: node_certificates.submit(ctx.pve_block())),
        "step_ca": (
            policy.sources.step_ca,
            lambda: ca_certificates.submit(cast(StepCa, ctx.block("step_ca"))),
        ),
    }
    futures: dict[str, PrefectFuture[Any]] = {}
    for name, (enabled, submit) in wanted.items():
        if not enabled:
            report.skipped.append(f"{name}: disabled in certificates.sources")
        elif not ctx.configured(name):
            report.skipped.append(f"{name}: not configured")
        else:
            futures[name] = submit()
    found: dict[str, Any] = {}
    for name, future in futures.items():
        try:
            found[name] = future.result()
        except Exception as exc:
            report.failures.append(
                Failure(entity=name, reason=f"discovery failed: {exc}", system=name)
            )
    return found


def _targets(ctx: LabContext, found: dict[str, Any], report: CertificateReport) -> list[Target]:
    policy = ctx.config.certificates
    targets: list[Target] = []
    if policy.sources.config:
        targets += config_targets(ctx.config.inventory.endpoints)
    entrypoint = None
    if "traefik" in found:
        block = ctx.block("traefik")
        assert isinstance(block, TraefikApi)
        entrypoint = block.entrypoint
        targets += traefik_targets(found["traefik"], entrypoint)
    if "technitium" in found:
        records = [
            (r.name, r.value)
            for r in found["technitium"]
            if r.type in ("A", "AAAA") and not r.disabled
        ]
        targets += dns_targets(
            records, policy.dns.traefik_addresses, entrypoint, policy.dns.direct_ports
        )
    systems = ctx.config.systems
    pve_bundle = system_bundle(systems.proxmox.tls if systems.proxmox else None)
    for node in found.get("proxmox", []):
        if not node.online:
            report.skipped.append(f"node {node.node}: offline, certificate not checked")
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
    if policy.sources.pbs and ctx.config.systems.pbs is not None:
        pbs_url = ctx.config.systems.pbs.url
        if pbs_url is not None:
            bundle = system_bundle(ctx.config.systems.pbs.tls)
            targets.append(
                url_target(str(pbs_url), "pbs", "pbs", default_port=8007, ca_bundle=bundle)
            )
    if "step_ca" in found and ctx.config.systems.step_ca and ctx.config.systems.step_ca.url:
        step_ca = ctx.config.systems.step_ca
        targets.append(
            url_target(str(step_ca.url), "ca", "step_ca", ca_bundle=system_bundle(step_ca.tls))
        )
    for t in targets:
        for s in t.sources:
            source = s.split(":", 1)[0]
            report.sources[source] = report.sources.get(source, 0) + 1
    merged, report.duplicates = merge_targets(targets)
    return merged


def _probe(
    targets: list[Target], ca: CaBundle | None, policy: CertificatePolicy
) -> list[EndpointResult]:
    roots = ca.roots if ca else []
    inter = ca.intermediates if ca else []
    size = policy.batch_size
    # quote(): Prefect would otherwise walk every field of every target looking for futures.
    futures = [
        probe_batch.submit(
            quote(targets[i : i + size]),
            roots,
            inter,
            policy,  # type: ignore[call-overload]
        )
        for i in range(0, len(targets), size)
    ]
    return [r for f in futures for r in f.result()]


def _api_only_nodes(
    nodes: list[NodeCertificates],
    ca: CaBundle | None,
    policy: CertificatePolicy,
    bundle: str | None,
) -> list[EndpointResult]:
    """Nodes without a probe URL: judge the certificate the API says pveproxy serves."""
    out = []
    for node in nodes:
        eff = effective_certificate(node.certificates)
        if node.url or not node.online or eff is None or not eff.pem:
            continue
        target = Target(
            name=f"{node.node}",
            address=node.node,
            port=8006,
            kind="node",
            node=node.node,
            group=NODE_GROUP,
            sources=("proxmox-api",),
            ca_bundle=bundle,
        )
        out.append(
            judge_api_certificate(
                target, eff.pem, ca.roots if ca else [], ca.intermediates if ca else [], policy
            )
        )
    return out


def _ca_roots(ca: CaBundle, policy: CertificatePolicy) -> list[EndpointResult]:
    now = datetime.now(UTC)
    out = []
    for i, pem in enumerate(ca.roots):
        target = Target(
            name=f"step-ca root {i + 1}",
            address="step-ca",
            port=443,
            kind="ca",
            sources=("step_ca:/roots",),
        )
        out.append(judge_ca_certificate(target, _pem_der(pem), policy, now))
    return out


def _renew(
    ctx: LabContext,
    report: CertificateReport,
    nodes: list[NodeCertificates],
    ca: CaBundle | None,
    dry_run: bool,
) -> None:
    policy = ctx.config.certificates
    acme = {n.node for n in nodes if n.acme}
    for result in renewal_candidates(report.endpoints, acme, policy.renewal.only_when):
        node = result.target.node or ""
        leaf = result.leaf
        old = leaf.not_after if leaf else None
        if dry_run:
            report.renewals.append(
                RenewalResult(
                    node=node,
                    action="planned",
                    old_not_after=old,
                    detail=f"would renew ({result.status.value}: {result.reason})",
                )
            )
            continue
        outcome = renew_node_certificate(
            ctx.pve_block(), node, policy.renewal.force, policy.renewal.task_timeout_s
        )
        if not outcome.ok:
            report.renewals.append(
                RenewalResult(
                    node=node,
                    action="failed",
                    upid=outcome.upid,
                    detail=outcome.detail,
                    old_not_after=old,
                )
            )
            report.failures.append(
                Failure(
                    entity=f"node {node}",
                    system="proxmox",
                    reason=f"certificate renewal failed: {outcome.detail}",
                )
            )
            continue
        # Check what the node serves now, not what the API says it stored.
        fresh = _probe([result.target], ca, policy)[0]
        new = fresh.leaf.not_after if fresh.leaf else None
        if new is None or (old is not None and new <= old):
            report.renewals.append(
                RenewalResult(
                    node=node,
                    action="failed",
                    upid=outcome.upid,
                    old_not_after=old,
                    new_not_after=new,
                    detail="task OK but the node still serves the old certificate",
                )
            )
            report.failures.append(
                Failure(
                    entity=f"node {node}", system="proxmox", reason="renewed certificate not served"
                )
            )
            continue
        report.renewals.append(
            RenewalResult(
                node=node,
                action="renewed",
                upid=outcome.upid,
                old_not_after=old,
                new_not_after=new,
                detail=f"now {fresh.status.value}",
            )
        )
        report.endpoints = [
            fresh if e.target.key == result.target.key else e for e in report.endpoints
        ]


@flow(
    name="certificates",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def certificates(
    config: ConfigPath | None = None, dry_run: bool = False, renew: bool | None = None
) -> CertificateReport | State:
    """Find every certificate of the lab, validate and classify it, renew what may be renewed.

    Args:
        config: Path of the labops config (default: ``LABOPS_CONFIG`` or ./labops.yaml).
        dry_run: Plan renewals without ordering them.
        renew: Override ``certificates.renewal.enabled`` for this run.

    Returns:
        The ``CertificateReport`` (or a Failed state carrying it when a step failed).
    """
    ctx = LabContext.load(config)
    log = get_run_logger()
    policy = ctx.config.certificates
    report = CertificateReport(dry_run=dry_run)

    found = _discover(ctx, report)
    ca: CaBundle | None = found.get("step_ca")
    targets = _targets(ctx, found, report)
    log.info(
        "%d targets (%d duplicates merged) from %s", len(targets), report.duplicates, report.sources
    )

    for path in policy.trusted_roots:
        if not path.is_file():
            report.failures.append(
                Failure(
                    entity="certificates.trusted_roots",
                    reason=f"{path}: no such file (root not trusted)",
                )
            )
    started = datetime.now(UTC)
    try:
        report.endpoints = _probe(targets, ca, policy)
    except Exception as exc:  # the report still goes out, saying what could not be checked
        report.failures.append(Failure(entity="probing", reason=f"{type(exc).__name__}: {exc}"))
    report.probe_seconds = (datetime.now(UTC) - started).total_seconds()
    nodes: list[NodeCertificates] = found.get("proxmox", [])
    pve = ctx.config.systems.proxmox
    report.endpoints += _api_only_nodes(nodes, ca, policy, system_bundle(pve.tls if pve else None))
    if ca is not None:
        report.endpoints += _ca_roots(ca, policy)
    for node in nodes:
        if node.error:
            report.failures.append(
                Failure(
                    entity=f"node {node.node}",
                    system="proxmox",
                    reason=f"certificates/info: {node.error}",
                )
            )

    if policy.renewal.enabled if renew is None else renew:
        try:
            _renew(ctx, report, nodes, ca, dry_run)
        except Exception as exc:
            report.failures.append(
                Failure(entity="renewal", system="proxmox", reason=f"{type(exc).__name__}: {exc}")
            )
    else:
        report.skipped.append("renewal: disabled (certificates.renewal.enabled)")

    previous = ctx.state.load(STATE_KEY, CertStates)
    current = {e.target.key: (e.target.label, e.status, e.reason) for e in report.endpoints}
    report.alerts, states = plan_alerts(previous, current, datetime.now(UTC), policy.reminder_hours)
    for e in report.endpoints:  # unreachable since its first failed probe in a row
        if e.status is CertStatus.UNREACHABLE and e.target.key in states.targets:
            e.unknown_since = states.targets[e.target.key].since
    if report.failed and previous is not None:
        # A source that failed this time hid its targets: remember their last states, or they
        # would all be "new" (and notified again) when the source answers next time.
        kept = {k: v for k, v in previous.targets.items() if k not in current}
        states.targets = {**kept, **states.targets}
    ctx.state.save(STATE_KEY, states)
    log.info("certificates: %s", report.counts())
    return publish_report(report, ctx)
