"""What changed since the previous digest: new, ongoing, unknown and resolved findings.

A previous finding that is not seen again is **resolved** only when the check that would show it
ran and succeeded: its source answered and, for a per-entity finding (``Finding.scope``), that
entity was checked. Otherwise it is **unknown since** the first check that could not run, and it
stays in the digest as a finding, with the severity it had when last seen: not knowing is never
better than the last thing known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, Field

from labops.digest.findings import Finding
from labops.outcome import CouldNotCheck


class PreviousDigest(BaseModel):
    """What one digest leaves for the next (kept in the state store)."""

    window_end: datetime
    findings: list[Finding] = Field(default_factory=list)
    banned_ips: list[str] = Field(default_factory=list)
    unknown_since: dict[str, datetime] = Field(
        default_factory=dict,
        description="Source name -> the first digest in a row in which it could not be read.",
    )


class Changes(BaseModel):
    findings: list[Finding] = Field(..., description="Current findings with their status set.")
    resolved: list[Finding] = Field(default_factory=list)
    unknown: list[Finding] = Field(
        default_factory=list,
        description="Previous findings whose check could not run this time: neither gone nor "
        "seen, status 'unknown' with why and since when.",
    )

    @property
    def new(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "new"]

    @property
    def ongoing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "ongoing"]


def compare(
    current: Iterable[Finding],
    previous: PreviousDigest | None,
    *,
    now: datetime,
    unknown_sources: Mapping[str, CouldNotCheck] | None = None,
    unknown_scopes: Mapping[str, CouldNotCheck] | None = None,
    checked_scopes: Iterable[str] = (),
) -> Changes:
    """Mark each current finding new or ongoing; sort the previous ones not seen again into
    resolved (their check succeeded) and unknown (it could not run).

    ``unknown_sources``: digest source (``Finding.collector``, else ``Finding.source``) -> why
    it was not read this time (failed, or skipped).
    ``unknown_scopes`` / ``checked_scopes``: per-entity scopes not checked / checked this time.
    A scoped finding whose scope is in neither was not looked at (not in the latest report):
    unknown too.
    """
    before = {f.key: f for f in (previous.findings if previous else [])}
    sources = unknown_sources or {}
    scopes = unknown_scopes or {}
    checked = set(checked_scopes)
    marked = [
        f.model_copy(update={"status": "ongoing" if f.key in before else "new"}) for f in current
    ]
    now_keys = {f.key for f in marked}
    resolved: list[Finding] = []
    unknown: list[Finding] = []
    for key, f in before.items():
        if key in now_keys:
            continue
        why = _why_unknown(f, sources, scopes, checked, now)
        if why is None:
            resolved.append(f.model_copy(update={"unknown": None}))
            continue
        first = f.unknown.since if f.unknown is not None else None
        unknown.append(f.model_copy(update={"status": "unknown", "unknown": why.earlier(first)}))
    return Changes(findings=marked, resolved=resolved, unknown=unknown)


def _why_unknown(
    f: Finding,
    sources: Mapping[str, CouldNotCheck],
    scopes: Mapping[str, CouldNotCheck],
    checked: set[str],
    now: datetime,
) -> CouldNotCheck | None:
    # A finding kept by an older labops has no collector: any source of its kind counts.
    names = [f.collector] if f.collector else [n for n in sources if n.split("-")[0] == f.source]
    for name in names:
        if name in sources:
            return sources[name]
    if f.scope is None or f.scope in checked:
        return None
    return scopes.get(f.scope) or CouldNotCheck(
        reason="not in the latest report", kind="not-checked", since=now
    )


def new_bans(banned_now: Iterable[str], previous: PreviousDigest | None) -> list[str]:
    """IPs banned now that were not banned at the previous digest (all of them on a first run)."""
    before = set(previous.banned_ips) if previous else set()
    return sorted(set(banned_now) - before)
