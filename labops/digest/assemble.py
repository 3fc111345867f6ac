"""From what the sources answered to the digest: de-duplicated, suppressed, compared with the
previous digest, ranked, rendered; and what the next digest compares with (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from labops.config.policies.digest import DigestPolicy
from labops.digest.compare import Changes, PreviousDigest, compare, new_bans
from labops.digest.findings import Collected, dedupe, rank, suppress
from labops.digest.headline import MAX_LINES, headline
from labops.digest.render import render_markdown
from labops.digest.report import SecurityDigest, SourceStatus
from labops.markdown import md_text
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


def brief(report: SecurityDigest, max_lines: int = MAX_LINES) -> str:
    """The message read in 30 seconds: the window, the sources that did not answer, the
    headline, the optional LLM summary (below it, quoted), and where the rest is.

    Only the report's own findings make the lines; the summary is a separate, quoted block, so
    whatever a model answers cannot add, drop or reorder a line of the deterministic part.
    """
    lines = [
        f"Window: {report.window_start:%Y-%m-%d %H:%M} to {report.window_end:%Y-%m-%d %H:%M} UTC"
    ]
    if report.problems:
        lines += ["", "Sources that did not answer:"]
        lines += [f"- {md_text(p, 300)}" for p in report.problems]
    if report.findings:
        shown = headline(report.findings, max_lines)
        lines += ["", f"Findings ({len(report.findings)} row(s) in the table):"]
        lines += [f"- {line}" for line in shown.lines()]
    else:
        lines += ["", f"All quiet: nothing at or above the thresholds this {_word(report)}."]
    if report.new_bans:
        lines += ["", f"{len(report.new_bans)} new CrowdSec ban(s) since the last digest."]
    if report.resolved:
        lines += [f"{len(report.resolved)} finding(s) resolved since the last digest."]
    if report.llm.summary:
        lines += ["", "Summary (LLM, read as text):", report.llm.summary]
    elif report.llm.note:
        lines += ["", f"No LLM summary: {md_text(report.llm.note, 300)}"]
    lines += ["", "The full digest and the table of every finding are in the run's artifacts."]
    return "\n".join(lines) + "\n"


def _word(report: SecurityDigest) -> str:
    return "day" if report.period == "daily" else "week"


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
