"""Certificates: every certificate of the lab found, validated and renewed before it can expire.

Runbook: discover targets (config endpoints, Traefik routers, DNS records, Proxmox nodes, PBS, the
CA) -> each endpoint once -> probe in batches (TLS handshake with SNI, the chain as served) ->
validate against the lab's roots and the system store -> classify with reasons (thresholds in
days and in lifetime fraction, renewal lag) -> renew ACME node certificates when enabled ->
report, table artifact by time to expiry, notification on changes only, metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from blocks.context import LabContext
from blocks.edge import StepCa, TechnitiumDns, TraefikApi
from labops.certificates.alerts import CertStates
from labops.certificates.discover import system_bundle
from labops.certificates.inventory import (
    api_only_nodes,
    ca_roots,
    lab_targets,
    missing_roots,
    unread_nodes,
)
from labops.certificates.memory import remember
from labops.certificates.models import Target
from labops.certificates.renewal import renewal_candidates
from labops.certificates.renewed import planned, settle
from labops.certificates.report import CertificateReport, EndpointResult
from labops.certificates.sources import Discovered
from labops.config.policies.certificates import CertificatePolicy
from labops.flow_params import ConfigPath
from labops.reports import Failure
from tasks.progress import Progress
from tasks.publish import publish_report
from tasks.pve import node_certificates, renew_node_certificate
from tasks.stepca import ca_certificates
from tasks.technitium import zone_records
from tasks.tls import judge_api_certificate, probe_batch
from tasks.traefik import http_routers

STATE_KEY = "certificates"


def _discover(ctx: LabContext, report: CertificateReport) -> Discovered:
    """Ask every enabled, configured source at once; one that fails is a failure, not a stop."""
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
    return Discovered(**found)


def _probe(
    targets: list[Target],
    found: Discovered,
    policy: CertificatePolicy,
    done: Progress | None = None,
) -> list[EndpointResult]:
    """Probe in batches, the batches at once (one task run per batch, not per endpoint);
    ``done`` counts each batch's endpoints as the batch ends."""
    size = policy.batch_size
    # quote(): Prefect would otherwise walk every field of every target looking for futures.
    futures = [
        probe_batch.submit(
            quote(targets[i : i + size]),
            found.roots,
            found.intermediates,
            policy,  # type: ignore[call-overload]
        )
        for i in range(0, len(targets), size)
    ]
    for future in as_completed(futures):
        if done is not None:
            done.saw(future.result())
    return [r for f in futures for r in f.result()]


def _renew(ctx: LabContext, report: CertificateReport, found: Discovered, dry_run: bool) -> None:
    """Renew the ACME node certificates due, then check what each node serves afterwards."""
    policy = ctx.config.certificates
    acme = {n.node for n in found.nodes if n.acme}
    for due in renewal_candidates(report.endpoints, acme, policy.renewal.only_when):
        if dry_run:
            report.renewals.append(planned(due))
            continue
        outcome = renew_node_certificate(
            ctx.pve_block(),
            due.target.node or "",
            policy.renewal.force,
            policy.renewal.task_timeout_s,
        )
        served = _probe([due.target], found, policy)[0] if outcome.ok else None
        line, failure = settle(due, outcome, served)
        report.renewals.append(line)
        if failure is not None:
            report.failures.append(failure)
        elif served is not None:
            report.endpoints = [
                served if e.target.key == due.target.key else e for e in report.endpoints
            ]


@flow(
    name="certificates",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def certificates(
    config: ConfigPath | None = None, dry_run: bool = False, renew: bool | None = None
) -> CertificateReport | State:
    """Find every certificate of the lab, validate and classify it, renew what may be renewed.
    Reads only, unless renewal is on and ``dry_run`` off: then it CHANGES THE LAB (a Proxmox
    node's ACME certificate is renewed).

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

    # 1. Discover: every source at once, then each endpoint once.
    found = _discover(ctx, report)
    traefik = cast(TraefikApi, ctx.block("traefik")) if found.traefik is not None else None
    inventory = lab_targets(ctx.config, found, traefik.settings.entrypoint if traefik else None)
    report.skipped += inventory.skipped
    report.sources, report.duplicates = inventory.sources, inventory.duplicates
    log.info(
        "%d endpoints to probe (%d duplicates merged) from %s",
        len(inventory.targets),
        report.duplicates,
        report.sources,
    )
    report.failures += missing_roots(policy)

    # 2. Probe and classify; the report still goes out, saying what could not be checked.
    started = datetime.now(UTC)
    probed = Progress(ctx.config.lab.name, "certificates", len(inventory.targets), "endpoints")
    try:
        report.endpoints = _probe(inventory.targets, found, policy, probed)
    except Exception as exc:
        report.failures.append(Failure(entity="probing", reason=f"{type(exc).__name__}: {exc}"))
    report.probe_seconds = (datetime.now(UTC) - started).total_seconds()

    # 3. What is read from APIs instead: nodes without a probe URL, the CA's own roots.
    pve = ctx.config.systems.proxmox
    for target, pem in api_only_nodes(found.nodes, system_bundle(pve.tls if pve else None)):
        report.endpoints.append(
            judge_api_certificate(target, pem, found.roots, found.intermediates, policy)
        )
    report.endpoints += ca_roots(found.roots, policy, datetime.now(UTC))
    report.failures += unread_nodes(found.nodes)

    # 4. Renew the ACME node certificates that are due (when enabled).
    if policy.renewal.enabled if renew is None else renew:
        try:
            _renew(ctx, report, found, dry_run)
        except Exception as exc:
            report.failures.append(
                Failure(entity="renewal", system="proxmox", reason=f"{type(exc).__name__}: {exc}")
            )
    else:
        report.skipped.append("renewal: disabled (certificates.renewal.enabled)")

    # 5. Alert on changes only (states remembered between runs), then publish.
    previous = ctx.state.load(STATE_KEY, CertStates)
    ctx.state.save(STATE_KEY, remember(report, previous, datetime.now(UTC), policy.reminder_hours))
    # the same count as the report's title: probed endpoints plus nodes read from the API
    log.info("certificates: %d endpoints, %s", len(report.endpoints), report.counts())
    return publish_report(report, ctx.delivery())
