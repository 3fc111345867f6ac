"""Telegram HTML rendering and splitting (pure)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from labops.notify.format import escape, render_html, split_message
from labops.reports import Notification, Severity


def test_escape_only_the_three_characters() -> None:
    assert escape('a < b > c & "d"') == 'a &lt; b &gt; c &amp; "d"'


def test_render_escapes_title_body_and_link() -> None:
    note = Notification(
        title="Certs <expiring> & more",
        severity=Severity.WARNING,
        body="pve1: 3 days\n<script>",
        link='http://ui/runs?a=1&b="2"',
    )
    html = render_html(note)
    assert "<b>Certs &lt;expiring&gt; &amp; more</b>" in html
    assert "&lt;script&gt;" in html
    assert '<a href="http://ui/runs?a=1&amp;b=&quot;2&quot;">' in html
    assert html.startswith("\u26a0")


def test_short_text_is_one_part() -> None:
    assert split_message("hello\nworld") == ["hello\nworld"]


def test_long_text_splits_on_line_boundaries_in_order() -> None:
    lines = [f"line {i:05d} " + "x" * 40 for i in range(200)]  # 10,199 characters
    text = "\n".join(lines)
    parts = split_message(text, 4096)
    assert len(parts) == 3
    assert all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text  # nothing lost, nothing reordered, cut only at newlines


def test_open_tags_are_closed_and_reopened_across_parts() -> None:
    text = "<b>head</b>\n<pre>" + "\n".join(f"row {i:03d}" for i in range(40)) + "</pre>\ntail"
    parts = split_message(text, 120)
    assert len(parts) > 2
    for part in parts:
        assert len(part) <= 120
        assert part.count("<pre>") == part.count("</pre>")
    assert parts[1].startswith("<pre>")


def test_long_line_is_cut_outside_entities_and_tags() -> None:
    text = ("a &amp; <i>b</i> " * 400).strip()
    parts = split_message(text, 500)
    for part in parts:
        assert len(part) <= 500
        assert not re.search(r"&[a-z]*$", part)  # no entity cut in half
        assert part.count("<i>") == part.count("</i>")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab <>&\u00e9\U0001f600", max_size=300), max_size=60))
def test_escaped_text_survives_splitting(lines: list[str]) -> None:
    text = "\n".join(escape(line) for line in lines)
    parts = split_message(text, 256)
    assert all(len(p) <= 256 for p in parts)
    joined = "".join(parts).replace("\n", "")
    assert joined == text.replace("\n", "")
