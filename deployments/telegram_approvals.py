"""The phone approval listener: presses of the buttons under a paused patch plan resume the run.

Long-polls the Bot API's ``getUpdates`` (outbound HTTPS only: no public webhook, no open port),
judges each press (:func:`labops.notify.approval.judge`: a labops-signed button, an allowed user,
not expired), then asks Prefect: only a run of this lab that is still paused is resumed, with the
Resume form's input. Every press is answered (``answerCallbackQuery``); a decision edits the
message to say who decided and when and removes the buttons; a press on a run already resumed,
finished or timed out is answered "too late" and changes nothing. Run by ``labops approvals``
(its own unit beside ``labops bridge``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run

from blocks.context import LabContext
from blocks.factory import telegram_block
from labops.errors import one_line
from labops.notify import approval
from labops.notify.format import escape
from labops.notify.telegram_bot import BotApi
from labops.redact import redact
from labops.scope import lab_tag

log = logging.getLogger("labops.approvals")


class ApprovalListener:
    """One bot's presses, for one lab's paused runs."""

    def __init__(self, ctx: LabContext) -> None:
        block = telegram_block(ctx.config)
        self.api = BotApi(block.get_client())
        self.key = approval.signing_key(block.bot_token.get_secret_value())
        self.allowed = set(block.settings.approvers)
        self.tag = lab_tag(ctx.config.lab.name)
        # a long poll must end before the HTTP read timeout does
        self.poll_s = max(1, int(block.settings.retry.timeout_s) - 5)
        self.offset: int | None = None
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def poll_once(self, timeout_s: int | None = None) -> int:
        """Fetch and handle the presses waiting (up to ``timeout_s`` for one); how many."""
        updates = self.api.updates(self.offset, self.poll_s if timeout_s is None else timeout_s)
        for update in updates:
            # confirmed before handling: a press that breaks the listener is not retried forever
            self.offset = int(update["update_id"]) + 1
            query = update.get("callback_query")
            if isinstance(query, dict):
                try:
                    self.handle(query)
                except Exception as exc:  # one bad press never stops the listener
                    log.warning("press not handled: %s", redact(one_line(exc)))
        return len(updates)

    def handle(self, query: dict[str, Any]) -> approval.Verdict:
        """Judge one press, act on it, answer it; the verdict."""
        user = query.get("from") if isinstance(query.get("from"), dict) else {}
        assert isinstance(user, dict)
        now = self.clock()
        verdict = approval.judge(str(query.get("data") or ""), user, self.allowed, self.key, now)
        if verdict.action == "resume":
            verdict = self._resume(verdict)
        log.info("press by %s: %s (%s)", approval.who(user), verdict.action, redact(verdict.answer))
        self.api.answer(str(query.get("id")), verdict.answer, alert=verdict.action != "resume")
        message = query.get("message")
        if verdict.action != "refuse" and isinstance(message, dict):
            # an unknown user or a forged button leaves the buttons to the allowed users
            line = (
                approval.decision_line(verdict, user, now)
                if verdict.action == "resume"
                else verdict.answer
            )
            shown = escape(str(message.get("text") or ""))
            self.api.edit(int(message["message_id"]), approval.decided_html(shown, line))
        return verdict

    def _resume(self, verdict: approval.Verdict) -> approval.Verdict:
        """Resume the run when it is this lab's and still paused; else "too late"/refused."""
        assert verdict.ticket is not None and verdict.run_input is not None
        run_id: UUID = verdict.ticket.run_id
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return _too_late(verdict, "the run no longer exists")
        if self.tag not in (run.tags or []):
            return verdict.model_copy(
                update={"action": "refuse", "answer": "Not a run of this lab: nothing changed."}
            )
        if run.state is None or not run.state.is_paused():
            state = run.state.name if run.state else "unknown"
            return _too_late(verdict, f"the run is already {state}")
        try:
            resume_flow_run(run_id, run_input=verdict.run_input)
        except Exception as exc:  # timed out meanwhile, resumed from the UI meanwhile
            return _too_late(verdict, one_line(exc))
        return verdict

    def run_forever(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Poll until ``stop()``; a Bot API or network problem waits and tries again."""
        delay = 1.0
        while not stop():
            try:
                self.poll_once()
                delay = 1.0
            except Exception as exc:
                log.warning("getUpdates failed (retrying in %.0fs): %s", delay, one_line(exc))
                time.sleep(delay)
                delay = min(delay * 2, 60.0)


def _too_late(verdict: approval.Verdict, why: str) -> approval.Verdict:
    return verdict.model_copy(
        update={
            "action": "too_late",
            "answer": f"Too late: {why}. Nothing changed."[:200],
            "run_input": None,
        }
    )


def main(config: str | None = None) -> None:
    """Listen until interrupted (the ``labops approvals`` unit)."""
    ctx = LabContext.load(config)
    listener = ApprovalListener(ctx)
    if not listener.allowed:
        log.warning("systems.telegram.approvers is empty: every press will be refused")
    listener.run_forever()
