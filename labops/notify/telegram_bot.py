"""The interactive half of the Bot API: a message with buttons, its edits, the presses
(``getUpdates`` long polling: no public webhook needed) and their answers.

Built on a :class:`labops.notify.telegram.TelegramNotifier` (same URL, token, chat, HTTP policy).
Every error text is masked (the token is in every URL). Raises :class:`BotApiError` for an answer
the API refused; network problems raise the HTTP policy's labops errors.
"""

from __future__ import annotations

from typing import Any

from labops.errors import LabopsError
from labops.notify.telegram import TelegramNotifier, _json


class BotApiError(LabopsError):
    """The Bot API answered ``ok: false``."""


class BotApi:
    def __init__(self, notifier: TelegramNotifier) -> None:
        self.notifier = notifier
        self.chat_id = notifier.chat_id

    def call(self, method: str, payload: dict[str, Any], *, once: bool = False) -> Any:
        """One Bot API call; its ``result``. ``once``: never repeated after it may have arrived
        (a message sent twice is a duplicate in the chat)."""
        resp = self.notifier.client.request(
            "POST", self.notifier.url(method), json=payload, ok=(200, 400, 403, 409), once=once
        )
        body = _json(resp)
        if resp.status_code != 200 or not body.get("ok"):
            description = str(body.get("description") or resp.reason_phrase)
            raise BotApiError(self.notifier._mask(f"{method}: {resp.status_code} {description}"))
        return body.get("result")

    def send(self, html: str, reply_markup: dict[str, Any] | None = None) -> int:
        """Send one HTML message (with an inline keyboard); its message_id."""
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "text": html,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if reply_markup:
            payload["reply_markup"] = reply_markup
        return int(self.call("sendMessage", payload, once=True)["message_id"])

    def edit(self, message_id: int, html: str, reply_markup: dict[str, Any] | None = None) -> None:
        """Replace a message's text (and keyboard: none removes it). An edit to the same
        content is not an error (a decision may be shown twice after a restart)."""
        payload: dict[str, Any] = {
            "chat_id": self.chat_id,
            "message_id": message_id,
            "text": html,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
            "reply_markup": reply_markup or {"inline_keyboard": []},
        }
        try:
            self.call("editMessageText", payload)
        except BotApiError as exc:
            if "message is not modified" not in str(exc):
                raise

    def answer(self, callback_query_id: str, text: str, alert: bool = False) -> None:
        """Answer a press (the small notice on the presser's phone; at most 200 characters)."""
        self.call(
            "answerCallbackQuery",
            {"callback_query_id": callback_query_id, "text": text[:200], "show_alert": alert},
        )

    def updates(self, offset: int | None, timeout_s: int) -> list[dict[str, Any]]:
        """Button presses from ``offset`` on, waiting up to ``timeout_s`` for one (long poll)."""
        payload: dict[str, Any] = {"timeout": timeout_s, "allowed_updates": ["callback_query"]}
        if offset is not None:
            payload["offset"] = offset
        result = self.call("getUpdates", payload)
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []
