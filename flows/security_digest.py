"""Security digest: one ranked digest per period across Wazuh, CrowdSec, logs, metrics, Proxmox
and labops' own results, with what changed since the last one, sent even on a quiet day.

Runbook: collect from every configured source at once, each within its own timeout (a source that
fails is named in the digest) -> normalize, de-duplicate, suppress the known-benign and what
CrowdSec already bans -> compare with the previous digest (new / ongoing / resolved) -> rank ->
render the markdown -> optional LLM summary (redacted, within budget) -> deliver (artifact,
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
from labops.digest.compare import PreviousDigest, compare, new_bans
from labops.digest.findings import Collected, dedupe, rank, suppress
from labops.digest.render import load_template, render_markdown
from labops.digest.report import LlmOutcome, SecurityDigest, SourceStatus
from labops.errors import ApiError, AuthFailed, LabopsError, Unreachable
from labops.flow_params import ConfigPath, DigestPeriod
from labops.outcome import CouldNotCheck, kind_of
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


def _with_timeout(block: Any, timeout_s: float) -> Any:
    """The block with its retry policy fitted into the source's time budget.

    A task thread cannot be interrupted, and the flow waits for it before it ends; so the tries
    themselves must fit: at least one retry when the policy has retries (a transient 500), and no
    more tries than the budget holds (a stalled source).
    """
    retry = getattr(block, "retry", None)
    if retry is None:
        return block
    per_try = min(retry.timeout_s, timeout_s if retry.attempts == 1 else timeout_s / 2)
    attempts = max(1, min(retry.attempts, int(timeout_s // per_try)))
    if (per_try, attempts) == (retry.timeout_s, retry.attempts):
        return block
    fitted = retry.model_copy(update={"timeout_s": per_try, "attempts": attempts})
    return block.model_copy(update={"retry": fitted})


def _date_unread(
    unread: list[SourceStatus], previous: PreviousDigest | None, now: datetime
) -> dict[str, CouldNotCheck]:
    """Date each source not read this time (failed, or skipped) from the first digest in a row
    that did not read it, and say why its findings could not be checked. Skipped is no check
    either: its earlier findings are not resolved by it."""
    before = previous.unknown_since if previous else {}
    out: dict[str, CouldNotCheck] = {}
    for s in unread:
        s.since = min(before.get(s.name, now), now)
        kind = "skipped" if s.state == "skipped" else (s.kind or "error")
        out[s.name] = CouldNotCheck(reason=s.detail, kind=kind, since=s.since)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Unreachable):
        return f"unreachable ({exc.message})"
    if isinstance(exc, AuthFailed):
        return f"refused the credentials ({exc.message})"
    if isinstance(exc, ApiError):
        return f"answered with an error ({exc.message})"
    if isinstance(exc, LabopsError):
        return f"failed ({exc})"
    return f"failed ({type(exc).__name__}: {str(exc)[:200]})"


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
    results: dict[str, Collected] = {}
    started = time.monotonic()
    for src in _sources(ctx, policy, since, until):
        status = SourceStatus(name=src.name, label=src.label, covers=src.covers)
        statuses.append(status)
        if not src.enabled:
            status.state, status.detail = "skipped", "nothing to check in the policy"
            continue
        if src.system is not None and not ctx.configured(src.system):
            status.state, status.detail = "skipped", "not configured"
            continue
        timeout = policy.source_timeouts.get(src.name, policy.source_timeout_s)
        try:
            block = _with_timeout(ctx.block(src.system), timeout) if src.system else None
            futures[src.name] = (status, src.submit(block), timeout)
        except Exception as exc:  # a block that cannot be built (secret missing) fails alone
            status.state, status.detail, status.kind = "failed", _describe(exc), kind_of(exc)
    for name, (status, future, timeout) in futures.items():
        left = max(0.0, started + timeout - time.monotonic())
        future.wait(timeout=left)
        status.seconds = round(time.monotonic() - started, 3)
        state = future.state
        if not state.is_final():
            status.state, status.detail = "failed", f"did not answer within {timeout:g} s"
            status.kind = "timeout"
            continue
        value = future.result(raise_on_failure=False)
        if isinstance(value, BaseException) or not state.is_completed():
            error = value if isinstance(value, BaseException) else RuntimeError(state.message)
            status.state, status.detail = "failed", _describe(error)
            status.kind = kind_of(error)
            if isinstance(error, Unreachable) and "timed out" in error.message:
                # the request's own timeout is the budget: say it the same way as the deadline
                status.detail = f"did not answer within {timeout:g} s"
            continue
        collected = cast(Collected, value)
        collected.findings = [f.model_copy(update={"collector": name}) for f in collected.findings]
        results[name] = collected
        status.findings = len(collected.findings)
        status.detail = collected.note
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

    statuses, results = collect(ctx, policy, since, until)
    failed = [s for s in statuses if s.state == "failed"]
    unread = [s for s in statuses if s.state != "ok"]
    unknown_sources = _date_unread(unread, previous, until)
    banned = sorted({ip for c in results.values() for ip in c.banned_ips})

    findings = dedupe(f for c in results.values() for f in c.findings)
    kept, hidden = suppress(
        findings, policy.suppressions, banned if policy.suppress_banned_ips else ()
    )
    changes = compare(
        kept,
        previous,
        now=until,
        unknown_sources=unknown_sources,
        unknown_scopes={k: v for c in results.values() for k, v in c.unknown.items()},
        checked_scopes=[s for c in results.values() for s in c.checked],
    )
    ranked = rank([*changes.findings, *changes.unknown])
    fresh_bans = new_bans(banned, previous) if "crowdsec" in results else []

    report = SecurityDigest(
        period=period,
        window_start=since,
        window_end=until,
        findings=ranked,
        resolved=changes.resolved,
        suppressed=hidden,
        sources=statuses,
        new_bans=fresh_bans,
        banned_ips=banned,
        dry_run=dry_run,
        mqtt_topic=policy.mqtt_topic,
        lab=ctx.config.lab.name,
    )
    report.failures = [Failure(entity=s.label, reason=s.problem(), system=s.name) for s in failed]
    report.skipped = [f"{s.name}: {s.detail}" for s in statuses if s.state == "skipped"]

    wants_llm = policy.llm_summary if llm_summary is None else llm_summary
    if wants_llm:
        report.llm = summarize(ctx, ranked[: policy.max_findings_shown], period)

    report.rendered = render_markdown(
        load_template(policy.template),
        lab=ctx.config.lab.name,
        period=period,
        window_start=since,
        window_end=until,
        findings=ranked,
        resolved=changes.resolved,
        problems=report.problems,
        sources_ok=[s.label for s in statuses if s.state == "ok"],
        sources=[s.line() for s in statuses],
        new_bans=fresh_bans,
        suppressed_count=len(hidden),
        summary=report.llm.summary,
        summary_note=report.llm.note,
        max_shown=policy.max_findings_shown,
    )
    log.info(
        "digest: %d finding(s), %d new, %d unknown, %d resolved, %d source(s) failed",
        len(ranked),
        len(changes.new),
        len(changes.unknown),
        len(changes.resolved),
        len(failed),
    )

    if not dry_run:
        # Unknown findings are carried over (with their first "since"): not known to be gone.
        ctx.state.save(
            state_key,
            PreviousDigest(
                window_end=until,
                findings=ranked,
                banned_ips=banned
                if "crowdsec" in results
                else (previous.banned_ips if previous else []),
                unknown_since={s.name: s.since for s in unread if s.since is not None},
            ),
        )
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
        return LlmOutcome(note=f"the summary task failed ({_describe(exc)})")
