"""Do the schedules of lab-changing flows overlap? Pure: start times in, overlaps out.

A run is assumed to last ``platform.assumed_run_minutes`` from its start. Two schedules overlap
when a run of one starts before a run of the other has ended; a schedule overlaps itself when
it starts again before its previous run ended (Prefect then cancels the new run).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import combinations

from pydantic import BaseModel


class Planned(BaseModel):
    """The start times of one deployment over the horizon looked at, and its assumed length."""

    name: str
    cron: str
    minutes: int
    starts: list[datetime]


class Overlap(BaseModel):
    first: Planned
    second: Planned
    at: datetime
    """When both are running (the later start of the first pair found)."""

    def line(self, timezone: str) -> str:
        """One line for ``labops deploy`` / ``serve``."""
        when = f"{self.at:%a %Y-%m-%d %H:%M} ({timezone})"
        if self.first.name == self.second.name:
            return (
                f"warning: schedule of {self.first.name} ({self.first.cron}) starts again "
                f"before a run of ~{self.first.minutes} min ends, e.g. {when}; the new run is "
                f"cancelled: space it out or set platform.assumed_run_minutes.{self.first.name}"
            )
        a, b = self.first, self.second
        return (
            f"warning: schedules of {a.name} ({a.cron}, ~{a.minutes} min) and {b.name} "
            f"({b.cron}, ~{b.minutes} min) overlap, e.g. {when}: move one, or set "
            "platform.assumed_run_minutes if runs are shorter"
        )


def _first_overlap(a: Planned, b: Planned) -> datetime | None:
    """The first moment a run of ``a`` and a run of ``b`` both run (starts are sorted)."""
    da, db = timedelta(minutes=a.minutes), timedelta(minutes=b.minutes)
    i = j = 0
    while i < len(a.starts) and j < len(b.starts):
        sa, sb = a.starts[i], b.starts[j]
        if sa + da <= sb:
            i += 1
        elif sb + db <= sa:
            j += 1
        else:
            return max(sa, sb)
    return None


def _self_overlap(a: Planned) -> datetime | None:
    length = timedelta(minutes=a.minutes)
    for earlier, later in zip(a.starts, a.starts[1:], strict=False):
        if later < earlier + length:
            return later
    return None


def overlaps(planned: list[Planned]) -> list[Overlap]:
    """Every pair of schedules (and every schedule with itself) that can overlap, in order."""
    found = []
    ordered = [p.model_copy(update={"starts": sorted(p.starts)}) for p in planned]
    for one in ordered:
        at = _self_overlap(one)
        if at is not None:
            found.append(Overlap(first=one, second=one, at=at))
    for a, b in combinations(ordered, 2):
        at = _first_overlap(a, b)
        if at is not None:
            found.append(Overlap(first=a, second=b, at=at))
    return found
