"""Metrics for VictoriaMetrics, pushed in Prometheus text format to /api/v1/import/prometheus."""

from __future__ import annotations

import re
import time

from pydantic import BaseModel, Field

from labops.outcome import RunResult

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Metric(BaseModel):
    """One sample. ``timestamp`` in seconds (None: now)."""

    name: str
    value: float
    labels: dict[str, str] = Field(default_factory=dict)
    timestamp: float | None = None

    def line(self) -> str:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.labels.items()))
        ts = int((self.timestamp if self.timestamp is not None else time.time()) * 1000)
        body = f"{self.name}{{{labels}}}" if labels else self.name
        return f"{body} {self.value!r} {ts}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(metrics: list[Metric]) -> str:
    """Prometheus exposition text (with millisecond timestamps) for a batch of samples."""
    return "".join(m.line() + "\n" for m in metrics)


def heartbeat(operation: str, lab: str, success: bool) -> list[Metric]:
    """The dead-man's-switch samples every flow pushes at its end."""
    now = time.time()
    labels = {"flow": operation, "lab": lab}
    samples = [Metric(name="labops_flow_last_run_timestamp_seconds", value=now, labels=labels)]
    if success:
        samples.append(
            Metric(name="labops_flow_last_success_timestamp_seconds", value=now, labels=labels)
        )
    samples.append(Metric(name="labops_flow_up", value=1.0 if success else 0.0, labels=labels))
    return samples


def outcome_samples(operation: str, lab: str, result: RunResult) -> list[Metric]:
    """The run's outcome as values (never as a label that would change from run to run):
    ``labops_flow_outcome`` 0 clean / 1 findings / 2 failed and ``labops_flow_severity``, the
    rank of the highest severity found (0 ok, 1 info, 2 warning, 3 critical)."""
    labels = {"flow": operation, "lab": lab}
    return [
        Metric(name="labops_flow_outcome", value=float(result.outcome.code), labels=labels),
        Metric(name="labops_flow_severity", value=float(result.severity.rank), labels=labels),
    ]


def with_lab(metrics: list[Metric], lab: str) -> list[Metric]:
    """Every sample labelled with its lab (``lab`` set here wins over a report's own)."""
    return [m.model_copy(update={"labels": {**m.labels, "lab": lab}}) for m in metrics]
