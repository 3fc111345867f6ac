"""From what the sources answered to the digest: de-duplicated, suppressed, compared with the
previous digest, ranked, rendered; and what the next digest compares with (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from labops.config.policies.digest import DigestPolicy
from labops.digest.compare import Changes, PreviousDigest, compare, new_bans
from labops.digest.findings import Collected, dedupe, rank, suppress
from labops.digest.render import render_markdown
from labops.digest.report import SecurityDigest, SourceStatus
from labops.outcome import CouldNotCheck
from labops.reports import Failure


def date_unread(
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


def build_digest(
    statuses: list[SourceStatus],
    results: dict[str, Collected],
    previous: PreviousDigest | None,
    policy: DigestPolicy,
    *,
    lab: str,
    period: Literal["daily", "weekly"],
    since: datetime,
    until: datetime,
    dry_run: bool,
) -> tuple[SecurityDigest, Changes]:
    """The digest of one window (not rendered yet) and how it changed since ``previous``."""
    unknown_sources = date_unread([s for s in statuses if s.state != "ok"], previous, until)
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
    report = SecurityDigest(
        period=period,
        window_start=since,
        window_end=until,
        findings=rank([*changes.findings, *changes.unknown]),
        resolved=changes.resolved,
        suppressed=hidden,
        sources=statuses,
        new_bans=new_bans(banned, previous) if "crowdsec" in results else [],
        banned_ips=banned,
        dry_run=dry_run,
        mqtt_topic=policy.mqtt_topic,
        lab=lab,
    )
    report.failures = [
        Failure(entity=s.label, reason=s.problem(), system=s.name)
        for s in statuses
        if s.state == "failed"
    ]
    report.skipped = [f"{s.name}: {s.detail}" for s in statuses if s.state == "skipped"]
    return report, changes


def render(report: SecurityDigest, template: str, max_shown: int) -> str:
    """The digest's markdown (the same report always gives the same text)."""
    return render_markdown(
        template,
        lab=report.lab,
        period=report.period,
        window_start=report.window_start,
        window_end=report.window_end,
        findings=report.findings,
        resolved=report.resolved,
        problems=report.problems,
        sources_ok=[s.label for s in report.sources if s.state == "ok"],
        sources=[s.line() for s in report.sources],
        new_bans=report.new_bans,
        suppressed_count=len(report.suppressed),
        summary=report.llm.summary,
        summary_note=report.llm.note,
        max_shown=max_shown,
    )


def remembered(report: SecurityDigest, previous: PreviousDigest | None) -> PreviousDigest:
    """What the next digest compares with. Unknown findings are carried over (with their first
    "since"): not known to be gone; the bans stay the last ones CrowdSec gave when it failed."""
    crowdsec_read = any(s.name == "crowdsec" and s.state == "ok" for s in report.sources)
    return PreviousDigest(
        window_end=report.window_end,
        findings=report.findings,
        banned_ips=report.banned_ips
        if crowdsec_read
        else (previous.banned_ips if previous else []),
        unknown_since={s.name: s.since for s in report.sources if s.state != "ok" and s.since},
    )
