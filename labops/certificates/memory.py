"""What a certificates run remembers between runs: each endpoint's status since when, and which
changes were notified (pure; the flow loads and saves it)."""

from __future__ import annotations

from datetime import datetime

from labops.certificates.alerts import CertStates, plan_alerts
from labops.certificates.classify import CertStatus
from labops.certificates.report import CertificateReport


def remember(
    report: CertificateReport, previous: CertStates | None, now: datetime, reminder_hours: float
) -> CertStates:
    """Plan the report's alerts against ``previous`` and return the states to save. An endpoint
    unreachable again keeps the date of its first failed probe in a row."""
    current = {e.target.key: (e.target.label, e.status, e.reason) for e in report.endpoints}
    report.alerts, states = plan_alerts(previous, current, now, reminder_hours)
    for e in report.endpoints:
        if e.status is CertStatus.UNREACHABLE and e.target.key in states.targets:
            e.unknown_since = states.targets[e.target.key].since
    if report.failed and previous is not None:
        # A source that failed this time hid its targets: remember their last states, or they
        # would all be "new" (and notified again) when the source answers next time.
        kept = {k: v for k, v in previous.targets.items() if k not in current}
        states.targets = {**kept, **states.targets}
    return states
