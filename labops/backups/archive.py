"""Intentional orphans, pure: backups of deleted guests kept on purpose (protected on their
storage, or listed in ``backups.archived``) are "archived": shown, never a coverage gap, and
alerted only when they change (backups deleted, protection removed, keep-until passed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pydantic import BaseModel, Field

from labops.backups.models import OrphanGroup
from labops.config.policies.backups import ArchivedGuest


class ArchivedGroup(BaseModel):
    """A deleted guest's backups on one storage, kept on purpose."""

    vmid: int
    storage: str
    count: int
    protected: int
    newest: float
    size: int
    why: str = Field(..., description="listed | protected | listed+protected")
    note: str | None = None
    keep_until: date | None = None

    @property
    def key(self) -> str:
        return f"{self.vmid}@{self.storage}"


class ArchiveSeen(BaseModel):
    """What the previous run saw of one archived group (only what a change is judged on)."""

    count: int
    protected: int
    expired: bool = False


class ArchiveMemory(BaseModel):
    """Run-to-run memory of the archived groups (key ``vmid@storage``)."""

    groups: dict[str, ArchiveSeen] = Field(default_factory=dict)


class ArchiveAudit(BaseModel):
    """The orphans split into archived ones and real coverage gaps, plus what changed."""

    archived: list[ArchivedGroup] = Field(default_factory=list)
    orphans: list[OrphanGroup] = Field(default_factory=list)
    changes: list[str] = Field(default_factory=list)
    memory: ArchiveMemory = Field(default_factory=ArchiveMemory)


def _listed(entries: Sequence[ArchivedGuest]) -> dict[int, ArchivedGuest]:
    return {e.vmid: e for e in entries}


def audit_archive(
    orphans: Sequence[OrphanGroup],
    entries: Sequence[ArchivedGuest],
    today: date,
    previous: ArchiveMemory | None,
) -> ArchiveAudit:
    """Split ``orphans`` (backups of guests the cluster no longer has) into archived groups and
    coverage gaps, and compare the archived ones with ``previous`` (None: first run, nothing is
    a change). A listed guest past its keep-until and without protection is an orphan again."""
    listed = _listed(entries)
    before = previous.groups if previous is not None else {}
    out = ArchiveAudit()
    present: set[str] = set()
    for o in orphans:
        entry = listed.get(o.vmid)
        expired = bool(entry and entry.keep_until is not None and today > entry.keep_until)
        kept_by_list = entry is not None and not expired
        seen = before.get(o.key)
        label = f"archived backups of guest {o.vmid} on {o.storage}"
        if seen is not None:
            present.add(o.key)
            if o.count < seen.count:
                out.changes.append(f"{label}: {seen.count - o.count} deleted ({o.count} left)")
            if o.protected < seen.protected:
                out.changes.append(
                    f"{label}: protection removed from {seen.protected - o.protected} "
                    f"({o.protected} protected left)"
                )
            if expired and not seen.expired and entry is not None:
                out.changes.append(f"{label}: keep-until {entry.keep_until} passed")
        if not (kept_by_list or o.protected):
            out.orphans.append(o)
            continue
        why = "+".join(w for w, on in (("listed", kept_by_list), ("protected", o.protected)) if on)
        out.archived.append(
            ArchivedGroup(
                vmid=o.vmid,
                storage=o.storage,
                count=o.count,
                protected=o.protected,
                newest=o.newest,
                size=o.size,
                why=why,
                note=(entry.note if entry else None) or o.notes,
                keep_until=entry.keep_until if entry else None,
            )
        )
        out.memory.groups[o.key] = ArchiveSeen(
            count=o.count, protected=o.protected, expired=expired
        )
    for key, seen in sorted(before.items()):
        if key not in present:
            vmid, _, storage = key.partition("@")
            out.changes.append(
                f"archived backups of guest {vmid} on {storage}: all {seen.count} deleted"
            )
    return out
