"""Markdown for report artifacts: text from outside the lab made inert.

Alert titles, scenario names, hostnames, failure reasons and doc lines come from systems an
attacker may write to. Placed in a markdown artifact as they are, they could add links, images,
HTML, table cells or whole lines to a report the operator trusts. Every report puts such text
through :func:`md_text`; code goes through :func:`md_code` and :func:`md_block`.

Characters are swapped for look-alikes (and autolinks broken with an invisible word joiner)
rather than backslash-escaped, so that the same text reads cleanly in the artifact and in a
plain-text message (the security digest is both).
"""

from __future__ import annotations

import re
import unicodedata

MAX_CHARS = 1000
"""Longest text kept of one value (the rest is cut with an ellipsis)."""

WORD_JOINER = "\u2060"

_LOOK_ALIKES = str.maketrans(
    {
        "[": "\uff3b",  # fullwidth brackets: no link or image text
        "]": "\uff3d",
        "<": "\u2039",  # single angle quotes: no HTML, no <autolink>
        ">": "\u203a",
        "`": "\u02cb",  # modifier grave: no code span
        "|": "\u00a6",  # broken bar: no table cell
        "\\": "\u29f5",  # reverse solidus operator: nothing escaped
    }
)
# GFM turns bare URLs, www. names and e-mail addresses into links; a word joiner breaks each.
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9]:)(?=//)|(?<=www)(?=\.)|(?<=@)(?=[\w-]+\.)")
_LINE_START = re.compile(r"^(\s*)(?=(?:#{1,6}|[+*-]|\d{1,9}[.)])(?:\s|$))")


class Inert(str):
    """Text that is already safe markdown (its producer made it so): passed through as is."""


def md_text(value: object, max_chars: int = MAX_CHARS) -> str:
    """``value`` as inline markdown that shows as the text it is: one line, no link, image,
    HTML, code span or table cell of its own. Safe in a list item, a heading and a table cell."""
    if isinstance(value, Inert):
        return str(value)
    text = " ".join(_printable(str(value)).split())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    text = text.translate(_LOOK_ALIKES)
    text = _AUTOLINK.sub(WORD_JOINER, text)
    # A value opening a line could start a heading, a list or a block quote.
    return _LINE_START.sub(lambda m: m.group(1) + WORD_JOINER, text, count=1)


CELL_CHARS = 60
"""Widest text kept in a table cell: the UI cuts a wider column off at its edge. A longer value
is shortened in the cell with a mark (``[1]``) and written out in full below the table."""


def md_table(
    headers: list[str], rows: list[list[object]], cell_chars: int = CELL_CHARS
) -> list[str]:
    """A markdown table, every cell made inert (:func:`md_text`) and at most ``cell_chars``
    wide; the full text of each shortened cell follows the table as a numbered note."""
    notes: list[str] = []

    def cell(value: object) -> str:
        text = md_text(value)
        if isinstance(value, Inert) or len(text) <= cell_chars:
            return text
        notes.append(text)
        mark = f" \u2026 ({len(notes)})"
        return text[: cell_chars - len(mark)].rstrip() + mark

    lines = ["| " + " | ".join(md_text(h) for h in headers) + " |"]
    lines.append("|" + "---|" * len(headers))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if notes:
        lines.append("")
        lines += [f"- ({k}) {text}" for k, text in enumerate(notes, 1)]
    return lines


def md_code(value: object) -> str:
    """``value`` as an inline code span (a path, a commit), on one line, whatever its backticks."""
    text = " ".join(_printable(str(value)).split()).replace("|", "\u00a6")
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_block(text: str, lang: str = "") -> str:
    """``text`` as a fenced code block whose fence no line of it can close."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}{md_text(lang) if lang else ''}\n{text.rstrip()}\n{fence}"


def _printable(text: str) -> str:
    """Control characters and line or paragraph separators as spaces."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)
