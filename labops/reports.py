"""The report every operation produces: one model, four views (JSON, artifact, message, metrics)."""

from __future__ import annotations

import abc
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

from labops.metrics import Metric, heartbeat, outcome_samples, with_lab
from labops.outcome import Found, Outcome, RunResult, Severity, judge

__all__ = ["Failure", "Found", "Notification", "OperationReport", "Severity", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Failure(BaseModel):
    """One thing that went wrong, named by the entity the operator knows (guest, host, target)."""

    entity: str = Field(..., description="guest 101 (dns), host pve2, https://grafana.lab ...")
    reason: str
    system: str | None = None


class Notification(BaseModel):
    """What a notifier sends: a title, a severity, a plain-text body and a JSON payload for MQTT."""

    title: str
    severity: Severity = Severity.INFO
    body: str = ""
    topic: str = Field("", description="Suffix under the MQTT prefix, e.g. 'backups/report'.")
    payload: dict[str, Any] = Field(default_factory=dict)
    link: str | None = None
    route_severity: Severity | None = Field(
        None,
        description="The severity routing judges when not this one's own: a 'fixed' notice "
        "goes where the problem it closes went.",
    )


class OperationReport(BaseModel, abc.ABC):
    """Base of every operation's report. Subclasses add their own rows and summary."""

    operation: str
    lab: str = "homelab"
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    dry_run: bool = False
    skipped: list[str] = Field(
        default_factory=list, description="Systems or steps not run, each with why."
    )
    failures: list[Failure] = Field(default_factory=list)
    flow_run_url: str | None = None

    # -- the outcome: what the run found (see labops.outcome) ---------------------------------

    def found(self) -> list[Found]:
        """What this run found, one line per kind of finding, each with its severity.

        A finding is about the lab (an expired certificate, a stale backup); it never makes the
        run failed. Subclasses say what counts; the base finds nothing."""
        return []

    def unchecked(self) -> list[str]:
        """Things the run had to check and could not (beyond ``failures``), e.g. an endpoint
        that did not answer: each makes the run failed. Subclasses say what counts."""
        return []

    def result(self) -> RunResult:
        """The run's outcome, highest severity and one-line detail (CLI, Prefect, metrics)."""
        problems = [f"{f.entity}: {f.reason}" for f in self.failures] + self.unchecked()
        return judge(problems, self.found())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome(self) -> Outcome:
        """clean, findings or failed (printed by ``--json``)."""
        return self.result().outcome

    @computed_field  # type: ignore[prop-decorator]
    @property
    def highest_severity(self) -> Severity:
        """The highest severity this run found (ok: nothing), even when it failed."""
        return self.result().severity

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome_detail(self) -> str:
        """One line: the failures, else the findings by severity, else 'clean'."""
        return self.result().detail

    @property
    def failed(self) -> bool:
        """True when the run must end Failed (a failure, or something it could not check)."""
        return self.outcome is Outcome.FAILED

    @abc.abstractmethod
    def table(self) -> list[dict[str, Any]]:
        """Rows of the table artifact (one per guest/host/target)."""

    @abc.abstractmethod
    def markdown(self) -> str:
        """The markdown summary artifact."""

    def metrics(self) -> list[Metric]:
        """The report's own metrics (``pushed_metrics`` adds the heartbeat, outcome and lab)."""
        return []

    def pushed_metrics(self) -> list[Metric]:
        """Everything a run pushes to VictoriaMetrics: the report's metrics, the heartbeat and
        the outcome, each series labelled with the lab (docs/metrics.md lists them all)."""
        result = self.result()
        samples = (
            self.metrics()
            + heartbeat(self.operation, self.lab, result.outcome is not Outcome.FAILED)
            + outcome_samples(self.operation, self.lab, result)
        )
        return with_lab(samples, self.lab)

    def checked(self) -> set[str] | None:
        """The entities this run looked at, when it looked at only part of its scope (a run
        limited to some guests or hosts); None: its whole scope. A finding about an entity it
        did not look at is never taken for resolved (``labops.fixed``)."""
        return None

    def notification(self) -> Notification | None:
        """The message to send, or None when there is nothing worth a message."""
        return None

    def failure_summary(self) -> str:
        head = f"{len(self.failures)} failure(s)"
        shown = "; ".join(f"{f.entity}: {f.reason}" for f in self.failures[:5])
        return f"{head}: {shown}" if shown else head
