"""Fuzz the security digest's readers of outside answers, and what it makes of them.

Promises under test: a source reader (Wazuh alerts and agents, CrowdSec alerts and decisions,
Loki streams, VictoriaMetrics series, Proxmox tasks, labops' own table rows) never raises on
any JSON answer (Loki may refuse a non-stream answer with ``ValueError``), its findings are
bounded (no more than the items it read, evidence lines cut); and the rendered digest of any
such findings is inert markdown (no link, image or HTML of the source's).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from labops.config.policies.digest import LogQuery, PromCheck
from labops.digest import sources
from labops.digest.findings import MAX_EVIDENCE, Finding
from labops.digest.render import load_template, render_markdown
from tests.fuzz.strategies import FUZZ, json_like, mutated, text

DATA = Path(__file__).resolve().parents[1] / "data" / "digest"
pytestmark = pytest.mark.timeout(180)
SINCE = datetime(2026, 11, 26, tzinfo=UTC)
PARSER = MarkdownIt("commonmark").enable("table")
FORBIDDEN = {"link_open", "image", "html_inline", "html_block", "code_inline", "hr"}


def seed(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def items_of(name: str, *path: str) -> st.SearchStrategy[Any]:
    """The real answer's items, mutated, or any JSON at all."""
    doc = seed(name)
    for step in path:
        doc = doc[step]
    keys = sorted({k for item in doc if isinstance(item, dict) for k in item})
    return st.one_of(mutated(doc, keys), st.lists(json_like, max_size=8))


def bounded(findings: list[Finding], read: Any, per_item: int = 1) -> None:
    assert isinstance(findings, list)
    assert len(findings) <= per_item * max(1, len(read) if isinstance(read, list) else 1)
    for f in findings:
        assert len(f.evidence) <= MAX_EVIDENCE
        assert all(len(line) <= 300 for line in f.evidence)


@FUZZ
@given(items_of("wazuh_search.json", "hits", "hits"), st.integers(0, 20))
def test_wazuh_alerts(hits: Any, level: int) -> None:
    bounded(sources.wazuh_alert_findings(hits, level), hits)


@FUZZ
@given(items_of("wazuh_agents.json", "data", "affected_items"))
def test_wazuh_agents(agents: Any) -> None:
    bounded(sources.wazuh_agent_findings(agents), agents)


@FUZZ
@given(items_of("crowdsec_alerts.json"), items_of("crowdsec_decisions.json"), st.integers(1, 5))
def test_crowdsec(alerts: Any, decisions: Any, repeat: int) -> None:
    bans = sources.active_bans(decisions)
    assert all(isinstance(b, str) for b in bans)
    bounded(sources.crowdsec_findings(alerts, bans, repeat), alerts, per_item=2)


@FUZZ
@given(
    st.one_of(mutated(seed("loki_auth.json"), ["data", "result", "stream", "values"]), json_like)
)
def test_loki(body: Any) -> None:
    query = LogQuery(name="ssh failures", query='{job="sshd"}', min_count=1)
    try:
        found = sources.loki_findings(query, body)
    except ValueError as exc:
        assert "not streams" in str(exc)
        return
    assert isinstance(found, list)
    for f in found:
        assert len(f.evidence) <= MAX_EVIDENCE and all(len(x) <= 300 for x in f.evidence)


@FUZZ
@given(
    st.one_of(mutated(seed("vm_up.json"), ["data", "result", "metric", "value"]), json_like),
    st.sampled_from(["any_series", "no_series"]),
)
def test_victoriametrics(body: Any, condition: str) -> None:
    check = PromCheck(name="down", query="up == 0", condition=condition)  # type: ignore[arg-type]
    assert isinstance(sources.prom_findings(check, body), list)


@FUZZ
@given(items_of("pve_cluster_tasks.json"))
def test_proxmox_tasks(tasks: Any) -> None:
    bounded(sources.pve_task_findings(tasks, SINCE), tasks)


@FUZZ
@given(st.one_of(mutated(seed("labops_tables.json"), ["status", "state", "security"]), json_like))
def test_labops_rows(tables: Any) -> None:
    rows = tables.get("backups", tables) if isinstance(tables, dict) else tables
    collected = sources.labops_row_findings("backups", rows, SINCE)
    bounded(collected.findings, rows, per_item=2)
    # every row is accounted for once: checked, could not check, or not checked on purpose
    seen = len(collected.checked) + len(collected.unknown)
    assert seen <= max(1, len(rows) if isinstance(rows, list) else 1)


@FUZZ
@example(-62135596801.0)  # before year 1
@example(float("inf"))  # divided by 1000 forever
@example("99999999999999999999999")
@given(st.one_of(json_like, st.from_regex(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d.*", fullmatch=True)))
def test_times(value: Any) -> None:
    parsed = sources.parse_time(value)
    assert parsed is None or parsed.tzinfo is not None


finding = st.builds(
    Finding,
    source=st.sampled_from(["wazuh", "crowdsec", "loki", "metrics", "proxmox", "labops"]),
    severity=st.sampled_from(["critical", "warning", "info"]),
    title=text,
    entity=text,
    count=st.integers(0, 10**6),
    status=st.sampled_from(["new", "ongoing"]),
)


@FUZZ
@given(st.lists(finding, max_size=8), st.lists(text, max_size=3), st.lists(text, max_size=3))
def test_the_rendered_digest_is_inert(
    findings: list[Finding], problems: list[str], bans: list[str]
) -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    rendered = render_markdown(
        load_template(None),
        lab="homelab",
        period="daily",
        window_start=now - timedelta(days=1),
        window_end=now,
        findings=findings,
        resolved=findings[:2],
        problems=problems,
        sources_ok=["Wazuh"],
        new_bans=bans,
        suppressed_count=0,
        summary=None,
        summary_note=None,
        max_shown=50,
    )
    tokens = PARSER.parse(rendered)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert not kinds & FORBIDDEN, rendered
    headings = sum(t.type == "heading_open" for t in tokens)
    groups = len({f.source for f in findings})
    # the template's own: title, one per part shown, one per source: never one of a title's
    assert headings == 1 + bool(problems) + (1 + groups if findings else 1) + bool(bans) + bool(
        findings[:2]
    ), rendered
    # one list item per finding shown, resolved finding and problem: no item of a title's own
    items = sum(t.type == "list_item_open" for t in tokens)
    assert items == len(findings) + len(findings[:2]) + len(problems)
    assert not re.search(
        r"(?i)https?://|www\.",
        "".join(c.content for t in tokens for c in t.children or [] if c.type == "text"),
    )
