"""Telegram tasks: the approval message with its buttons, and its edit when the pause ends."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from prefect import get_run_logger, task

from blocks.notify import TelegramBot
from labops.errors import one_line
from labops.notify import approval
from labops.notify.telegram_bot import BotApi
from labops.redact import redact


@task(name="ask-on-phone", retries=0)
def ask_on_phone(
    bot: TelegramBot,
    run_id: UUID,
    title: str,
    summary: str,
    security_only: bool,
    expires: datetime,
    canaries: bool,
) -> int | None:
    """Send the plan's approval summary with Approve / Reject (/ Canaries only) buttons to the
    chat. Changes no host. Its message id, or None when it could not be sent (logged: the
    Resume form in the UI still works, so the run waits all the same)."""
    api = BotApi(bot.get_client())
    key = approval.signing_key(bot.bot_token.get_secret_value())
    markup = approval.keyboard(run_id, security_only, expires, canaries, key)
    try:
        return api.send(approval.phone_html(summary, title), markup)
    except Exception as exc:  # the UI remains: a lost phone message must not stop the run
        get_run_logger().warning("approval buttons not sent to Telegram: %s", redact(one_line(exc)))
        return None


@task(name="close-phone-approval", retries=0)
def close_on_phone(bot: TelegramBot, message_id: int, title: str, summary: str, line: str) -> None:
    """Remove the buttons and say how the pause ended (the listener edits it on a press; this
    covers an answer from the UI and a timeout). Changes no host; never fails the run."""
    api = BotApi(bot.get_client())
    html = approval.decided_html(approval.phone_html(summary, title), line)
    try:
        api.edit(message_id, html)
    except Exception as exc:
        get_run_logger().warning("approval message not updated: %s", redact(one_line(exc)))
