"""The certificates operation's report: one row per endpoint, renewals, alerts, metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from labops.certificates.alerts import Alert, AlertKind
from labops.certificates.classify import CertStatus, Classification, human_duration
from labops.certificates.models import CertInfo, Target
from labops.markdown import md_table, md_text
from labops.metrics import Metric
from labops.outcome import Checked, CouldNotCheck, Found, check_columns
from labops.reports import Notification, OperationReport, Severity


class EndpointResult(BaseModel):
    """One probed endpoint: what was served and the verdict."""

    target: Target
    status: CertStatus
    reason: str
    classification: Classification
    chain: list[CertInfo] = Field(default_factory=list, description="As served, leaf first.")
    anchor: CertInfo | None = Field(None, description="Trusted root of the verified path.")
    tls_version: str | None = None
    elapsed_ms: float = 0.0
    unknown_since: datetime | None = Field(
        None, description="Unreachable: when the first probe in a row failed (kept across runs)."
    )

    @property
    def leaf(self) -> CertInfo | None:
        return self.chain[0] if self.chain else None

    @property
    def check(self) -> Checked:
        """ok, found (any other status) or unknown: an unreachable endpoint was not checked."""
        if self.status is CertStatus.UNREACHABLE:
            return Checked.UNKNOWN
        return Checked.OK if self.status is CertStatus.OK else Checked.FOUND

    def could_not_check(self, fallback: datetime) -> CouldNotCheck | None:
        """Why and since when it could not be checked (``fallback``: this run's time)."""
        if self.check is not Checked.UNKNOWN:
            return None
        return CouldNotCheck(
            reason=self.reason, kind="unreachable", since=self.unknown_since or fallback
        )


class RenewalResult(BaseModel):
    node: str
    action: str = Field(..., description="planned (dry run), renewed, failed, skipped")
    detail: str = ""
    upid: str | None = None
    old_not_after: datetime | None = None
    new_not_after: datetime | None = None


class CertificateReport(OperationReport):
    """Every certificate of the lab, its status and why, sorted by time to expiry."""

    operation: str = "certificates"
    endpoints: list[EndpointResult] = Field(default_factory=list)
    sources: dict[str, int] = Field(default_factory=dict, description="Targets per source.")
    duplicates: int = Field(0, description="Targets named by more than one source, merged.")
    renewals: list[RenewalResult] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)
    probe_seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.endpoints:
            out[e.status.value] = out.get(e.status.value, 0) + 1
        return out

    def unchecked(self) -> list[str]:
        """An endpoint that did not answer could not be checked: the run failed for it."""
        return [
            f"{e.target.label}: {e.reason}"
            for e in self.endpoints
            if e.status is CertStatus.UNREACHABLE
        ]

    def found(self) -> list[Found]:
        """Each status other than ok and unreachable, at its severity (expired, untrusted,
        hostname mismatch... critical; warning and renewal overdue: warning)."""
        by_status: dict[CertStatus, list[str]] = {}
        for e in self.by_expiry():
            if e.status not in (CertStatus.OK, CertStatus.UNREACHABLE):
                by_status.setdefault(e.status, []).append(e.target.label)
        worst_first = sorted(by_status.items(), key=lambda kv: -kv[0].rank)
        return [
            f for status, names in worst_first for f in Found.of(status.severity, status, names)
        ]

    def by_expiry(self) -> list[EndpointResult]:
        """Unreachable first (nothing known), then soonest expiry first."""
        return sorted(
            self.endpoints,
            key=lambda e: (
                e.classification.seconds_left is not None,
                e.classification.seconds_left or 0.0,
                e.target.label,
            ),
        )

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.by_expiry():
            leaf = e.leaf
            c = e.classification
            rows.append(
                {
                    "target": e.target.label,
                    "status": e.status.value,
                    # ok / warning / critical: what the security digest ranks rows by.
                    "severity": e.status.severity.value,
                    "expires": f"{c.expires:%Y-%m-%d %H:%M}" if c.expires else "",
                    "left": human_duration(c.seconds_left) if c.seconds_left is not None else "",
                    "reason": e.reason,
                    "issuer": leaf.issuer if leaf else "",
                    "key": f"{leaf.key_type} {leaf.key_bits}" if leaf else "",
                    "sources": ", ".join(e.target.sources),
                    **check_columns(e.check, e.could_not_check(self.started)),
                }
            )
        return rows

    def markdown(self) -> str:
        t = md_text
        counts = self.counts()
        lines = [
            f"# Certificates: {len(self.endpoints)} endpoints",
            "",
            " · ".join(f"**{k}**: {v}" for k, v in sorted(counts.items())) or "nothing found",
            "",
        ]
        bad = [e for e in self.by_expiry() if e.status is not CertStatus.OK]
        if bad:
            rows: list[list[object]] = []
            for e in bad:
                left = e.classification.seconds_left
                unknown = e.could_not_check(self.started)
                rows.append(
                    [
                        e.target.label,
                        e.status.value,
                        human_duration(left) if left is not None else "-",
                        unknown.describe() if unknown else e.reason,
                    ]
                )
            lines += md_table(["target", "status", "left", "reason"], rows)
            lines.append("")
        if self.renewals:
            lines.append("## Renewals")
            lines += [f"- {t(r.node)}: {t(f'{r.action} {r.detail}')}" for r in self.renewals]
            lines.append("")
        if self.skipped:
            lines.append("Skipped: " + "; ".join(t(s) for s in self.skipped))
        if self.failures:
            lines.append("Failures: " + t(self.failure_summary()))
        return "\n".join(lines)

    def metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for e in self.endpoints:
            labels = {"target": e.target.label, "name": e.target.name, "kind": e.target.kind}
            out.append(
                Metric(
                    name="labops_cert_probe_error",
                    value=1.0 if e.status is CertStatus.UNREACHABLE else 0.0,
                    labels=labels,
                )
            )
            # The status is the value (docs/metrics.md lists the ranks), never a label: a label
            # that changes would leave the old status's series behind for every query.
            out.append(
                Metric(name="labops_cert_status_rank", value=float(e.status.rank), labels=labels)
            )
            certs = [("leaf" if i == 0 else "intermediate", c) for i, c in enumerate(e.chain)]
            if e.anchor is not None:
                certs.append(("root", e.anchor))
            for role, cert in certs:
                out.append(
                    Metric(
                        name="labops_cert_not_after_timestamp_seconds",
                        value=cert.not_after.timestamp(),
                        # No serial label: a renewed certificate keeps its series (24 h step-ca
                        # certificates would otherwise start a new series every day).
                        labels={**labels, "role": role, "subject": cert.subject},
                    )
                )
        return out

    def notification(self) -> Notification | None:
        if not self.alerts and not self.failures:
            return None
        severity = Severity.INFO
        for a in self.alerts:
            if a.kind is not AlertKind.RECOVERED and a.status.severity.rank > severity.rank:
                severity = a.status.severity
        if self.failures and severity.rank < Severity.WARNING.rank:
            severity = Severity.WARNING
        lines = []
        for a in self.alerts:
            change = (
                f"{a.previous.value} -> " if a.previous and a.kind is not AlertKind.REMINDER else ""
            )
            prefix = "still " if a.kind is AlertKind.REMINDER else ""
            lines.append(f"{a.target}: {prefix}{change}{a.status.value} ({a.reason})")
        for f in self.failures:
            lines.append(f"{f.entity}: {f.reason}")
        return Notification(
            title=f"Certificates: {len(self.alerts)} change(s) in {self.lab}",
            severity=severity,
            body="\n".join(lines),
            topic="certificates/report",
            payload={
                "alerts": [a.model_dump(mode="json") for a in self.alerts],
                "counts": self.counts(),
            },
        )
