"""Fuzz what leaves labops as a message: the Telegram renderer and splitter, and what labops
makes of an LLM's answer (the digest summary, the doc-claim proposals, placeholders restored).

Promises under test: nothing raises; every Telegram part fits the limit, parses on its own
(tags balanced, no entity or tag cut) and the parts together carry the whole text; a model's
answer becomes bounded, inert markdown (no link, image, HTML or code) and proposals stay within
their lines and sizes, whatever the model says.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from labops.digest.redaction import Redactor
from labops.digest.render import as_text
from labops.docs.llm_claims import MAX_LINES, Candidate, parse_proposals
from labops.notify.format import TELEGRAM_LIMIT, render_html, split_message
from labops.reports import Notification, Severity
from tests.fuzz.strategies import FUZZ, json_like, text

pytestmark = pytest.mark.timeout(180)
PARSER = MarkdownIt("commonmark").enable("table")
_TAG = re.compile(r"<(/?)([a-z]+)[^>]*>")

long_text = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs", "Cc")), max_size=6000
)
notification = st.builds(
    Notification,
    title=text,
    severity=st.sampled_from(list(Severity)),
    body=st.one_of(long_text, st.lists(text, max_size=200).map("\n".join)),
    link=st.one_of(st.none(), st.just("http://127.0.0.1:4200/runs/flow-run/1"), text),
)


def visible(part: str) -> str:
    """What Telegram shows of one HTML part: tags dropped, entities decoded."""
    return html.unescape(_TAG.sub("", part))


def balanced(part: str) -> bool:
    stack: list[str] = []
    for closing, name in _TAG.findall(part):
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


@FUZZ
@given(notification, st.sampled_from([TELEGRAM_LIMIT, 1024]))
def test_telegram_parts_fit_parse_and_keep_every_character(note: Notification, limit: int) -> None:
    rendered = render_html(note)
    parts = split_message(rendered, limit)
    assert parts and all(len(p) <= limit for p in parts)
    assert all(balanced(p) for p in parts), parts
    assert all(not re.search(r"&[#\w]*$", p) and not re.search(r"<[^>]*$", p) for p in parts)
    # Splitting adds line breaks and repeats open tags; it never loses or reorders a character.
    shown = "".join(visible(p) for p in parts)
    assert shown.replace("\n", "") == visible(rendered).replace("\n", "")


answer = st.one_of(
    long_text,
    st.lists(
        st.sampled_from(
            [
                "Ban [HOST_1](https://evil.example) now",
                "![x](http://evil/x.png) <script>alert(1)</script>",
                "```\nrm -rf /\n```",
                "# Heading\n- item\n| a | b |",
                "IP_1 and USER_2 on HOST_3 www.evil.example mail@evil.example",
                "> quoted <b>bold</b> `code`",
            ]
        ),
        max_size=30,
    ).map("\n".join),
)


@FUZZ
@given(answer)
def test_an_llm_summary_is_bounded_inert_text(raw: str) -> None:
    redactor = Redactor()
    redactor.redact("203.0.113.7 logged in as alice on pve1.lab.internal")
    summary = as_text(redactor.restore(raw))
    assert len(summary) <= 3000 + 3 * summary.count("\n") + 3 + summary.count("\u2060")
    tokens = PARSER.parse(summary)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert kinds <= {
        "blockquote_open",
        "blockquote_close",
        "paragraph_open",
        "paragraph_close",
        "inline",
        "text",
        "softbreak",
        "em_open",
        "em_close",
        "strong_open",
        "strong_close",
    }, summary
    shown = "".join(c.content for t in tokens for c in t.children or [] if c.type == "text")
    assert not re.search(r"(?i)https?://|www\.|@[\w-]+\.", shown)


proposals = st.one_of(
    long_text,
    json_like.map(json.dumps),
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.sampled_from(["L0", "L3", "L9"]), text),
                "claim": st.one_of(text, json_like),
            }
        ),
        max_size=MAX_LINES + 10,
    ).map(lambda items: "```json\n" + json.dumps(items) + "\n```"),
)


@FUZZ
@given(proposals)
def test_doc_claim_proposals_stay_within_their_lines(raw: str) -> None:
    lines = [
        Candidate(id=f"L{i}", file="hosts.md", line=i + 10, text=f"line {i} about HOST_1")
        for i in range(5)
    ]
    redactor = Redactor()
    redactor.redact("pve1.lab.internal")
    claims = parse_proposals(raw, lines, redactor)
    assert len(claims) <= MAX_LINES
    for claim in claims:
        assert claim.source == "llm" and claim.file == "hosts.md"
        assert claim.line in {c.line for c in lines}
        assert len(claim.subject) <= 200
