"""The housekeeping report."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from labops.markdown import md_text
from labops.reports import OperationReport


class HousekeepingReport(OperationReport):
    operation: str = "housekeeping"
    retention_days: int = 30
    flow_runs_pruned: int = 0
    artifacts_pruned: int = 0
    slots_released: list[str] = Field(default_factory=list)
    zombie_automation: str = ""

    def table(self) -> list[dict[str, Any]]:
        verb = "would prune" if self.dry_run else "pruned"
        return [
            {
                "item": f"flow runs older than {self.retention_days} days",
                verb: self.flow_runs_pruned,
            },
            {"item": "their artifacts", verb: self.artifacts_pruned},
            {"item": "orphan concurrency slots", verb: len(self.slots_released)},
            {"item": "zombie-run automation", verb: self.zombie_automation},
        ]

    def markdown(self) -> str:
        verb = "Would prune" if self.dry_run else "Pruned"
        lines = [
            "# Housekeeping",
            "",
            f"{verb} {self.flow_runs_pruned} flow runs older than {self.retention_days} days "
            f"and {self.artifacts_pruned} artifacts (the server drops their logs).",
            f"Zombie-run automation: {self.zombie_automation}.",
        ]
        if self.slots_released:
            released = ", ".join(md_text(s) for s in self.slots_released)
            lines.append("Concurrency slots released: " + released)
        return "\n".join(lines)
