"""Backup retention, pure: which backups a prune keeps, removes or leaves protected (as PBS and
PVE select them), and the per-guest dry run the backups report shows.

Times are epoch seconds (periods in UTC).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from labops.backups.models import BackupCopy, RetentionGroup, RetentionMark
from labops.config.policies.backups import Retention

_PERIODS: list[tuple[str, str | None]] = [
    ("keep-last", None),
    ("keep-hourly", "%Y/%m/%d/%H"),
    ("keep-daily", "%Y/%m/%d"),
    ("keep-weekly", "%G/%V"),
    ("keep-monthly", "%Y/%m"),
    ("keep-yearly", "%Y"),
]


def prune_marks(copies: Sequence[BackupCopy], retention: Retention) -> dict[str, str]:
    """volid -> keep | remove | protected, as PBS/PVE prune selects (periods in UTC).

    Each keep-* option walks the backups newest first and keeps the newest one of each period
    not already covered by a backup an earlier option kept; protected backups are never removed
    and do not count. Without any keep option everything is kept.
    """
    options = retention.options()
    newest_first = sorted(copies, key=lambda c: (c.ctime, c.volid), reverse=True)
    if not options:
        return {c.volid: "keep" for c in newest_first}
    marks: dict[str, str] = {}
    for option, fmt in _PERIODS:
        keep = options.get(option)
        if not keep:
            continue

        def period(c: BackupCopy, fmt: str | None = fmt) -> str:
            return c.volid if fmt is None else time.strftime(fmt, time.gmtime(c.ctime))

        covered = {period(c) for c in newest_first if marks.get(c.volid) == "keep"}
        chosen: set[str] = set()
        for copy in newest_first:
            if copy.volid in marks:
                continue
            if copy.protected:
                marks[copy.volid] = "protected"
                continue
            key = period(copy)
            if key in covered:
                continue
            if key in chosen:  # an older backup of a period already kept: PBS marks it now
                marks[copy.volid] = "remove"
                continue
            if len(chosen) >= keep:
                break
            chosen.add(key)
            marks[copy.volid] = "keep"
    for copy in newest_first:
        if copy.volid not in marks:
            marks[copy.volid] = "protected" if copy.protected else "remove"
    return marks


def retention_dry_run(copies: Sequence[BackupCopy], retention: Retention) -> list[RetentionGroup]:
    """Per guest and storage: how many backups a prune would keep and remove."""
    groups: dict[tuple[int, str], list[BackupCopy]] = defaultdict(list)
    for copy in copies:
        groups[(copy.vmid, copy.storage)].append(copy)
    out = []
    for (vmid, storage), items in sorted(groups.items()):
        marks = prune_marks(items, retention)
        listed = [
            RetentionMark(volid=c.volid, ctime=c.ctime, mark=marks[c.volid])  # type: ignore[arg-type]
            for c in sorted(items, key=lambda c: c.ctime)
        ]
        counts: dict[str, int] = defaultdict(int)
        for m in listed:
            counts[m.mark] += 1
        out.append(
            RetentionGroup(
                vmid=vmid,
                storage=storage,
                keep=counts["keep"],
                remove=counts["remove"],
                protected=counts["protected"],
                marks=[m for m in listed if m.mark == "remove"],
            )
        )
    return out
