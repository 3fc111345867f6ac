"""A tiny operation for testing the CLI and the Prefect servers: it goes the real publish path."""

from __future__ import annotations

from typing import Any

from prefect import flow

from blocks.context import LabContext
from labops.reports import Failure, OperationReport
from tasks.publish import publish_report


class DemoReport(OperationReport):
    count: int = 0

    def table(self) -> list[dict[str, Any]]:
        return [{"item": i} for i in range(self.count)]

    def markdown(self) -> str:
        return f"# demo\n\n{self.count} item(s), {len(self.failures)} failure(s)"


@flow(name="demo")
def demo(
    config: str | None = None, dry_run: bool = False, count: int = 1, fail: bool = False
) -> Any:
    """Counts to ``count``; with ``fail`` reports one failure (the run ends Failed)."""
    ctx = LabContext.load(config)
    report = DemoReport(operation="demo", dry_run=dry_run, count=count)
    if fail:
        report.failures.append(Failure(entity="guest 101 (dns)", reason="made to fail"))
    return publish_report(report, ctx)


@flow(name="demo-no-dry-run")
def demo_no_dry_run(config: str | None = None) -> None:
    """An operation that changes nothing, so it takes no dry_run."""
