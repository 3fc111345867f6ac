"""The reconciliation's decisions between reading the docs and publishing: every claim of the
docs, the live facts by source, the drift, the proposed patch (refused when it would carry a
secret) and the name of its branch (pure; the flow reads, asks and writes)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from labops.config.policies.docs import PinnedClaim
from labops.docs.compare import compare, undocumented
from labops.docs.extract import extract_claims
from labops.docs.models import Claim, LiveFacts
from labops.docs.patch import patched_texts, unified_diff
from labops.docs.pin import apply_pins
from labops.docs.report import DocReport
from labops.docs.staleness import stale_docs
from labops.redact import contains_secret
from labops.reports import Failure


def documented_claims(texts: dict[str, str], pins: list[PinnedClaim]) -> list[Claim]:
    """Every claim the docs make: found in the text, and the sentences the config pins."""
    claims = [c for name, text in texts.items() for c in extract_claims(text, name)]
    return apply_pins(claims, texts, pins)


def record(live: LiveFacts, source: str, value: Any) -> None:
    """One source's answer (its task's return value) in the live facts."""
    if source == "proxmox":
        live.nodes, live.guests, live.pve_version, *addresses = value
        live.node_ips = addresses[0] if addresses else None
    elif source == "traefik":
        live.routers = value
    elif source == "technitium":
        live.dns_records = value
    elif source == "beszel":
        live.beszel_systems = value
    elif source == "victoriametrics":
        live.scrape_targets = value
    elif source == "wazuh_api":
        live.wazuh_agents = value


def note_unavailable(report: DocReport, live: LiveFacts) -> None:
    """Every source without facts is listed; one that failed (not merely unconfigured) is a
    failure: what it would have checked stays unverified."""
    for source, why in live.unavailable.items():
        report.skipped.append(f"{source}: {why}")
        if why.startswith("failed"):
            report.failures.append(Failure(entity=source, reason=why, system=source))


def judge(
    report: DocReport,
    claims: list[Claim],
    live: LiveFacts,
    ignore_guests: Iterable[int],
    ignore_kinds: Iterable[str] = (),
) -> None:
    """Each claim against the lab, and what is live but undocumented (ignored guests and
    ignored kinds aside)."""
    ignored = [f"{kind} {vmid} " for vmid in ignore_guests for kind in ("CT", "VM")]
    kinds = set(ignore_kinds)
    report.verdicts = compare(claims, live)
    report.undocumented = [
        u
        for u in undocumented(claims, live)
        if not u.entity.startswith(tuple(ignored)) and u.kind not in kinds
    ]


def note_stale(
    report: DocReport,
    texts: dict[str, str],
    changed: dict[str, date],
    today: date,
    max_age_days: int | None,
) -> None:
    """Docs older than allowed by their own review date (else their last commit), with their
    drifted claims counted."""
    if max_age_days is not None:
        report.stale = stale_docs(texts, report.verdicts, today, max_age_days, changed)


def propose_patch(report: DocReport, texts: dict[str, str]) -> dict[str, str]:
    """The drifted values patched: the diff in the report, the patched texts returned. A diff
    holding a registered secret (a token pasted into a doc) is refused whole: it must not reach
    the UI nor a commit."""
    patched = patched_texts(texts, report.verdicts)
    report.diff = unified_diff(texts, patched)
    if contains_secret(report.diff):
        report.diff = ""
        report.failures.append(
            Failure(
                entity="proposed patch",
                reason="refused: it holds a registered secret (take it out of the docs); "
                "no diff published, nothing committed",
            )
        )
        return {}
    return patched


def fix_branch(prefix: str, commit: str | None, now: datetime) -> str:
    """The branch of a fix: the prefix, the day and the commit of the docs it was checked on."""
    return f"{prefix}{now.strftime('%Y%m%d')}-{(commit or 'x')[:8]}"
