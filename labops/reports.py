"""The report every operation produces: one model, four views (JSON, artifact, message, metrics)."""

from __future__ import annotations

import abc
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from labops.metrics import Metric


def utcnow() -> datetime:
    return datetime.now(UTC)


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ["ok", "info", "warning", "critical"].index(self.value)


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

    @property
    def failed(self) -> bool:
        """True when the run must end Failed (any failure)."""
        return bool(self.failures)

    @abc.abstractmethod
    def table(self) -> list[dict[str, Any]]:
        """Rows of the table artifact (one per guest/host/target)."""

    @abc.abstractmethod
    def markdown(self) -> str:
        """The markdown summary artifact."""

    def metrics(self) -> list[Metric]:
        """Metrics pushed to VictoriaMetrics (the heartbeat is added by publish)."""
        return []

    def notification(self) -> Notification | None:
        """The message to send, or None when there is nothing worth a message."""
        return None

    def failure_summary(self) -> str:
        head = f"{len(self.failures)} failure(s)"
        shown = "; ".join(f"{f.entity}: {f.reason}" for f in self.failures[:5])
        return f"{head}: {shown}" if shown else head
