"""Notification text for Telegram: HTML escaping and splitting at Telegram's 4096-character limit.

Telegram's HTML mode needs only ``<``, ``>`` and ``&`` escaped. A message longer than the limit is
split on line boundaries (a single over-long line at a space, never inside a tag or an entity);
tags still open at a split are closed at the end of one part and reopened at the start of the next,
so every part parses on its own.
"""

from __future__ import annotations

import re

from labops.reports import Notification, Severity

TELEGRAM_LIMIT = 4096

_SEVERITY_MARK = {
    Severity.OK: "\u2705",  # check mark
    Severity.INFO: "\u2139\ufe0f",  # information
    Severity.WARNING: "\u26a0\ufe0f",  # warning sign
    Severity.CRITICAL: "\U0001f6a8",  # rotating light
}

_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)[^>]*>")
_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|\s+|[^<&\s]+|[<&]")


def escape(text: str) -> str:
    """Escape text for Telegram's HTML parse mode."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return escape(text).replace('"', "&quot;")


def render_html(notification: Notification) -> str:
    """The notification as Telegram HTML: bold title with a severity mark, body, link."""
    mark = _SEVERITY_MARK.get(notification.severity, "")
    lines = [f"{mark} <b>{escape(notification.title)}</b>".strip()]
    if notification.body:
        lines += ["", escape(notification.body.rstrip())]
    if notification.link:
        lines += ["", f'<a href="{_escape_attr(notification.link)}">Open the run</a>']
    return "\n".join(lines)


def _apply_tags(stack: list[tuple[str, str]], text: str) -> list[tuple[str, str]]:
    """The open-tag stack after ``text`` (name, full opening tag)."""
    out = list(stack)
    for match in _TAG.finditer(text):
        closing, name = match.group(1), match.group(2).lower()
        if not closing:
            out.append((name, match.group(0)))
            continue
        for i in range(len(out) - 1, -1, -1):
            if out[i][0] == name:
                del out[i]
                break
    return out


def _closing(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def _pieces(line: str, size: int) -> list[str]:
    """An over-long line in pieces of at most ``size`` characters, cut between tokens
    (preferably at spaces), never inside a tag or an entity."""
    tokens: list[str] = []
    for tok in _TOKEN.findall(line):
        while len(tok) > size:  # a run without spaces longer than a piece
            tokens.append(tok[:size])
            tok = tok[size:]
        tokens.append(tok)
    pieces: list[str] = []
    current = ""
    for tok in tokens:
        if current and len(current) + len(tok) > size:
            pieces.append(current)
            current = ""
        current += tok
    if current:
        pieces.append(current)
    return pieces


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """``text`` in order, in parts of at most ``limit`` characters (tags and entities counted)."""
    if len(text) <= limit:
        return [text]
    piece_size = max(limit // 2, 1)
    units: list[tuple[str, str]] = []  # (separator before it, text)
    for line in text.split("\n"):
        if len(line) <= piece_size:
            units.append(("\n", line))
        else:
            units += [("\n" if i == 0 else "", p) for i, p in enumerate(_pieces(line, piece_size))]

    parts: list[str] = []
    prefix = ""  # tags reopened at the start of the current part
    body = ""
    stack: list[tuple[str, str]] = []
    started = False
    for sep, unit in units:
        after = _apply_tags(stack, unit)
        addition = (sep if started else "") + unit
        if started and len(prefix) + len(body) + len(addition) + len(_closing(after)) > limit:
            parts.append(prefix + body + _closing(stack))
            prefix = "".join(tag for _, tag in stack)
            body, addition = "", unit
        body += addition
        started = True
        stack = after
    parts.append(prefix + body + _closing(stack))
    return [p for p in parts if p.strip()]


# -- plain text for channels with their own length limits (Apprise targets) -----------------


def fit_text(
    body: str, link: str | None, limit: int, *, split: bool = True, marker: str = "\u2026"
) -> list[str]:
    """``body`` in parts of at most ``limit`` characters, each ending with ``link``.

    The link is never cut: it is what leads from a short message to the whole report (the
    artifact). ``split`` False keeps the first part only, marked as cut. Lines are kept whole
    where they fit; a longer line is cut at a space when there is one.
    """
    tail = f"\n\n{link}" if link else ""
    room = limit - len(tail)
    if room < 20:  # the link alone fills the channel: the link, then, is the message
        return [(link or body)[: max(limit, 1)]]
    body = body.rstrip()
    if len(body) <= room:
        return [body + tail if body else (link or "")]
    if not split:
        cut = _cut(body, room - len(marker))
        return [cut.rstrip() + marker + tail]
    parts: list[str] = []
    rest = body
    while rest:
        if len(rest) <= room:
            parts.append(rest)
            break
        piece = _cut(rest, room)
        parts.append(piece.rstrip())
        rest = rest[len(piece) :].lstrip("\n")
    return [p + tail for p in parts if p.strip()]


def _cut(text: str, size: int) -> str:
    """The longest head of ``text`` of at most ``size`` characters ending at a line break, else
    at a space, else exactly ``size`` characters."""
    head = text[:size]
    if len(text) <= size:
        return text
    for sep in ("\n", " "):
        at = head.rfind(sep)
        if at > size // 3:
            return head[: at + 1]
    return head
