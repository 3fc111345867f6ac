"""Which notifications a channel takes: the operations it follows and the lowest severity.

A "fixed" notice is routed by the severity of what it closes (a channel paged for a failure hears
that it is fixed), every other notification by its own severity.
"""

from __future__ import annotations

from pydantic import Field

from labops.outcome import Severity
from labops.settings import Strict


class Route(Strict):
    """Routing of one notification target."""

    operations: list[str] = Field(
        default_factory=list,
        description="Operations (flow names: backups, certificates, security-digest...) whose "
        "notifications this target receives; empty: every operation.",
    )
    min_severity: Severity = Field(
        Severity.OK,
        description="Lowest severity sent here: ok (everything, clean runs too), info, warning "
        "or critical (failed runs count as critical).",
    )

    def takes(self, operation: str | None, severity: Severity) -> bool:
        """Whether a notification of ``operation`` at ``severity`` goes to this target."""
        if self.operations and operation is not None:
            wanted = {_same(o) for o in self.operations}
            if _same(operation) not in wanted:
                return False
        return severity.rank >= self.min_severity.rank


def _same(name: str) -> str:
    """Flow names (``restore-drill``) and report operations (``restore_drill``) alike."""
    return name.strip().lower().replace("_", "-")
