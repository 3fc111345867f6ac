"""Findings: one normalized shape for every source, then de-duplicated, suppressed and ranked."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from labops.config.policies.digest import Suppression
from labops.outcome import CouldNotCheck
from labops.reports import Severity

# new / ongoing: seen by this digest's checks. unknown: seen before, and the check that would
# show whether it is still there could not run (it is not "resolved"; see compare.py).
Status = Literal["new", "ongoing", "unknown"]
_STATUS_ORDER = {"new": 0, "unknown": 1, "ongoing": 2}
MAX_EVIDENCE = 5


class Finding(BaseModel):
    """Something worth an operator's attention, from one source, about one entity."""

    source: str = Field(..., description="wazuh, crowdsec, loki, metrics, proxmox, labops")
    severity: Severity
    title: str
    entity: str = Field(..., description="Agent, host, guest, target or IP it is about.")
    rule: str | None = Field(None, description="Rule id, scenario or check name.")
    count: int = Field(1, ge=0)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    ip: str | None = Field(None, description="Source IP, when the finding has one.")
    users: list[str] = Field(default_factory=list, description="User names involved.")
    evidence: list[str] = Field(default_factory=list, description="A few raw lines, as data.")
    status: Status = "new"
    collector: str | None = Field(
        None,
        description="The digest source that read it (wazuh-alerts, wazuh-agents, labops ...): "
        "when that source is not read, the finding is unknown, not resolved.",
    )
    scope: str | None = Field(
        None,
        description="The per-entity check that covers it ('patching|immich'): only a later "
        "successful check of this scope resolves it. None: the whole source's answer does.",
    )
    unknown: CouldNotCheck | None = Field(
        None, description="Could not check: why, and since when (the first failed check)."
    )

    @property
    def key(self) -> str:
        """Identity across sources' repeats and across digests."""
        return f"{self.source}|{self.rule or self.title}|{self.entity}"


class Suppressed(BaseModel):
    finding: Finding
    reason: str


def merge(a: Finding, b: Finding) -> Finding:
    """Two findings with one key: counts add up, the time span widens, the worse severity wins."""
    firsts = [t for t in (a.first_seen, b.first_seen) if t is not None]
    lasts = [t for t in (a.last_seen, b.last_seen) if t is not None]
    evidence = list(dict.fromkeys([*a.evidence, *b.evidence]))[:MAX_EVIDENCE]
    return a.model_copy(
        update={
            "severity": a.severity if a.severity.rank >= b.severity.rank else b.severity,
            "count": a.count + b.count,
            "first_seen": min(firsts) if firsts else None,
            "last_seen": max(lasts) if lasts else None,
            "users": sorted(set(a.users) | set(b.users)),
            "evidence": evidence,
            "ip": a.ip or b.ip,
        }
    )


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per key, in first-seen order of the keys."""
    merged: dict[str, Finding] = {}
    for f in findings:
        merged[f.key] = merge(merged[f.key], f) if f.key in merged else f
    return list(merged.values())


def _matches(rule: Suppression, f: Finding) -> bool:
    checks = [
        (rule.source, f.source),
        (rule.rule, f.rule),
        (rule.entity, f.entity),
        (rule.ip, f.ip),
    ]
    if any(want is not None and want != have for want, have in checks):
        return False
    return not (rule.title_contains and rule.title_contains.lower() not in f.title.lower())


def suppress(
    findings: Iterable[Finding],
    rules: Iterable[Suppression],
    banned_ips: Iterable[str] = (),
) -> tuple[list[Finding], list[Suppressed]]:
    """Split into (kept, suppressed): configured known-benign rules, then IPs already banned.

    A banned IP hides other sources' findings about it (already handled); CrowdSec's own findings
    stay, since they are where the ban is reported.
    """
    rules = list(rules)
    banned = set(banned_ips)
    kept: list[Finding] = []
    hidden: list[Suppressed] = []
    for f in findings:
        rule = next((r for r in rules if _matches(r, f)), None)
        if rule is not None:
            hidden.append(Suppressed(finding=f, reason=f"known benign: {rule.reason}"))
        elif f.ip and f.ip in banned and f.source != "crowdsec":
            hidden.append(Suppressed(finding=f, reason=f"{f.ip} already banned by CrowdSec"))
        else:
            kept.append(f)
    return kept, hidden


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first: severity, then new, unknown, ongoing, then how often, then most recent."""

    def key(f: Finding) -> tuple[int, int, int, float, str, str]:
        last = f.last_seen.timestamp() if f.last_seen else 0.0
        order = _STATUS_ORDER[f.status]
        return (-f.severity.rank, order, -f.count, -last, f.title, f.entity)

    return sorted(findings, key=key)


def group_by_source(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    """Ranked findings grouped per source, sources in order of their worst finding."""
    groups: dict[str, list[Finding]] = {}
    for f in rank(findings):
        groups.setdefault(f.source, []).append(f)
    return groups


def worst(findings: Iterable[Finding]) -> Severity:
    ranked = [f.severity for f in findings]
    return max(ranked, key=lambda s: s.rank) if ranked else Severity.OK


class Collected(BaseModel):
    """What one source's collector returns.

    A source that checks entity by entity (labops' own flow results) also says which scopes it
    checked (fine or with findings) and which it could not check, so that a finding of an entity
    that could not be checked is never taken as resolved.
    """

    findings: list[Finding] = Field(default_factory=list)
    note: str = Field("", description="Something the operator should know (partial read, ...).")
    banned_ips: list[str] = Field(default_factory=list, description="CrowdSec: active bans.")
    checked: list[str] = Field(default_factory=list, description="Scopes checked this time.")
    unknown: dict[str, CouldNotCheck] = Field(
        default_factory=dict, description="Scopes not checked this time: why, since when."
    )
