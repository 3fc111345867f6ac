"""Phone approval decisions without I/O: signed buttons, allowed users, expiry, the input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from labops.notify import approval

KEY = approval.signing_key("123:AAsecret")
NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
ALICE = {"id": 42, "username": "alice", "first_name": "Alice"}


def _data(choice: approval.Choice = "approve", sec: bool = True, minutes: int = 60) -> str:
    ticket = approval.Ticket(
        run_id=uuid4(), choice=choice, security_only=sec, expires=NOW + timedelta(minutes=minutes)
    )
    return approval.sign(ticket, KEY)


def test_buttons_fit_telegram_and_round_trip() -> None:
    run = uuid4()
    markup = approval.keyboard(run, True, NOW + timedelta(hours=1), True, KEY)
    buttons = [b for row in markup["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == list(approval.LABELS.values())
    for b in buttons:
        assert 1 <= len(b["callback_data"].encode()) <= 64
        ticket = approval.verify(b["callback_data"], KEY)
        assert ticket is not None and ticket.run_id == run and ticket.security_only
    no_canary = approval.keyboard(run, False, NOW, False, KEY)
    assert len(no_canary["inline_keyboard"][0]) == 2 and len(no_canary["inline_keyboard"]) == 1


def test_approve_gives_the_resume_forms_input_keeping_security_only() -> None:
    verdict = approval.judge(_data("approve", sec=True), ALICE, {42}, KEY, NOW)
    assert verdict.action == "resume"
    assert verdict.run_input == {
        "approve": True,
        "security_only": True,
        "canaries_only": False,
        "exclude_hosts": [],
        "note": "approved from Telegram by @alice (42)",
    }
    reject = approval.judge(_data("reject"), ALICE, {42}, KEY, NOW)
    assert reject.run_input is not None and reject.run_input["approve"] is False
    canary = approval.judge(_data("canaries"), ALICE, {42}, KEY, NOW)
    assert canary.run_input is not None and canary.run_input["canaries_only"] is True


def test_unknown_user_is_refused() -> None:
    verdict = approval.judge(_data(), {"id": 7, "username": "mallory"}, {42}, KEY, NOW)
    assert verdict.action == "refuse" and verdict.run_input is None
    assert "not allowed" in verdict.answer


def test_forged_or_edited_buttons_decide_nothing() -> None:
    good = _data("reject")
    edited = "lo1a" + good[4:]  # reject turned into approve, signature kept
    other_key = approval.sign(approval.verify(good, KEY), approval.signing_key("999:other"))  # type: ignore[arg-type]
    for data in (edited, other_key, "", "approve", good[:-1] + ("A" if good[-1] != "A" else "B")):
        verdict = approval.judge(data, ALICE, {42}, KEY, NOW)
        assert verdict.action == "refuse" and verdict.run_input is None, data


def test_expired_button_is_too_late() -> None:
    verdict = approval.judge(_data(minutes=-1), ALICE, {42}, KEY, NOW)
    assert verdict.action == "too_late" and verdict.run_input is None
    assert verdict.answer.startswith("Too late")


def test_phone_text_escapes_outside_text() -> None:
    html = approval.phone_html("**Patch plan**: <b>evil</b> & [plan table](http://ui/x)", "t")
    assert "<b>Patch plan</b>" in html and "&lt;b&gt;evil&lt;/b&gt; &amp;" in html
    assert '<a href="http://ui/x">plan table</a>' in html


def test_canaries_only_keeps_the_canary_step() -> None:
    from labops.patching import plan

    hosts = [
        plan.PlanHost(name=f"ct{i}", kind="container", node="pve1", packages=["x"])
        for i in range(4)
    ] + [plan.PlanHost(name="pve1", kind="node", node="pve1", packages=["y"])]
    rollout = plan.plan_rollout(hosts, ["ct2"], 1, 2, 2)
    kept, waiting = plan.canaries_only(rollout)
    assert [h.name for h in kept.hosts] == ["ct2"]
    assert sorted(waiting) == ["ct0", "ct1", "ct3", "pve1"]


def test_the_pressers_name_is_one_bounded_line_and_the_id_an_integer() -> None:
    """The name is the presser's own choice (Telegram's update): it reaches the run's note and
    the report, so it is one printable line of at most NAME_MAX characters."""
    hostile = {"first_name": "Eve\n**Approved by admin**\x1b[31m\u202e" + "x" * 300, "id": "42)"}
    shown = approval.who(hostile)
    assert "\n" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert shown.endswith(" (?)")  # an id that is not an integer is not echoed
    assert len(shown) <= approval.NAME_MAX + len(" (?)")
    assert shown.startswith("Eve **Approved by admin**")
    assert approval.who({"username": "alice", "id": 42}) == "@alice (42)"
    assert approval.who({"first_name": "\n\t", "id": 7}) == "someone (7)"


def test_an_approval_note_beyond_the_limit_is_refused() -> None:
    import pydantic

    from flows.patching import NOTE_MAX, PatchApproval

    assert PatchApproval(approve=True, note="n" * NOTE_MAX).note == "n" * NOTE_MAX
    with pytest.raises(pydantic.ValidationError):
        PatchApproval(approve=True, note="n" * (NOTE_MAX + 1))
    # the longest note the phone writes fits
    longest = approval.run_input(
        approval.Ticket(run_id=uuid4(), choice="canaries", security_only=False, expires=NOW),
        {"first_name": "x" * 500, "id": 10**15},
    )["note"]
    assert len(PatchApproval(**{"approve": True, "note": longest}).note) <= NOTE_MAX
