"""Which scheduled jobs run inside a patch window. Pure: the jobs (PVE backup jobs, PBS verify /
GC / sync / prune jobs, labops schedules) with their schedules in, overlaps out.

PVE and PBS schedules are systemd-like calendar events; the forms a homelab writes are read
here: ``[weekdays] HH:MM`` (``sat 02:00``, ``mon..fri 21:30``, ``mon,wed 3:00``), ``*-*-* HH:MM``,
``HH:MM`` and the shortcuts ``hourly``, ``daily``, ``weekly``, ``monthly``. A schedule outside
them is "cannot tell", never "no overlap": a backup job of a node being patched whose schedule
cannot be read refuses the apply like a real overlap does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

JobKind = Literal["pve-backup", "pbs-verify", "pbs-gc", "pbs-sync", "pbs-prune", "labops"]
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_SHORT = {"daily": "00:00", "weekly": "mon 00:00", "monthly": None, "hourly": None}
_TIME = re.compile(r"^(\d{1,2}|\*):(\d{2})$")


class Job(BaseModel):
    """A scheduled job that may run in the window."""

    kind: JobKind
    name: str
    schedule: str
    nodes: list[str] | None = Field(
        None, description="Nodes it works on (None: every node, or not node-bound)."
    )
    minutes: int = Field(60, gt=0, description="How long a run is assumed to last.")
    starts: list[datetime] | None = Field(
        None, description="Start times already known (labops schedules); else read from schedule."
    )


class JobOverlap(BaseModel):
    job: Job
    at: datetime | None = Field(None, description="A run inside the window (None: cannot tell).")
    refused: bool = Field(False, description="A backup of a node being patched: never together.")
    reason: str = ""

    def line(self) -> str:
        when = f"runs at {self.at:%a %H:%M}" if self.at else "schedule cannot be read"
        verdict = "REFUSED" if self.refused else "overlaps"
        return f"{verdict}: {self.job.kind} {self.job.name} ({self.job.schedule}): {when}" + (
            f" - {self.reason}" if self.reason else ""
        )


def _days(spec: str) -> set[int] | None:
    out: set[int] = set()
    for part in spec.lower().split(","):
        if ".." in part:
            a, _, b = part.partition("..")
            if a[:3] not in _DAYS or b[:3] not in _DAYS:
                return None
            i, j = _DAYS.index(a[:3]), _DAYS.index(b[:3])
            out |= set(range(i, j + 1)) if i <= j else set(range(i, 7)) | set(range(0, j + 1))
        elif part[:3] in _DAYS:
            out.add(_DAYS.index(part[:3]))
        else:
            return None
    return out


def starts_of(schedule: str, start: datetime, end: datetime) -> list[datetime] | None:
    """The start times of ``schedule`` in [start - 1 day, end) (None: a form not read here)."""
    text = " ".join(schedule.strip().split())
    if text.lower() in _SHORT:
        short = _SHORT[text.lower()]
        if short is None:
            return None if text.lower() == "monthly" else _hourly(start, end)
        text = short
    words = text.split(" ")
    days: set[int] | None = set(range(7))
    if len(words) == 2:
        days = None if words[0] != "*-*-*" else set(range(7))
        if days is None:
            days = _days(words[0])
        words = words[1:]
    if len(words) != 1 or days is None:
        return None
    m = _TIME.match(words[0])
    if not m:
        return None
    hours = range(24) if m.group(1) == "*" else [int(m.group(1))]
    minute = int(m.group(2))
    if minute > 59 or any(h > 23 for h in hours):
        return None
    out = []
    day = (start - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        if day.weekday() in days:
            out += [day.replace(hour=h, minute=minute) for h in hours]
        day += timedelta(days=1)
    return [t for t in out if start - timedelta(days=1) <= t < end]


def _hourly(start: datetime, end: datetime) -> list[datetime]:
    t = (start - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    out = []
    while t < end:
        out.append(t)
        t += timedelta(hours=1)
    return out


def overlaps(
    jobs: Sequence[Job], start: datetime, end: datetime, nodes: Sequence[str]
) -> list[JobOverlap]:
    """Every job with a run that is going on some time in [start, end), and whether it refuses
    the apply: a PVE backup job touching one of ``nodes`` (the nodes whose guests or selves are
    patched), also when its schedule cannot be read."""
    found = []
    patched = set(nodes)
    for job in jobs:
        same_node = job.kind == "pve-backup" and (
            job.nodes is None or bool(patched & set(job.nodes))
        )
        times = job.starts if job.starts is not None else starts_of(job.schedule, start, end)
        reason = "a backup of a node being patched" if same_node else ""
        if times is None:
            found.append(JobOverlap(job=job, refused=same_node, reason=reason))
            continue
        length = timedelta(minutes=job.minutes)
        hit = next((t for t in sorted(times) if t < end and t + length > start), None)
        if hit is not None:
            found.append(JobOverlap(job=job, at=hit, refused=same_node, reason=reason))
    return found
