"""Which certificate changes deserve a message: pure planning against the previous run's states.

A message goes out when a target's status changes (a threshold crossed is a change: ok ->
warning -> critical), when it recovers, and as a reminder every ``reminder_hours`` for what
stays critical. The same warning is never repeated day after day.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from labops.certificates.classify import CertStatus
from labops.reports import Severity


class TargetState(BaseModel):
    status: CertStatus
    since: datetime
    notified: datetime | None = None


class CertStates(BaseModel):
    """What the flow keeps in ``ctx.state`` between runs (key: target key)."""

    targets: dict[str, TargetState] = Field(default_factory=dict)


class AlertKind(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    RECOVERED = "recovered"
    REMINDER = "reminder"


class Alert(BaseModel):
    key: str
    target: str
    kind: AlertKind
    status: CertStatus
    previous: CertStatus | None = None
    reason: str = ""


def plan_alerts(
    previous: CertStates | None,
    current: dict[str, tuple[str, CertStatus, str]],
    now: datetime,
    reminder_hours: float = 24.0,
) -> tuple[list[Alert], CertStates]:
    """``current``: key -> (label, status, reason). Returns the alerts and the new states."""
    prev = previous.targets if previous else {}
    alerts: list[Alert] = []
    states: dict[str, TargetState] = {}
    for key, (label, status, reason) in current.items():
        old = prev.get(key)
        if old is None:
            state = TargetState(status=status, since=now)
            if status is not CertStatus.OK:
                alerts.append(
                    Alert(key=key, target=label, kind=AlertKind.NEW, status=status, reason=reason)
                )
                state.notified = now
        elif old.status is not status:
            state = TargetState(status=status, since=now, notified=now)
            kind = AlertKind.RECOVERED if status is CertStatus.OK else AlertKind.CHANGED
            alerts.append(
                Alert(
                    key=key,
                    target=label,
                    kind=kind,
                    status=status,
                    previous=old.status,
                    reason=reason,
                )
            )
        else:
            state = old.model_copy()
            due = old.notified is None or now - old.notified >= timedelta(hours=reminder_hours)
            if status.severity is Severity.CRITICAL and due:
                alerts.append(
                    Alert(
                        key=key,
                        target=label,
                        kind=AlertKind.REMINDER,
                        status=status,
                        previous=old.status,
                        reason=reason,
                    )
                )
                state.notified = now
        states[key] = state
    return alerts, CertStates(targets=states)
