"""Security digest: one ranked digest per period across Wazuh, CrowdSec, logs, metrics, Proxmox
and labops' own results, with what changed since the last one, sent even on a quiet day.

Runbook: collect from every configured source at once, each within its own timeout (a source that
fails is named in the digest) -> normalize, de-duplicate, suppress the known-benign and what
CrowdSec already bans -> compare with the previous digest (new / ongoing / resolved) -> rank ->
optional LLM summary (redacted, within budget) -> render the markdown (the artifact) and the
headline (the message: at most 15 lines, one per rule across hosts) -> deliver (artifact,
Telegram, MQTT with the latest retained, heartbeat) -> remember this digest for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.context import LabContext
from blocks.llm import LlmProviders
from labops.config.policies.digest import DigestPolicy
from labops.digest.assemble import brief, build_digest, remembered, render
from labops.digest.collect import answered, describe, failed, fit_tries, skipped, timed_out
from labops.digest.compare import PreviousDigest
from labops.digest.findings import Collected
from labops.digest.render import load_template
from labops.digest.report import LlmOutcome, SecurityDigest, SourceStatus
from labops.flow_params import ConfigPath, DigestPeriod
from labops.reports import Failure
from tasks.crowdsec import crowdsec_activity
from tasks.digest_sources import labops_results, publish_latest, pve_failed_tasks
from tasks.loki import loki_queries
from tasks.publish import publish_report
from tasks.victoriametrics import promql_checks
from tasks.wazuh import wazuh_agents, wazuh_alerts


@dataclass
class Source:
    """One collector as the digest sees it."""

    name: str
    label: str
    covers: str
    system: str | None  # block the collector needs; None for the Prefect API
    submit: Callable[[Any], PrefectFuture[Any]]
    enabled: bool = True


def _within(block: Any, budget_s: float) -> Any:
    """The block with its retry policy fitted into the source's time budget."""
    retry = getattr(block.settings, "retry", None)
    if retry is None:
        return block
    per_try, attempts = fit_tries(retry.timeout_s, retry.attempts, budget_s)
    if (per_try, attempts) == (retry.timeout_s, retry.attempts):
        return block
    fitted = retry.model_copy(update={"timeout_s": per_try, "attempts": attempts})
    return block.with_settings(retry=fitted)


def _sources(
    ctx: LabContext, policy: DigestPolicy, since: datetime, until: datetime
) -> list[Source]:
    hours = max(1, round((until - since).total_seconds() / 3600))
    w, cs = policy.wazuh, policy.crowdsec
    return [
        Source(
            "wazuh-alerts",
            "Wazuh indexer",
            "Wazuh alerts",
            "wazuh_indexer",
            lambda b: wazuh_alerts.submit(
                b, since, until, w.min_level, w.critical_level, w.max_alerts
            ),
        ),
        Source(
            "wazuh-agents",
            "Wazuh manager API",
            "Wazuh agent status",
            "wazuh_api",
            lambda b: wazuh_agents.submit(b, list(w.agent_statuses)),
        ),
        Source(
            "crowdsec",
            "CrowdSec LAPI",
            "CrowdSec alerts or bans",
            "crowdsec",
            lambda b: crowdsec_activity.submit(
                b, hours, cs.max_alerts, cs.include_capi, cs.repeat_offender_alerts
            ),
        ),
        Source(
            "loki",
            "Loki",
            "log findings (SSH, sudo, LogQL queries)",
            "loki",
            lambda b: loki_queries.submit(b, list(policy.log_queries), since, until),
            enabled=bool(policy.log_queries),
        ),
        Source(
            "metrics",
            "VictoriaMetrics",
            "metric checks",
            "victoriametrics",
            lambda b: promql_checks.submit(b, list(policy.prom_checks), until),
            enabled=bool(policy.prom_checks),
        ),
        Source(
            "proxmox",
            "Proxmox VE API",
            "failed Proxmox tasks",
            "proxmox",
            lambda b: pve_failed_tasks.submit(b, since),
            enabled=policy.proxmox_failed_tasks,
        ),
        Source(
            "labops",
            "Prefect API",
            "backup, certificate and patch results",
            None,
            lambda _: labops_results.submit(ctx.config.lab.name, hours * 2, until),
            enabled=policy.labops_results,
        ),
    ]


def collect(
    ctx: LabContext, policy: DigestPolicy, since: datetime, until: datetime
) -> tuple[list[SourceStatus], dict[str, Collected]]:
    """Start every configured source at once; wait for each within its own timeout."""
    statuses: list[SourceStatus] = []
    futures: dict[str, tuple[SourceStatus, PrefectFuture[Any], float]] = {}
    started = time.monotonic()
    for src in _sources(ctx, policy, since, until):
        status = SourceStatus(name=src.name, label=src.label, covers=src.covers)
        statuses.append(status)
        if not src.enabled:
            skipped(status, "nothing to check in the policy")
        elif src.system is not None and not ctx.configured(src.system):
            skipped(status, "not configured")
        else:
            budget = policy.source_timeouts.get(src.name, policy.source_timeout_s)
            try:
                block = _within(ctx.block(src.system), budget) if src.system else None
                futures[src.name] = (status, src.submit(block), budget)
            except Exception as exc:  # a block that cannot be built (secret missing) fails alone
                failed(status, exc)
    results: dict[str, Collected] = {}
    for name, (status, future, budget) in futures.items():
        future.wait(timeout=max(0.0, started + budget - time.monotonic()))
        status.seconds = round(time.monotonic() - started, 3)
        state = future.state
        value = future.result(raise_on_failure=False) if state.is_final() else None
        if not state.is_final():
            timed_out(status, budget)
        elif isinstance(value, BaseException) or not state.is_completed():
            error = value if isinstance(value, BaseException) else RuntimeError(state.message)
            failed(status, error, budget)
        else:
            results[name] = answered(status, cast(Collected, value))
    return statuses, results


@flow(
    name="security-digest",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def security_digest(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    period: DigestPeriod | None = None,
    llm_summary: bool | None = None,
) -> SecurityDigest | State:
    """One ranked security digest across every configured source, sent even when all is quiet.

    Args:
        config: Path of the labops config (None: ``LABOPS_CONFIG`` or ./labops.yaml).
        dry_run: Build and deliver the digest but do not remember it as the previous one.
        period: ``daily`` or ``weekly`` (default: ``digest.period`` of the config).
        llm_summary: Force the LLM summary on or off (default: ``digest.llm_summary``).

    Returns:
        The ``SecurityDigest`` report (a Failed state carrying it when a source failed).
    """
    ctx = LabContext.load(config)
    log = get_run_logger()
    policy = ctx.config.digest
    period = period or policy.period
    until = datetime.now(UTC).replace(microsecond=0)
    since = until - timedelta(hours=24 if period == "daily" else 24 * 7)
    state_key = f"security-digest-{period}"
    previous = ctx.state.load(state_key, PreviousDigest)

    # 1. Collect from every configured source at once, each within its own budget.
    statuses, results = collect(ctx, policy, since, until)
    # 2. Normalize, de-duplicate, suppress, compare with the previous digest, rank.
    report, changes = build_digest(
        statuses,
        results,
        previous,
        policy,
        lab=ctx.config.lab.name,
        period=period,
        since=since,
        until=until,
        dry_run=dry_run,
    )
    # 3. The optional LLM summary, then the markdown.
    if policy.llm_summary if llm_summary is None else llm_summary:
        report.llm = summarize(ctx, report.findings[: policy.max_findings_shown], period)
    report.rendered = render(report, load_template(policy.template), policy.max_findings_shown)
    report.brief = brief(report)
    log.info(
        "digest: %d finding(s), %d new, %d unknown, %d resolved, %d source(s) failed",
        len(report.findings),
        len(changes.new),
        len(changes.unknown),
        len(changes.resolved),
        len(report.failures),
    )
    # 4. Remember it for the next one (not on a dry run).
    if not dry_run:
        ctx.state.save(state_key, remembered(report, previous))
    # 5. Deliver: the latest digest retained on MQTT, then the report's own delivery.
    if ctx.configured("mqtt"):
        try:
            publish_latest(
                ctx.block("mqtt"), ctx.config.lab.name, policy.mqtt_topic, report.payload()
            )
        except Exception as exc:  # a failed delivery step: named once, never hides the digest
            report.failures.append(Failure(entity=publish_latest.name, reason=str(exc)))
    return publish_report(report, ctx.delivery())


def summarize(ctx: LabContext, findings: list[Any], period: str) -> LlmOutcome:
    """The optional LLM summary; every way it can be missing ends up as a note in the digest."""
    if not ctx.configured("llm"):
        return LlmOutcome(note="systems.llm is not configured")
    from tasks.llm import llm_summary

    hosts = list(ctx.config.systems.proxmox.nodes) if ctx.config.systems.proxmox else []
    hosts += [h.name for h in ctx.config.inventory.hosts]
    try:
        return llm_summary(cast(LlmProviders, ctx.block("llm")), findings, period, hosts)
    except Exception as exc:
        return LlmOutcome(note=f"the summary task failed ({describe(exc)})")
