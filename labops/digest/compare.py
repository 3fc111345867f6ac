"""What changed since the previous digest: new, ongoing and resolved findings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field

from labops.digest.findings import Finding


class PreviousDigest(BaseModel):
    """What one digest leaves for the next (kept in the state store)."""

    window_end: datetime
    findings: list[Finding] = Field(default_factory=list)
    banned_ips: list[str] = Field(default_factory=list)


class Changes(BaseModel):
    findings: list[Finding] = Field(..., description="Current findings with their status set.")
    resolved: list[Finding] = Field(default_factory=list)
    unknown: list[Finding] = Field(
        default_factory=list,
        description="Previous findings of a source that failed this time: neither gone nor seen.",
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
    failed_sources: Iterable[str] = (),
) -> Changes:
    """Mark each current finding new or ongoing; list the previous ones that are gone.

    A previous finding whose source failed to answer this time is not "resolved": we cannot know.
    """
    before = {f.key: f for f in (previous.findings if previous else [])}
    failed = set(failed_sources)
    marked = [
        f.model_copy(update={"status": "ongoing" if f.key in before else "new"}) for f in current
    ]
    now = {f.key for f in marked}
    gone = [f for k, f in before.items() if k not in now]
    return Changes(
        findings=marked,
        resolved=[f for f in gone if f.source not in failed],
        unknown=[f for f in gone if f.source in failed],
    )


def new_bans(banned_now: Iterable[str], previous: PreviousDigest | None) -> list[str]:
    """IPs banned now that were not banned at the previous digest (all of them on a first run)."""
    before = set(previous.banned_ips) if previous else set()
    return sorted(set(banned_now) - before)
