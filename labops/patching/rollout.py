"""The patch report's rows of a rollout: one ``HostApply`` per planned host and how its outcome
counts (failure, skipped node, patched), and the hosts a rollout left out (not run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from labops.outcome import Checked
from labops.patching import plan
from labops.patching.report import HostApply, HostCheck, PatchReport
from labops.reports import Failure


def apply_row(h: plan.PlanHost, step: plan.Step | None = None, **kw: Any) -> HostApply:
    """A report row for a planned host (``kw``: outcome, detail, ...)."""
    phase = "canary" if step is not None and step.phase == "canary" else "batch"
    return HostApply(
        host=h.name,
        kind=h.kind,
        node=h.node,
        vmid=h.vmid,
        phase=phase,  # type: ignore[arg-type]
        batch=step.index if step is not None else 0,
        held_back=h.held_back,
        **kw,
    )


def skipped_rows(skipped: list[plan.Skip], now: datetime) -> list[HostCheck]:
    """A check row for each host that was not checked, saying why."""
    return [
        HostCheck(
            host=s.name,
            kind=s.kind,
            node=s.node,
            vmid=s.vmid,
            state="skipped",
            detail=s.reason,
            last_checked=now,
        )
        for s in skipped
    ]


def check_failure(row: HostCheck) -> Failure | None:
    """The failure a check row means: could not check, or package names refused."""
    if row.check is Checked.UNKNOWN:
        return Failure(entity=f"host {row.host}", reason=f"{row.state}: {row.detail}", system="ssh")
    if row.refused:
        return Failure(
            entity=f"host {row.host}",
            reason="package names outside the package-name grammar, never used: "
            + ", ".join(row.refused[:5]),
            system="ssh",
        )
    return None


def record_result(report: PatchReport, r: HostApply) -> bool:
    """Add one host's result to the report; True when it counts as failed."""
    report.applied.append(r)
    if r.outcome in ("failed", "rolled-back", "still-running"):
        report.failures.append(Failure(entity=f"host {r.host}", reason=r.detail))
        return True
    if r.outcome == "skipped" and r.kind == "node":
        report.skipped.append(f"{r.host}: {r.detail}")
    return False


def not_run(report: PatchReport, steps: list[plan.Step], why: str) -> None:
    """Every host of ``steps`` as not run, saying why."""
    for later in steps:
        report.applied += [apply_row(h, later, outcome="not-run", detail=why) for h in later.hosts]


def window_stop(report: PatchReport, steps: list[plan.Step], why: str) -> None:
    """The window closed: what was left is reported as not run, and the run says so."""
    report.stopped = why
    not_run(report, steps, why)
    left = sum(len(s.hosts) for s in steps)
    report.failures.append(Failure(entity="patch apply", reason=f"{why}: {left} hosts not run"))
