"""Approval from the phone: the buttons under a paused patch plan, and what a press decides.

A button's ``callback_data`` (at most 64 bytes, Telegram's limit) names the paused flow run, the
choice, whether the plan shown was security only, and when the pause expires, signed with an HMAC
whose key is derived from the bot token (only the bot and labops know it), so a forged or edited
button decides nothing. Who may decide is a list of Telegram user ids; a press on an expired
button is "too late" here already, and one on a run no longer paused is "too late" at the listener
(``deployments/telegram_approvals.py``), which asks Prefect.

The answer sent to the run is the same typed input the Resume form sends (``PatchApproval``:
approve, security_only, note; plus canaries_only), so the flow cannot tell the two apart.

Pure: no network, no Prefect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel

from labops.notify.format import escape

Choice = Literal["approve", "reject", "canaries"]
_CODE: dict[str, Choice] = {"a": "approve", "r": "reject", "c": "canaries"}
_LETTER = {v: k for k, v in _CODE.items()}
PREFIX = "lo1"  # labops, format 1: a press of another bot's or an older format's button is refused
LABELS: dict[Choice, str] = {
    "approve": "\u2705 Approve",
    "reject": "\u274c Reject",
    "canaries": "\U0001f424 Canaries only",
}
VERBS: dict[Choice, str] = {
    "approve": "Approved",
    "reject": "Rejected",
    "canaries": "Approved (canaries only)",
}


class Ticket(BaseModel):
    """What one button says: which paused run, which choice, until when."""

    run_id: UUID
    choice: Choice
    security_only: bool
    expires: datetime


class Verdict(BaseModel):
    """What the listener does with one press."""

    action: Literal["resume", "refuse", "too_late"]
    answer: str  # the callback answer the presser sees (at most 200 characters)
    ticket: Ticket | None = None
    run_input: dict[str, Any] | None = None


def signing_key(bot_token: str) -> bytes:
    """The HMAC key of the buttons: derived from the bot token, never the token itself."""
    return hmac.new(bot_token.encode(), b"labops phone approval v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def sign(ticket: Ticket, key: bytes) -> str:
    """The button's callback_data: ``lo1<choice><security><run id><expiry>.<signature>``."""
    body = (
        f"{PREFIX}{_LETTER[ticket.choice]}{int(ticket.security_only)}"
        f"{_b64(ticket.run_id.bytes)}{_base36(int(ticket.expires.timestamp()))}"
    )
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:12])
    data = f"{body}.{sig}"
    assert len(data.encode()) <= 64, data  # Telegram's limit; the format is fixed-size
    return data


_DATA = re.compile(r"^lo1([arc])([01])([A-Za-z0-9_-]{22})([0-9a-z]{1,8})\.([A-Za-z0-9_-]{16})$")


def verify(data: str, key: bytes) -> Ticket | None:
    """The ticket a button carries, or None when it is not a labops button signed with ``key``."""
    m = _DATA.match(data or "")
    if not m:
        return None
    body, sig = data.rsplit(".", 1)
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:12])
    if not hmac.compare_digest(sig, expected):
        return None
    return Ticket(
        run_id=UUID(bytes=_unb64(m.group(3))),
        choice=_CODE[m.group(1)],
        security_only=m.group(2) == "1",
        expires=datetime.fromtimestamp(int(m.group(4), 36), UTC),
    )


def keyboard(
    run_id: UUID, security_only: bool, expires: datetime, canaries: bool, key: bytes
) -> dict[str, Any]:
    """The InlineKeyboardMarkup under the plan: Approve / Reject (+ Canaries only)."""
    choices: list[Choice] = ["approve", "reject"]
    if canaries:
        choices.append("canaries")
    row = [
        {
            "text": LABELS[c],
            "callback_data": sign(
                Ticket(run_id=run_id, choice=c, security_only=security_only, expires=expires), key
            ),
        }
        for c in choices
    ]
    return {"inline_keyboard": [row[:2], row[2:]] if canaries else [row]}


NAME_MAX = 64  # Telegram's own limit for a first name; a username is at most 32


def who(user: dict[str, Any]) -> str:
    """The presser as the report and the chat name them: ``@name (id)``. The name comes from
    Telegram's update (chosen by the presser): one line, at most :data:`NAME_MAX` characters,
    and the id an integer."""
    name = user.get("username")
    label = f"@{name}" if name else str(user.get("first_name") or "someone")
    label = " ".join("".join(c if c.isprintable() else " " for c in label).split())
    if len(label) > NAME_MAX:
        label = label[: NAME_MAX - 1] + "…"
    ident = user.get("id")
    return f"{label or 'someone'} ({ident if isinstance(ident, int) else '?'})"


def run_input(ticket: Ticket, user: dict[str, Any]) -> dict[str, Any]:
    """The Resume form's answer for this choice (security_only as the plan showed it, so an
    approval from the phone never widens a security-only plan)."""
    return {
        "approve": ticket.choice != "reject",
        "security_only": ticket.security_only,
        "canaries_only": ticket.choice == "canaries",
        "exclude_hosts": [],
        "note": f"{VERBS[ticket.choice].lower()} from Telegram by {who(user)}",
    }


def judge(data: str, user: dict[str, Any], allowed: set[int], key: bytes, now: datetime) -> Verdict:
    """One press: refused (not a labops button, not an allowed user), too late (expired), or
    the input to resume the run with. The run's own state is the listener's to ask."""
    ticket = verify(data, key)
    if ticket is None:
        return Verdict(action="refuse", answer="Not a valid labops button: nothing changed.")
    try:
        user_id = int(user.get("id", 0))
    except (TypeError, ValueError):
        user_id = 0
    if user_id not in allowed:
        return Verdict(
            action="refuse",
            answer="You are not allowed to approve patches: nothing changed.",
            ticket=ticket,
        )
    if now >= ticket.expires:
        return Verdict(
            action="too_late",
            answer=f"Too late: the approval expired at {ticket.expires:%H:%M} UTC. "
            "Nothing changed.",
            ticket=ticket,
        )
    return Verdict(
        action="resume",
        answer=f"{VERBS[ticket.choice]}.",
        ticket=ticket,
        run_input=run_input(ticket, user),
    )


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")


def phone_html(summary: str, title: str) -> str:
    """The approval summary (markdown, as the Resume form shows it) as Telegram HTML; every
    text is escaped first, so host names cannot add tags; only our bold and links come back."""
    text = escape(summary)
    text = _BOLD.sub(r"<b>\1</b>", text)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', text)
    return f"\u23f8\ufe0f <b>{escape(title)}</b>\n\n{text}"


def decided_html(original_html: str, line: str) -> str:
    """The approval message after the decision: what it showed, then who decided and when."""
    return f"{original_html}\n\n<b>{escape(line)}</b>"


def decision_line(verdict: Verdict, user: dict[str, Any], at: datetime) -> str:
    assert verdict.ticket is not None
    return f"{VERBS[verdict.ticket.choice]} by {who(user)} at {at:%Y-%m-%d %H:%M} UTC"
