"""Phone approval end to end: the sandbox's Telegram (inline keyboard, callback queries,
getUpdates, answerCallbackQuery, editMessageText), a real Prefect server, the patch-apply pause
resumed by the listener. Approve, reject, an unknown user, a replayed callback, an expired pause."""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.patching.helpers import report_of

pytestmark = pytest.mark.usefixtures("prefect_server")
OPEN = [
    {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
]
ALICE = {"id": 4242, "username": "alice", "first_name": "Alice"}
MALLORY = {"id": 666, "username": "mallory", "first_name": "Mallory"}


def _config(sandbox: Any, directory: Path, **patching: Any) -> str:
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    # overlaps listed, never refused: the sandbox's nightly backup jobs (02:00, 02:30) would
    # refuse dns-primary when the suite runs near them (as tests/patching/helpers.py does)
    cfg["patching"] = {"windows": OPEN, "refresh": False, "overlaps": "list", **patching}
    cfg["systems"]["telegram"]["approvers"] = [ALICE["id"]]
    cfg["lab"]["state_dir"] = str(directory / "state")
    path = directory / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _messages(sandbox: Any) -> list[dict[str, Any]]:
    return list(sandbox.control("telegram", "messages")["messages"])


def _message(sandbox: Any, message_id: int) -> dict[str, Any]:
    return next(m for m in _messages(sandbox) if m["message_id"] == message_id)


class Run:
    """patch_apply in a thread, tagged for the lab like `labops run`; its buttons' message."""

    def __init__(self, sandbox: Any, config: str, host: str) -> None:
        from prefect import tags

        from flows.patching import patch_apply
        from labops.config.loader import load_config
        from labops.scope import lab_tag

        tag = lab_tag(load_config(config).lab.name)
        self.out: dict[str, Any] = {}
        before = max((m["message_id"] for m in _messages(sandbox)), default=0)

        def target() -> None:
            with tags("labops", tag):
                self.out["state"] = patch_apply(config=config, hosts=[host], return_state=True)

        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=lambda: ctx.run(target), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 90
        self.message: dict[str, Any] | None = None
        while time.monotonic() < deadline and self.message is None and self.thread.is_alive():
            fresh = [
                m for m in _messages(sandbox) if m["message_id"] > before and m["reply_markup"]
            ]
            self.message = fresh[0] if fresh else None
            time.sleep(0.2)
        assert self.message is not None, "no approval message with buttons"

    def button(self, label: str) -> str:
        assert self.message is not None
        rows = self.message["reply_markup"]["inline_keyboard"]
        return next(b["callback_data"] for row in rows for b in row if label in b["text"])

    def wait_paused(self, config: str) -> None:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + 30
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                runs = [
                    r
                    for r in client.read_flow_runs()
                    if r.parameters.get("config") == config and r.state and r.state.is_paused()
                ]
                if runs:
                    return
                time.sleep(0.2)
        raise AssertionError("run did not pause")

    def finish(self) -> Any:
        self.thread.join(120)
        assert "state" in self.out, "flow did not finish"
        return report_of(self.out["state"])


def _press(sandbox: Any, listener: Any, message_id: int, data: str, user: dict[str, Any]) -> Any:
    """Press a button, let the listener take one round; the answer the presser saw."""
    pressed = sandbox.control("telegram", "press", message_id=message_id, data=data, user=user)
    assert listener.poll_once(timeout_s=5) >= 1
    answers = sandbox.control("telegram", "answers")["answers"]
    return next(a for a in answers if a["callback_query_id"] == pressed["callback_query_id"])


def _listener(config: str) -> Any:
    from blocks.context import LabContext
    from deployments.telegram_approvals import ApprovalListener

    listener = ApprovalListener(LabContext.load(config))
    listener.poll_once(timeout_s=0)  # confirm presses left by earlier tests
    while listener.poll_once(timeout_s=0):
        pass
    return listener


def pending_of(sandbox: Any, host: str) -> list[str]:
    return sorted(sandbox.control("fleet", "state", host=host)["pending"])


def test_unknown_user_then_approve_then_replay(sandbox: Any, tmp_path: Path) -> None:
    cfg = _config(sandbox, tmp_path, security_only=True)
    listener = _listener(cfg)
    run = Run(sandbox, cfg, "dns-primary")
    run.wait_paused(cfg)
    assert run.message is not None
    mid = run.message["message_id"]
    assert "Patch plan" in run.message["text"]  # the approval summary of the Resume form
    # an unknown user: refused, the run stays paused, the buttons stay
    answer = _press(sandbox, listener, mid, run.button("Approve"), MALLORY)
    assert "not allowed" in answer["text"] and answer["show_alert"]
    assert _message(sandbox, mid)["reply_markup"] and run.thread.is_alive()
    # a forged button: refused too
    forged = "lo1a" + run.button("Reject")[4:]
    assert "Not a valid" in _press(sandbox, listener, mid, forged, ALICE)["text"]
    # the allowed user approves: the run resumes with the form's input, the message says who
    answer = _press(sandbox, listener, mid, run.button("Approve"), ALICE)
    assert answer["text"] == "Approved." and not answer["show_alert"]
    report = run.finish()
    assert report.approval == "approved: approved from Telegram by @alice (4242)"
    assert not report.narrowed  # security only as shown, never widened
    edited = _message(sandbox, mid)
    assert edited["reply_markup"] is None and "Approved by @alice (4242) at" in edited["text"]
    # the same press again (a replayed callback): too late, nothing changes
    again = _press(sandbox, listener, mid, run.button("Reject"), ALICE)
    assert again["text"].startswith("Too late") and again["show_alert"]
    assert report_of(run.out["state"]).approval == report.approval


def test_reject_from_the_phone_changes_nothing(sandbox: Any, tmp_path: Path) -> None:
    cfg = _config(sandbox, tmp_path)
    listener = _listener(cfg)
    before = pending_of(sandbox, "postgres")
    run = Run(sandbox, cfg, "postgres")
    run.wait_paused(cfg)
    assert run.message is not None
    answer = _press(sandbox, listener, run.message["message_id"], run.button("Reject"), ALICE)
    assert answer["text"] == "Rejected."
    report = run.finish()
    assert report.approval == "rejected: rejected from Telegram by @alice (4242)"
    assert not report.applied and pending_of(sandbox, "postgres") == before
    assert "Rejected by @alice" in _message(sandbox, run.message["message_id"])["text"]


def test_expired_pause_is_too_late(sandbox: Any, tmp_path: Path) -> None:
    # long enough that a loaded machine's flow reaches its pause before the pause ends
    cfg = _config(sandbox, tmp_path, approval_timeout_s=20)
    listener = _listener(cfg)
    before = pending_of(sandbox, "postgres")
    run = Run(sandbox, cfg, "postgres")
    report = run.finish()  # nobody pressed: the pause timed out
    assert report.failures and "no approval" in report.failures[0].reason
    assert run.message is not None
    mid = run.message["message_id"]
    closed = _message(sandbox, mid)
    assert closed["reply_markup"] is None and "No decision" in closed["text"]
    answer = _press(sandbox, listener, mid, run.button("Approve"), ALICE)
    assert answer["text"].startswith("Too late") and answer["show_alert"]
    assert pending_of(sandbox, "postgres") == before
