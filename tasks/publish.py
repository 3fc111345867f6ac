"""Delivering a report: a notification, metrics and the heartbeat, artifacts in the Prefect UI, and
the run's final state (Completed, Findings or Failed: see labops.outcome)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from prefect import task
from prefect.context import get_run_context
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import quote

from blocks.delivery import CHANNELS, Delivery
from blocks.observability import VictoriaMetrics
from labops.config.policies.platform import ExternalHeartbeat
from labops.errors import LabopsError
from labops.fixed import Memory, advance, fixed_notification, scope_checked
from labops.outcome import Outcome
from labops.pings import phase_of, pings_for, send_pings, summary
from labops.redact import redact
from labops.reports import Failure, Notification, OperationReport, utcnow
from labops.scope import artifact_key
from labops.state import StateStore, lab_key

R = TypeVar("R", bound=OperationReport)


@task(name="publish-artifacts")
def publish_artifacts(report: OperationReport) -> None:
    """Create the table and markdown artifacts of a report, keyed by lab and operation (the keys
    stay the same run to run; another lab's never collide). Reads the lab, changes nothing."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{k: redact(str(v)) for k, v in row.items()} for row in report.table()]
    if rows:
        create_table_artifact(
            rows,
            key=artifact_key(report.lab, report.operation, "table"),
            description=f"{report.operation} report of {report.lab}",
        )
    result = report.result()
    head = f"**Outcome: {result.outcome.value}** ({result.detail})\n\n"
    create_markdown_artifact(
        redact(head + report.markdown()), key=artifact_key(report.lab, report.operation, "summary")
    )


@task(name="push-metrics")
def push_report_metrics(
    report: OperationReport, metrics: VictoriaMetrics | None, unavailable: str | None = None
) -> State | None:
    """Push the report's metrics, the run's outcome and the flow heartbeat to VictoriaMetrics
    (if configured), every series labelled with the lab. Changes nothing in the lab.

    The HTTP policy retries; a push that still fails ends this task Failed, naming why (so does
    a configured endpoint whose block could not be built: ``unavailable`` says why)."""
    if unavailable is not None:
        return Failed(message=redact(unavailable))
    if metrics is None:
        return None
    try:
        metrics.pusher().push(report.pushed_metrics())
    except LabopsError as exc:  # expected (VictoriaMetrics down): one line, no traceback
        return Failed(message=redact(str(exc)))
    return None


@task(name="notify")
def send_notification(report: OperationReport, delivery: Delivery) -> State | None:
    """Send the report's notification, if it has one, to every configured channel. A channel
    that did not deliver ends this task Failed, naming it. Changes nothing in the lab."""
    message = report.notification()
    if message is None:
        return None
    if report.flow_run_url and not message.link:
        message.link = report.flow_run_url
    return _send(report.operation, message, delivery)


def _send(operation: str, message: Notification, delivery: Delivery) -> State | None:
    """Send one message to every channel that takes it; Failed naming each one that did not."""
    failed = [f"{c}: {why}" for c, why in delivery.unavailable.items() if c in CHANNELS]
    severity = message.route_severity or message.severity
    sent = delivery.notifier(operation, severity).send_all(message)
    failed += [f"{d.channel}: {d.detail}" for d in sent if not d.ok]
    if failed:
        return Failed(message=redact("; ".join(failed)))
    return None


@task(name="notify-fixed")
def notify_fixed(
    report: OperationReport, delivery: Delivery, parameters: dict[str, Any] | None = None
) -> State | None:
    """Send one "fixed" notice when this run ends a series of failed runs or a finding that a
    previous run reported is resolved (re-checked and gone), saying how long it lasted; then
    remember what is still wrong (``labops.fixed``, in the lab's state directory). A dry run
    changes nothing. A notice that could not be sent leaves the memory as it was (the next
    good run says it again) and ends this task Failed. Changes nothing in the lab."""
    if report.dry_run or delivery.state_dir is None:
        return None
    store = StateStore(delivery.state_dir)
    key = lab_key(delivery.lab, f"fixed-{report.operation}")
    memory = store.load(key, Memory) or Memory()
    checked = scope_checked(parameters or {}, report.checked())
    after, fixed = advance(memory, report.result(), utcnow(), checked=checked)
    message = fixed_notification(report.operation, delivery.lab, fixed, report.flow_run_url)
    if message is not None:
        failed = _send(report.operation, message, delivery)
        if failed is not None:
            return failed
    if after != memory:
        store.save(key, after)
    return None


@task(name="ping-heartbeat")
def ping_heartbeat(
    flow: str, heartbeat: ExternalHeartbeat | None, report: OperationReport
) -> State | None:
    """Tell the external dead-man's switch how the run ended: Healthchecks' success or
    ``/fail`` with the run's summary as the body, Uptime Kuma's ``status=up|down``. Not for a
    dry run. A ping that did not arrive ends this task Failed, naming the service. Changes
    nothing in the lab."""
    if heartbeat is None or report.dry_run:
        return None
    result = report.result()
    run_ms = None
    if report.finished is not None:
        run_ms = int((report.finished - report.started).total_seconds() * 1000)
    try:
        pings = pings_for(flow, heartbeat, phase_of(result), summary(flow, result), run_ms)
    except LabopsError as exc:  # a reference that does not resolve
        return Failed(message=redact(str(exc)))
    problems = send_pings(pings)
    return Failed(message=redact("; ".join(problems))) if problems else None


def _step_failure(step: Any, state: State) -> str:
    """Why a delivery step failed: its Failed state's message, or its exception's text."""
    value = state.result(raise_on_failure=False) if state.data is not None else None
    if isinstance(value, BaseException):
        return str(value) or type(value).__name__
    return state.message or f"{step.name} failed"


def publish_report(report: R, delivery: Delivery) -> R | State:
    """End of every flow: deliver the report (``delivery``: the lab's channels, metrics endpoint
    and UI, ``LabContext.delivery()``), then return its outcome as the run's state:
    the report (Completed) when clean, a ``Findings`` state (COMPLETED type) carrying it when it
    found something, a ``Failed`` state carrying it when it could not do its job."""
    log = logging.getLogger("labops.publish")
    report.finished = utcnow()
    report.lab = delivery.lab
    flow_name = report.operation.replace("_", "-")
    parameters: dict[str, Any] = {}
    try:
        run = get_run_context()
        flow_run = getattr(run, "flow_run", None)
        if flow_run is not None:
            report.flow_run_url = delivery.flow_run_url(flow_run.id)
        flow = getattr(run, "flow", None)
        if flow is not None:
            flow_name = flow.name
        parameters = dict(getattr(run, "parameters", None) or {})
    except Exception:  # outside a run (tests calling .fn): no link
        pass
    # quote(): otherwise Prefect walks every field of the report (thousands of rows) and of the
    # blocks looking for futures, for each of these task runs: measured ~0.7 s per task
    # with a 1,000-row report.
    # Notification first, metrics next (they then count a failed notification), the external
    # heartbeat next (its summary names both), then "fixed" (judged on all of that), artifacts
    # last (they show every delivery failure). A failed step is a failure of the run, named once.
    for step, args in (
        (send_notification, (quote(report), quote(delivery))),
        (
            push_report_metrics,
            (quote(report), quote(delivery.metrics), delivery.unavailable.get("victoriametrics")),
        ),
        (ping_heartbeat, (flow_name, quote(delivery.heartbeats.get(flow_name)), quote(report))),
        (notify_fixed, (quote(report), quote(delivery), quote(parameters))),
        (publish_artifacts, (quote(report),)),
    ):
        state = step(*args, return_state=True)  # type: ignore[operator]
        if not state.is_completed():
            reason = redact(_step_failure(step, state))
            log.warning("%s: %s", step.name, reason)
            report.failures.append(Failure(entity=step.name, reason=reason))
    result = report.result()
    if result.outcome is Outcome.FAILED:
        return Failed(message=redact(result.detail), data=report)
    if result.outcome is Outcome.FINDINGS:
        return Completed(name=result.state_name, message=redact(result.detail), data=report)
    return report
