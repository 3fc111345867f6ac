"""A doc's own review date ("Last reviewed: 2024-06-01", "Updated 2025-11-20."), else the day of
its last commit: older than the configured age, the doc is stale, listed with how many of its
claims drifted (pure)."""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel

from labops.docs.models import Status, Verdict

_REVIEWED = re.compile(
    r"\b(?:last\s+)?(?:reviewed|updated|checked|verified)\s*(?:on|at)?\s*:?\s*"
    r"(?P<d>\d{4}-\d{2}-\d{2})",
    re.IGNORECASE,
)


class StaleDoc(BaseModel):
    file: str
    reviewed: date
    age_days: int
    drifted: int
    dated_by: str = "the doc"  # or "last commit"


def review_date(text: str) -> date | None:
    """The newest review/update date a doc states about itself, or None."""
    dates = []
    for m in _REVIEWED.finditer(text):
        try:
            dates.append(date.fromisoformat(m.group("d")))
        except ValueError:
            continue  # "2024-13-40" is no date: not a review date
    return max(dates) if dates else None


def stale_docs(
    texts: dict[str, str],
    verdicts: list[Verdict],
    today: date,
    max_age_days: int,
    changed: dict[str, date] | None = None,
) -> list[StaleDoc]:
    """Each doc whose stated review date, else its last commit's day, is older than
    ``max_age_days``."""
    out = []
    for name in sorted(texts):
        reviewed = review_date(texts[name])
        dated_by = "the doc"
        if reviewed is None and changed and name in changed:
            reviewed, dated_by = changed[name], "last commit"
        if reviewed is None or (today - reviewed).days <= max_age_days:
            continue
        drifted = sum(v.claim.file == name and v.status == Status.DRIFTED for v in verdicts)
        out.append(
            StaleDoc(
                file=name,
                reviewed=reviewed,
                age_days=(today - reviewed).days,
                drifted=drifted,
                dated_by=dated_by,
            )
        )
    return out
