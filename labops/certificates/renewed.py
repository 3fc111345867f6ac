"""What a node certificate renewal came to: planned (dry run), refused or failed, or renewed and
verified by what the node serves afterwards (pure)."""

from __future__ import annotations

from pydantic import BaseModel

from labops.certificates.report import EndpointResult, RenewalResult
from labops.reports import Failure


class RenewalOutcome(BaseModel):
    """The answer of Proxmox to one renewal order (its task's end)."""

    node: str
    upid: str | None = None
    ok: bool
    detail: str = ""


def planned(candidate: EndpointResult) -> RenewalResult:
    """A dry run's line: what would be renewed, and why."""
    leaf = candidate.leaf
    return RenewalResult(
        node=candidate.target.node or "",
        action="planned",
        old_not_after=leaf.not_after if leaf else None,
        detail=f"would renew ({candidate.status.value}: {candidate.reason})",
    )


def settle(
    candidate: EndpointResult, outcome: RenewalOutcome, served: EndpointResult | None
) -> tuple[RenewalResult, Failure | None]:
    """The renewal's line and its failure, if any. ``served``: the node probed again after a
    successful task (None when the task failed). Only a later expiry on the wire is a renewal:
    the API saying it stored one is not."""
    node = candidate.target.node or ""
    old = candidate.leaf.not_after if candidate.leaf else None
    entity = f"node {node}"
    if not outcome.ok or served is None:
        line = RenewalResult(
            node=node, action="failed", upid=outcome.upid, detail=outcome.detail, old_not_after=old
        )
        why = f"certificate renewal failed: {outcome.detail}"
        return line, Failure(entity=entity, system="proxmox", reason=why)
    new = served.leaf.not_after if served.leaf else None
    stale = new is None or (old is not None and new <= old)
    line = RenewalResult(
        node=node,
        action="failed" if stale else "renewed",
        upid=outcome.upid,
        old_not_after=old,
        new_not_after=new,
        detail="task OK but the node still serves the old certificate"
        if stale
        else f"now {served.status.value}",
    )
    if stale:
        return line, Failure(
            entity=entity, system="proxmox", reason="renewed certificate not served"
        )
    return line, None
