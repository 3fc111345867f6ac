"""The notifier interface and the fan-out to every configured channel.

Every notification is redacted before any channel sees it (:meth:`Notifier.send`): a failure
reason may quote a URL or a command line holding a secret, and a chat or a broker keeps it.
"""

from __future__ import annotations

import abc
from typing import Any

from pydantic import BaseModel

from labops.redact import redact
from labops.reports import Notification


class Delivery(BaseModel):
    channel: str
    ok: bool
    detail: str = ""


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redact_value(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redacted(notification: Notification) -> Notification:
    """A copy of ``notification`` with every registered secret masked (title, body, link and
    every string of the payload)."""
    return notification.model_copy(
        update={
            "title": redact(notification.title),
            "body": redact(notification.body),
            "payload": _redact_value(notification.payload),
            "link": redact(notification.link) if notification.link else notification.link,
        }
    )


class Notifier(abc.ABC):
    channel: str = "notifier"

    def prepare(self) -> None:
        """Resolve what this channel needs before any channel sends (a secret resolved now is
        registered for redaction, so another channel's message can never carry it). Never
        raises: a problem is kept for :meth:`deliver` to report. Called again, does nothing."""
        return None

    def send(self, notification: Notification) -> Delivery:
        """Deliver one notification, redacted; report problems in the Delivery, never raise."""
        self.prepare()
        return self.deliver(redacted(notification))

    @abc.abstractmethod
    def deliver(self, notification: Notification) -> Delivery:
        """Deliver one (already redacted) notification; never raise."""


class MultiNotifier(Notifier):
    """Sends to every channel; the delivery is ok when at least one channel delivered."""

    channel = "all"

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    def send_all(self, notification: Notification) -> list[Delivery]:
        """One Delivery per channel. Not logged here: the caller names each failed channel once
        (``tasks.publish`` as a failure of the run's notify step)."""
        for n in self.notifiers:
            n.prepare()
        return [n.send(notification) for n in self.notifiers]

    def deliver(self, notification: Notification) -> Delivery:
        results = self.send_all(notification)
        if not results:
            return Delivery(channel=self.channel, ok=False, detail="no notifier configured")
        ok = any(r.ok for r in results)
        detail = "; ".join(f"{r.channel}: {'ok' if r.ok else r.detail}" for r in results)
        return Delivery(channel=self.channel, ok=ok, detail=detail)
