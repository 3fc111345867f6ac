""" "Fixed" notices: the first good run after failed ones, and findings that resolved.

What a flow remembers from run to run (:class:`Memory`, one per lab and operation, in the
lab's state directory) and the decision of what is fixed (:func:`advance`), pure and tested
without I/O. The honest rules of :mod:`labops.outcome`:

- a dry run changes nothing, here either;
- a failed run (a failure, or something it could not check) resolves nothing: what it did not
  see may still be there. It starts (or continues) the "failing since" and adds what it found;
- a run that did its job ends the failing (one notice: how long the operation failed) and
  resolves each remembered finding whose entity it checked and no longer found (one notice for
  all of them, each with how long it lasted);
- a run limited to part of its scope (``hosts``, ``vmid``... given: :data:`SCOPE_PARAMETERS`)
  resolves nothing it did not look at: only the entities its report says it checked
  (``OperationReport.checked``), none when it does not say;
- only findings naming their entities (``Found.of``) at warning and above are remembered one by
  one; a finding without names is never reported fixed (its text alone cannot say it went
  away), and notes (info) come and go without notices.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from labops.outcome import Found, Outcome, RunResult, Severity
from labops.reports import Notification

SCOPE_PARAMETERS = ("hosts", "guests", "vmid", "node", "storage")
"""Flow parameters that narrow a run to part of the lab (``labops.flow_params``)."""


def scope_checked(parameters: dict[str, object], checked: set[str] | None) -> set[str] | None:
    """What a run may resolve: its whole scope (None) unless a parameter narrowed it; then
    only what its report says it checked (nothing when it does not say)."""
    narrowed = any(parameters.get(name) not in (None, [], "") for name in SCOPE_PARAMETERS)
    if not narrowed:
        return checked
    return checked if checked is not None else set()


class OpenFinding(BaseModel):
    kind: str
    name: str
    severity: Severity
    since: datetime


class Memory(BaseModel):
    """What is still wrong, as of the last run that could say."""

    failing_since: datetime | None = None
    failing_detail: str = ""
    findings: dict[str, OpenFinding] = Field(default_factory=dict)


class FixedItem(BaseModel):
    what: str
    since: datetime
    lasted: timedelta
    severity: Severity


def _key(kind: str, name: str) -> str:
    return f"{kind}\x1f{name}"


def _entities(found: list[Found]) -> dict[str, OpenFinding]:
    out: dict[str, OpenFinding] = {}
    for f in found:
        if f.severity.rank < Severity.WARNING.rank:
            continue
        for name in f.names:
            out[_key(f.kind, name)] = OpenFinding(
                kind=f.kind, name=name, severity=f.severity, since=datetime.min
            )
    return out


def advance(
    memory: Memory,
    result: RunResult,
    now: datetime,
    *,
    checked: set[str] | None = None,
) -> tuple[Memory, list[FixedItem]]:
    """The next memory and what this run found fixed (see the module's rules). ``checked``:
    the entities the run looked at when it looked at only part of its scope."""
    seen = _entities(result.found)
    findings = dict(memory.findings)
    for key, f in seen.items():  # new ones date from now; known ones keep their start
        previous = findings.get(key)
        since = previous.since if previous is not None else now
        findings[key] = f.model_copy(update={"since": since})
    if result.outcome is Outcome.FAILED:
        return (
            Memory(
                failing_since=memory.failing_since or now,
                failing_detail=memory.failing_detail or result.detail,
                findings=findings,
            ),
            [],
        )
    fixed: list[FixedItem] = []
    if memory.failing_since is not None:
        fixed.append(
            FixedItem(
                what=f"runs again (it had failed: {memory.failing_detail})",
                since=memory.failing_since,
                lasted=now - memory.failing_since,
                severity=Severity.CRITICAL,
            )
        )
    for key, f in memory.findings.items():
        if key in seen or (checked is not None and f.name not in checked):
            continue
        del findings[key]
        fixed.append(
            FixedItem(
                what=f"{f.name}: no longer {f.kind}",
                since=f.since,
                lasted=now - f.since,
                severity=f.severity,
            )
        )
    return Memory(findings=findings), fixed


def lasted(delta: timedelta) -> str:
    """'2 d 4 h', '3 h 12 min', '5 min', 'under a minute'."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min" if mins else "under a minute"


def fixed_notification(
    operation: str, lab: str, fixed: list[FixedItem], link: str | None = None
) -> Notification | None:
    """One notice for everything this run found fixed (None: nothing). Routed by the worst
    of what it closes, so it reaches every channel that heard of the problem."""
    if not fixed:
        return None
    worst = max((f.severity for f in fixed), key=lambda s: s.rank)
    lines = [
        f"- {f.what} (lasted {lasted(f.lasted)}, since {f.since:%Y-%m-%d %H:%M} UTC)" for f in fixed
    ]
    return Notification(
        title=f"Fixed: {operation} on {lab}",
        severity=Severity.OK,
        route_severity=worst,
        body="\n".join(lines),
        topic=f"{operation}/fixed",
        payload={"operation": operation, "fixed": [f.what for f in fixed]},
        link=link,
    )
