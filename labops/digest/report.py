"""The security digest's report: one model behind the artifact, the message, MQTT and metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from labops.digest.findings import Finding, Suppressed, worst
from labops.metrics import Metric
from labops.outcome import Checked, CouldNotCheck, Found
from labops.reports import Notification, OperationReport, Severity


class SourceStatus(BaseModel):
    """How one source answered; a failed one is named in the digest, never silently missing."""

    name: str = Field(..., description="wazuh-alerts, wazuh-agents, crowdsec, loki, ...")
    label: str = Field(..., description="What the operator calls it: 'Wazuh indexer'.")
    covers: str = Field(..., description="What is missing when it fails: 'Wazuh alerts'.")
    state: Literal["ok", "failed", "skipped"] = "ok"
    findings: int = 0
    detail: str = ""
    seconds: float = 0.0
    kind: str = Field("", description="failed: unreachable, timeout, auth-failed, error ...")
    since: datetime | None = Field(
        None, description="failed: the first digest in a row that could not read it."
    )

    @property
    def check(self) -> Checked | None:
        """ok (answered, nothing found), found (answered with findings) or unknown (failed);
        None when skipped."""
        if self.state == "skipped":
            return None
        if self.state == "failed":
            return Checked.UNKNOWN
        return Checked.FOUND if self.findings else Checked.OK

    @property
    def could_not_check(self) -> CouldNotCheck | None:
        if self.state != "failed" or self.since is None:
            return None
        return CouldNotCheck(reason=self.detail, kind=self.kind or "error", since=self.since)

    def problem(self) -> str:
        """'Wazuh indexer unreachable: no Wazuh alerts in this digest' (since when: ``line``)."""
        return f"{self.label} {self.detail}: no {self.covers} in this digest"

    def line(self) -> str:
        """How the digest lists it: checked and fine, found N, could not check, skipped."""
        check = self.check
        if check is None:
            return f"{self.label}: skipped ({self.detail})"
        if check is Checked.UNKNOWN:
            unknown = self.could_not_check
            return f"{self.label}: " + (
                unknown.describe() if unknown else f"failed ({self.detail})"
            )
        if check is Checked.FOUND:
            return f"{self.label}: checked, {self.findings} finding(s)"
        return f"{self.label}: checked, fine" + (f" ({self.detail})" if self.detail else "")


class LlmOutcome(BaseModel):
    """What happened to the optional summary."""

    summary: str | None = None
    note: str | None = Field(None, description="Why there is no summary (shown in the digest).")
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class SecurityDigest(OperationReport):
    """One digest: ranked findings, what changed since the last one, and every source's state."""

    operation: str = "security_digest"
    period: Literal["daily", "weekly"] = "daily"
    window_start: datetime
    window_end: datetime
    findings: list[Finding] = Field(default_factory=list, description="Ranked, status set.")
    resolved: list[Finding] = Field(default_factory=list)
    suppressed: list[Suppressed] = Field(default_factory=list)
    sources: list[SourceStatus] = Field(default_factory=list)
    new_bans: list[str] = Field(default_factory=list)
    banned_ips: list[str] = Field(default_factory=list)
    llm: LlmOutcome = LlmOutcome()
    rendered: str = Field("", description="The deterministic markdown digest (the artifact).")
    brief: str = Field(
        "",
        description="The message: the headline read in 30 seconds (labops.digest.headline); "
        "empty: the message is the whole digest.",
    )
    mqtt_topic: str = "security/digest"

    @property
    def severity(self) -> Severity:
        return worst(self.findings)

    def found(self) -> list[Found]:
        """The digest's findings at their own severities; a source that could not be read is a
        failure of the run (in ``failures``), not a finding."""
        return [
            found
            for sev in (Severity.CRITICAL, Severity.WARNING, Severity.INFO)
            for found in Found.of(
                sev,
                "finding(s)",
                [
                    f.title + (f" ({f.entity})" if f.entity else "")
                    for f in self.findings
                    if f.severity is sev
                ],
                shown=3,
            )
        ]

    @property
    def problems(self) -> list[str]:
        return [s.problem() for s in self.sources if s.state == "failed"]

    @property
    def unknown(self) -> list[Finding]:
        """Findings whose check could not run (also in ``findings``, status 'unknown')."""
        return [f for f in self.findings if f.status == "unknown"]

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "severity": f.severity.value,
                "status": f.status,
                "source": f.source,
                "title": f.title,
                "entity": f.entity,
                "count": f.count,
                "first_seen": f.first_seen.isoformat() if f.first_seen else "",
                "last_seen": f.last_seen.isoformat() if f.last_seen else "",
                "could not check": f.unknown.describe() if f.unknown else "",
            }
            for f in self.findings
        ]

    def markdown(self) -> str:
        return self.rendered

    def notification(self) -> Notification:
        """Always a message, even on a quiet day: silence must mean the flow broke."""
        new = sum(1 for f in self.findings if f.status == "new")
        title = f"Security digest ({self.period}): " + (
            f"{len(self.findings)} finding(s), {new} new" if self.findings else "all quiet"
        )
        if self.unknown:
            title += f", {len(self.unknown)} unknown"
        if self.problems:
            title += f", {len(self.problems)} source(s) failed"
        severity = self.severity
        if self.problems and severity.rank < Severity.WARNING.rank:
            severity = Severity.WARNING
        return Notification(
            title=title,
            severity=severity if self.findings or self.problems else Severity.OK,
            body=self.brief or self.rendered,
            topic=self.mqtt_topic,
            payload=self.payload(),
        )

    def payload(self) -> dict[str, Any]:
        """The MQTT JSON: counts, sources, the top findings (no evidence lines)."""
        by_severity = {s.value: 0 for s in Severity}
        for f in self.findings:
            by_severity[f.severity.value] += 1
        return {
            "lab": self.lab,
            "period": self.period,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "severity": self.severity.value,
            "findings": len(self.findings),
            "new": sum(1 for f in self.findings if f.status == "new"),
            "unknown": len(self.unknown),
            "resolved": len(self.resolved),
            "by_severity": by_severity,
            "sources": {s.name: s.state for s in self.sources},
            "problems": self.problems,
            "new_bans": self.new_bans,
            "summary": self.llm.summary,
            "summary_note": self.llm.note,
            "top": [
                {
                    "severity": f.severity.value,
                    "status": f.status,
                    "source": f.source,
                    "title": f.title,
                    "entity": f.entity,
                    "count": f.count,
                    "unknown_since": f.unknown.since.isoformat() if f.unknown else None,
                }
                for f in self.findings[:10]
            ],
            "flow_run_url": self.flow_run_url,
        }

    def metrics(self) -> list[Metric]:
        labels = {"lab": self.lab, "period": self.period}
        out = [
            Metric(
                name="labops_digest_findings",
                value=float(sum(1 for f in self.findings if f.severity == sev)),
                labels={**labels, "severity": sev.value},
            )
            for sev in (Severity.INFO, Severity.WARNING, Severity.CRITICAL)
        ]
        out.append(
            Metric(
                name="labops_digest_new_findings",
                value=float(sum(1 for f in self.findings if f.status == "new")),
                labels=labels,
            )
        )
        out.extend(
            Metric(
                name="labops_digest_source_up",
                value=1.0 if s.state == "ok" else 0.0,
                labels={**labels, "source": s.name},
            )
            for s in self.sources
            if s.state != "skipped"
        )
        # per source: only the ones that answered (a failed source's count is unknown, not 0)
        out.extend(
            Metric(
                name="labops_digest_source_findings",
                value=float(s.findings),
                labels={**labels, "source": s.name},
            )
            for s in self.sources
            if s.state == "ok"
        )
        return out
