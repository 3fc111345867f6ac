"""The notifier interface and the fan-out to every configured channel."""

from __future__ import annotations

import abc

from pydantic import BaseModel

from labops.reports import Notification


class Delivery(BaseModel):
    channel: str
    ok: bool
    detail: str = ""


class Notifier(abc.ABC):
    channel: str = "notifier"

    @abc.abstractmethod
    def send(self, notification: Notification) -> Delivery:
        """Deliver one notification; report problems in the Delivery, never raise."""


class MultiNotifier(Notifier):
    """Sends to every channel; the delivery is ok when at least one channel delivered."""

    channel = "all"

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    def send_all(self, notification: Notification) -> list[Delivery]:
        """One Delivery per channel. Not logged here: the caller names each failed channel once
        (``tasks.publish`` as a failure of the run's notify step)."""
        return [n.send(notification) for n in self.notifiers]

    def send(self, notification: Notification) -> Delivery:
        results = self.send_all(notification)
        if not results:
            return Delivery(channel=self.channel, ok=False, detail="no notifier configured")
        ok = any(r.ok for r in results)
        detail = "; ".join(f"{r.channel}: {'ok' if r.ok else r.detail}" for r in results)
        return Delivery(channel=self.channel, ok=ok, detail=detail)
