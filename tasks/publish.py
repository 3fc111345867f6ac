"""Delivering a report: artifacts in the Prefect UI, a notification, metrics and the heartbeat."""

from __future__ import annotations

import logging
from typing import TypeVar

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from blocks.context import LabContext
from labops.metrics import heartbeat
from labops.redact import redact
from labops.reports import OperationReport, utcnow

R = TypeVar("R", bound=OperationReport)


@task(name="publish-artifacts")
def publish_artifacts(report: OperationReport) -> None:
    """Create the table and markdown artifacts of a report (keys stay stable run to run)."""
    key = report.operation.replace("_", "-")
    rows = [{k: redact(str(v)) for k, v in row.items()} for row in report.table()]
    if rows:
        create_table_artifact(rows, key=f"{key}-table", description=f"{report.operation} report")
    create_markdown_artifact(redact(report.markdown()), key=f"{key}-summary")


@task(name="push-metrics", retries=1)
def push_report_metrics(report: OperationReport, ctx: LabContext) -> None:
    """Push the report's metrics and the flow heartbeat to VictoriaMetrics (if configured)."""
    from blocks.factory import metrics_pusher

    pusher = metrics_pusher(ctx.config)
    if pusher is None:
        return
    samples = report.metrics() + heartbeat(report.operation, report.lab, not report.failed)
    pusher.push(samples)


@task(name="notify")
def send_notification(report: OperationReport, ctx: LabContext) -> None:
    """Send the report's notification, if it has one, to every configured channel."""
    message = report.notification()
    if message is None:
        return
    if report.flow_run_url and not message.link:
        message.link = report.flow_run_url
    delivery = ctx.notifier().send(message)
    if not delivery.ok:
        get_run_logger().warning("notification not delivered: %s", delivery.detail)


def publish_report(report: R, ctx: LabContext) -> R | State:
    """End of every flow: deliver the report, then return it (or Failed carrying it)."""
    log = logging.getLogger("labops.publish")
    report.finished = utcnow()
    report.lab = ctx.config.lab.name
    try:
        run = get_run_context()
        flow_run = getattr(run, "flow_run", None)
        if flow_run is not None:
            report.flow_run_url = f"{ctx.config.lab.ui_url.rstrip('/')}/runs/flow-run/{flow_run.id}"
    except Exception:  # outside a run (tests calling .fn): no link
        pass
    # quote(): otherwise Prefect walks every field of the report (thousands of rows) and of the
    # config in ctx looking for futures, for each of these task runs: measured ~0.7 s per task
    # with a 1,000-row report.
    publish_artifacts(quote(report))  # type: ignore[call-overload]
    for step in (push_report_metrics, send_notification):
        try:
            step(quote(report), quote(ctx))  # type: ignore[call-overload]
        except Exception as exc:  # delivery problems are reported, they never hide the result
            log.warning("%s failed: %s", step.name, exc)
            report.skipped.append(f"{step.name}: {exc}")
    if report.failed:
        return Failed(message=redact(report.failure_summary()), data=report)
    return report
