"""Every other channel through Apprise: one notifier per configured target.

No client per service: Apprise knows ntfy, Gotify, Pushover, e-mail, Discord, Matrix, Slack and
a hundred more, and Prefect's own notification blocks are Apprise-based, so a saved Prefect
block is used through the same path (its Apprise URL taken from the block). Each target:

- resolves the secret references of its URL when it sends (never earlier), which registers
  them for redaction;
- fits the message to the channel's own limits (Apprise's ``body_maxlen`` and ``title_maxlen``
  per service), split or truncated, the run's link at the end of every part;
- never raises: a channel down, an unknown URL or a saved block gone is a failed Delivery whose
  detail is Apprise's own words, masked.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr

from labops.notify.base import Delivery, Notifier
from labops.notify.format import fit_text
from labops.notify.settings import AppriseTarget
from labops.outcome import Severity
from labops.redact import redact, register_secret
from labops.reports import Notification
from labops.secret_urls import resolve_url, shown_url

_NOTIFY_TYPE = {
    Severity.OK: "success",
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "failure",
}


MESSAGE_LIMITS = {"ntfy": 4000, "ntfys": 4000}
"""Where a service's real limit is below Apprise's ``body_maxlen``: ntfy turns a message over
4,096 bytes into a file attachment (Apprise then uploads it as one), which a phone does not show
as a notification; the margin leaves room for a few multi-byte characters."""


class ChannelError(Exception):
    """Why a target could not be reached or used (one line, masked)."""


class AppriseNotifier(Notifier):
    """Sends to one Apprise target (a URL or a saved Prefect notification block)."""

    def __init__(self, target: AppriseTarget, lab: str | None = None) -> None:
        self.target = target
        self.lab = lab
        self.channel = f"apprise:{target.name}"
        self._plugins: list[Any] | None = None
        self._problem: str | None = None

    def prepare(self) -> None:
        if self._plugins is not None or self._problem is not None:
            return
        try:
            self._plugins = self._load_plugins()
        except ChannelError as exc:
            self._problem = str(exc)
        except Exception as exc:  # reported by deliver, as this channel's failure
            self._problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def deliver(self, notification: Notification) -> Delivery:
        try:
            for plugin in self.plugins():
                self._send(plugin, notification)
        except ChannelError as exc:
            return Delivery(channel=self.channel, ok=False, detail=redact(str(exc)))
        except Exception as exc:  # never raise from a notifier
            detail = f"{type(exc).__name__}: {exc}"
            return Delivery(channel=self.channel, ok=False, detail=redact(detail))
        return Delivery(channel=self.channel, ok=True, detail=self.where())

    def where(self) -> str:
        """The target as it may be shown (no secret): its URL template or its block's name."""
        if self.target.url is not None:
            return shown_url(self.target.url)
        return f"prefect block {self.target.prefect_block}"

    # -- the Apprise plugins behind the target ---------------------------------------------

    def plugins(self) -> list[Any]:
        """The Apprise service objects of this target (a Prefect block may hold several),
        loaded once; raises ``ChannelError`` saying why they cannot be had."""
        self.prepare()
        if self._problem is not None:
            raise ChannelError(self._problem)
        return self._plugins or []

    def _load_plugins(self) -> list[Any]:
        """Resolve the URL's references (or load the saved block) and register every secret
        in them for redaction, before anything is sent anywhere."""
        import apprise

        if self.target.url is not None:
            url = resolve_url(self.target.url, f"apprise target {self.target.name}")
            plugin = apprise.Apprise.instantiate(url.get_secret_value())
            if not plugin:
                raise ChannelError(
                    f"Apprise does not understand the URL {shown_url(self.target.url)} "
                    "(unknown scheme or missing part)"
                )
            return [plugin]
        return self._block_plugins()

    def _block_plugins(self) -> list[Any]:
        from prefect.blocks.core import Block

        name = self.target.prefect_block or ""
        try:
            block: Any = Block.load(name)  # a sync call: this runs in a worker thread
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ChannelError(f"no saved Prefect notification block {name!r} ({first})") from None
        for field in type(block).model_fields:  # the block's secrets: url, token, api key...
            value = getattr(block, field, None)
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value())
        client = getattr(block, "_apprise_client", None)
        plugins = list(client) if client is not None else []
        if not plugins:
            raise ChannelError(f"Prefect block {name!r} is not an Apprise-based notification block")
        for plugin in plugins:
            register_secret(plugin.url(privacy=False))
        return plugins

    # -- sending ----------------------------------------------------------------------------

    def _send(self, plugin: Any, notification: Notification) -> None:
        import apprise

        title, parts = fit_for(plugin, notification, split=self.target.overflow == "split")
        kind = _NOTIFY_TYPE.get(notification.severity, "info")
        for i, body in enumerate(parts):
            numbered = f"{title} ({i + 1}/{len(parts)})" if len(parts) > 1 and title else title
            with apprise.LogCapture(level=logging.WARNING) as captured:
                ok = plugin.notify(body=body, title=numbered, notify_type=kind)
            if not ok:
                said = " ".join(captured.getvalue().split())[-300:] or "Apprise reported a failure"
                sent = f" after {i} of {len(parts)} part(s)" if i else ""
                raise ChannelError(f"{self.where()}: {said}{sent}")


def fit_for(plugin: Any, notification: Notification, *, split: bool) -> tuple[str, list[str]]:
    """The title and the body parts for one Apprise service, within its limits. A service
    without titles (``title_maxlen`` 0: Telegram, SMS) gets the title as the body's first line."""
    title = notification.title
    body = notification.body
    title_max = int(getattr(plugin, "title_maxlen", 250) or 0)
    body_max = int(getattr(plugin, "body_maxlen", 32768) or 32768)
    protocol = (
        getattr(plugin, "secure_protocol", None) if getattr(plugin, "secure", False) else None
    )
    scheme = str(protocol or getattr(plugin, "protocol", "") or "")
    body_max = min(body_max, MESSAGE_LIMITS.get(scheme, body_max))
    if title_max <= 0:
        body = f"{title}\n\n{body}" if body else title
        title = ""
    elif len(title) > title_max - 8:  # room for " (1/3)"
        title = title[: max(title_max - 9, 1)] + "\u2026"
    return title, fit_text(body, notification.link, body_max, split=split)
