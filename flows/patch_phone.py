"""The patch plan's approval on the phone: the Telegram message with buttons while the run is
paused, and its last word when the pause ends without a press (answered in the UI, timed out).

The presses themselves are handled by ``labops approvals`` (deployments/telegram_approvals.py),
which resumes the run with the Resume form's input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.context import get_run_context

from blocks.context import LabContext
from blocks.factory import telegram_block
from labops.patching import plan
from tasks.telegram import ask_on_phone, close_on_phone


class PhoneApproval:
    """One approval message: sent at the pause, closed at its end (or left to the listener)."""

    def __init__(self, ctx: LabContext, summary: str) -> None:
        self.ctx = ctx
        self.summary = summary
        self.title = f"Patch plan of {ctx.config.lab.name} awaiting approval"
        self.message_id: int | None = None

    def enabled(self) -> bool:
        tg = self.ctx.config.systems.telegram
        return tg is not None and bool(telegram_block(self.ctx.config).settings.approvers)

    def ask(self, rollout: plan.RolloutPlan, security_only: bool, timeout_s: float) -> None:
        """Send the buttons (when Telegram has approvers configured and this is a flow run)."""
        run = get_run_context().flow_run  # type: ignore[union-attr]
        if run is None or not self.enabled():
            return
        expires = datetime.now(UTC) + timedelta(seconds=timeout_s)
        canaries = any(s.phase == "canary" for s in rollout.steps)
        self.message_id = ask_on_phone(
            telegram_block(self.ctx.config), UUID(str(run.id)), self.title, self.summary,
            security_only, expires, canaries,
        )  # fmt: skip

    def close(self, how: str, decided_on_phone: bool) -> None:
        """Remove the buttons saying how the pause ended, unless the listener already did."""
        if self.message_id is None or decided_on_phone:
            return
        close_on_phone(
            telegram_block(self.ctx.config), self.message_id, self.title, self.summary, how
        )
