"""A tiny operation for testing the CLI and the Prefect servers: it goes the real publish path."""

from __future__ import annotations

from typing import Any

from prefect import flow

from blocks.context import LabContext
from labops.outcome import Found, Severity
from labops.reports import Failure, Notification, OperationReport
from tasks.publish import publish_report


class DemoReport(OperationReport):
    count: int = 0
    finding: Severity = Severity.OK

    def table(self) -> list[dict[str, Any]]:
        return [{"item": i} for i in range(self.count)]

    def markdown(self) -> str:
        return f"# demo\n\n{self.count} item(s), {len(self.failures)} failure(s)"

    def found(self) -> list[Found]:
        if self.finding is Severity.OK:
            return []
        return [Found(severity=self.finding, what=f"{self.count} item(s) made to be found")]

    def notification(self) -> Notification | None:
        if self.finding is Severity.OK and not self.failures:
            return None
        return Notification(title=f"demo {self.lab}", severity=self.finding, topic="demo/report")


@flow(name="demo")
def demo(
    config: str | None = None,
    dry_run: bool = False,
    count: int = 1,
    fail: bool = False,
    finding: Severity = Severity.OK,
) -> Any:
    """Counts to ``count``; with ``fail`` reports one failure (the run ends Failed); with
    ``finding`` finds something of that severity (the run ends Findings)."""
    ctx = LabContext.load(config)
    report = DemoReport(operation="demo", dry_run=dry_run, count=count, finding=finding)
    if fail:
        report.failures.append(Failure(entity="guest 101 (dns)", reason="made to fail"))
    return publish_report(report, ctx.delivery())


@flow(name="demo-no-dry-run")
def demo_no_dry_run(config: str | None = None) -> None:
    """An operation that changes nothing, so it takes no dry_run."""
