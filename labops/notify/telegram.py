"""Telegram notifier: ``sendMessage`` in HTML mode, long texts split, flood limits honoured.

The bot token is part of every URL (``/bot<token>/sendMessage``), so every error text that leaves
this module goes through :func:`labops.redact.redact` and an explicit mask of the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from labops.errors import LabopsError
from labops.http import HttpClient
from labops.notify.base import Delivery, Notifier
from labops.notify.format import TELEGRAM_LIMIT, render_html, split_message
from labops.redact import MASK, RedactingFilter, redact, register_secret
from labops.reports import Notification

log = logging.getLogger("labops.notify.telegram")

DEFAULT_API = "https://api.telegram.org"

_httpx_filter_installed = False


def _mask_httpx_request_log() -> None:
    """httpx logs every request URL at INFO, and ours carry the token: mask it at the source."""
    global _httpx_filter_installed
    if not _httpx_filter_installed:
        logging.getLogger("httpx").addFilter(RedactingFilter())
        _httpx_filter_installed = True


class TelegramNotifier(Notifier):
    """Sends notifications to one chat through the Bot API (or the sandbox's copy of it)."""

    channel = "telegram"

    def __init__(
        self,
        api_url: str,
        bot_token: SecretStr,
        chat_id: str | int,
        client: HttpClient | None = None,
        *,
        max_flood_waits: int = 3,
        max_wait_s: float = 60.0,
    ) -> None:
        self.api_url = (api_url or DEFAULT_API).rstrip("/")
        self._token = bot_token
        register_secret(bot_token.get_secret_value())
        _mask_httpx_request_log()
        self.chat_id = chat_id
        self.client = client or HttpClient("telegram", self.api_url)
        self.max_flood_waits = max_flood_waits
        self.max_wait_s = max_wait_s
        self.sleep: Callable[[float], None] = time.sleep

    def url(self, method: str) -> str:
        """The Bot API URL of ``method`` (it holds the token: never log it unmasked)."""
        return f"{self.api_url}/bot{self._token.get_secret_value()}/{method}"

    def token(self) -> SecretStr:
        return self._token

    def _mask(self, text: str) -> str:
        return redact(text.replace(self._token.get_secret_value(), MASK))

    def deliver(self, notification: Notification) -> Delivery:
        """Render, split and send; the Delivery says how many parts went out or what failed."""
        parts = split_message(render_html(notification), TELEGRAM_LIMIT)
        try:
            for i, part in enumerate(parts, 1):
                problem = self.send_text(part)
                if problem:
                    return Delivery(
                        channel=self.channel,
                        ok=False,
                        detail=f"part {i}/{len(parts)}: {problem}",
                    )
        except LabopsError as exc:
            return Delivery(channel=self.channel, ok=False, detail=self._mask(str(exc)))
        except Exception as exc:  # a notifier never raises: the flow's result matters more
            detail = self._mask(f"{type(exc).__name__}: {exc}")
            return Delivery(channel=self.channel, ok=False, detail=detail)
        return Delivery(channel=self.channel, ok=True, detail=f"{len(parts)} message(s)")

    def send_text(self, html: str) -> str | None:
        """Send one HTML message (≤ 4096 characters); None on success, else the reason.

        Raises labops errors from the HTTP policy (401 -> AuthFailed, network -> Unreachable).
        """
        url = self.url("sendMessage")
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": html,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        waits = 0
        while True:
            # once: a message whose answer was lost may have been posted; a second one would be
            # a duplicate in the chat, so it is reported as maybe delivered instead
            resp = self.client.request(
                "POST", url, json=payload, ok=(200, 400, 403, 429), once=True
            )
            body = _json(resp)
            if resp.status_code == 200 and body.get("ok", True):
                return None
            description = str(body.get("description") or resp.reason_phrase)
            if resp.status_code != 429:
                return self._mask(f"{resp.status_code} {description}")
            retry_after = _retry_after(body, resp.headers.get("Retry-After"))
            if waits >= self.max_flood_waits or retry_after > self.max_wait_s:
                return f"429 {description} (gave up after {waits} wait(s))"
            waits += 1
            log.info("telegram flood limit: waiting %.1fs as asked", retry_after)
            self.sleep(retry_after)


def _json(resp: Any) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(body: dict[str, Any], header: str | None) -> float:
    params = body.get("parameters")
    if isinstance(params, dict):
        value = params.get("retry_after")
        if isinstance(value, int | float) and value >= 0:
            return float(value)
    try:
        return max(0.0, float(header)) if header else 1.0
    except ValueError:
        return 1.0
