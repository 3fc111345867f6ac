"""The digest's pure core from fixture files: source readers, de-dup, suppression, ranking,
comparison with the previous digest, rendering, redaction and message splitting. No Prefect."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labops.config.policies.digest import DigestPolicy, LogQuery, PromCheck, Suppression
from labops.digest.compare import PreviousDigest, compare, new_bans
from labops.digest.findings import Finding, dedupe, rank, suppress
from labops.digest.redaction import Redactor, llm_payload, redactor_for
from labops.digest.render import as_text, load_template, render_markdown
from labops.digest.report import SecurityDigest, SourceStatus
from labops.digest.sources import (
    active_bans,
    crowdsec_findings,
    loki_findings,
    parse_time,
    prom_findings,
    pve_task_findings,
    wazuh_agent_findings,
    wazuh_alert_findings,
)
from labops.errors import ConfigError
from labops.notify.format import TELEGRAM_LIMIT, render_html, split_message
from labops.outcome import CouldNotCheck
from labops.reports import Severity

DATA = Path(__file__).parents[1] / "data" / "digest"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def f(title: str, entity: str, sev: Severity = Severity.WARNING, **kw: Any) -> Finding:
    return Finding(source=kw.pop("source", "wazuh"), severity=sev, title=title, entity=entity, **kw)


def render(findings: list[Finding], **kw: Any) -> str:
    args: dict[str, Any] = dict(
        lab="homelab",
        period="daily",
        window_start=T0 - timedelta(days=1),
        window_end=T0,
        findings=findings,
        resolved=[],
        problems=[],
        sources_ok=["Wazuh indexer"],
        new_bans=[],
        suppressed_count=0,
        summary=None,
        summary_note=None,
        max_shown=50,
    )
    args.update(kw)
    return render_markdown(load_template(None), **args)


# -- source readers ----------------------------------------------------------------------------


def test_time_formats_of_every_source() -> None:
    assert parse_time("2026-11-27T07:12:19.905+0000") == datetime(
        2026, 11, 27, 7, 12, 19, 905000, tzinfo=UTC
    )
    assert parse_time("2026-11-27 08:35:19 +0000 UTC") == datetime(
        2026, 11, 27, 8, 35, 19, tzinfo=UTC
    )  # CrowdSec 1.4's Go time.String()
    assert parse_time("1764227539000000000") == datetime.fromtimestamp(1764227539, UTC)
    assert parse_time(1764227539) == datetime.fromtimestamp(1764227539, UTC)
    assert parse_time("garbage") is None


def test_wazuh_alerts_are_aggregated_by_rule_and_agent() -> None:
    hits = load("wazuh_search.json")["hits"]["hits"]
    found = {(x.rule, x.entity): x for x in wazuh_alert_findings(hits, critical_level=12)}
    assert set(found) == {("5712", "pve1"), ("100210", "nextcloud"), ("550", "traefik")}
    brute = found[("5712", "pve1")]
    assert brute.count == 2 and brute.severity == Severity.WARNING
    assert brute.ip == "203.0.113.7" and brute.users == ["admin", "oracle"]
    assert brute.first_seen == datetime(2026, 11, 27, 6, 2, 0, 120000, tzinfo=UTC)
    assert brute.last_seen == datetime(2026, 11, 27, 7, 12, 19, 905000, tzinfo=UTC)
    assert found[("100210", "nextcloud")].severity == Severity.CRITICAL


def test_wazuh_agents_skip_the_manager() -> None:
    items = load("wazuh_agents.json")["data"]["affected_items"]
    found = wazuh_agent_findings(items)
    assert [(x.entity, x.title, x.severity) for x in found] == [
        ("jellyfin", "Wazuh agent disconnected", Severity.WARNING),
        ("test_wazuh_quick", "Wazuh agent never connected", Severity.INFO),
    ]


def test_crowdsec_bans_repeat_offenders_and_null_decisions() -> None:
    banned = active_bans(load("crowdsec_decisions.json"))
    assert banned == ["198.51.100.200", "203.0.113.7"]  # the captcha is not a ban
    assert active_bans(None) == []  # GET /v1/decisions answers `null` when empty
    found = crowdsec_findings(load("crowdsec_alerts.json"), banned, repeat_alerts=2)
    by = {(x.rule, x.entity): x for x in found}
    assert by[("crowdsecurity/ssh-bf", "203.0.113.7")].severity == Severity.INFO
    crawl = by[("crowdsecurity/http-crawl-non_statics", "192.0.2.99")]
    assert crawl.severity == Severity.WARNING and crawl.count == 40
    assert "EXAMPLE-AS-3, US" in crawl.title and "not banned" in crawl.title
    assert crawl.first_seen == datetime(2026, 11, 27, 8, 15, 1, tzinfo=UTC)
    repeat = by[("repeat-offender", "203.0.113.7")]
    assert repeat.count == 2 and "ssh-bf" in repeat.title and "ssh-slow-bf" in repeat.title
    assert ("repeat-offender", "192.0.2.99") not in by


def test_new_bans_since_the_previous_digest() -> None:
    prev = PreviousDigest(window_end=T0, banned_ips=["203.0.113.7"])
    assert new_bans(["198.51.100.200", "203.0.113.7"], prev) == ["198.51.100.200"]
    assert new_bans(["203.0.113.7"], None) == ["203.0.113.7"]


def test_loki_groups_by_host_and_source_ip() -> None:
    query = LogQuery(name="SSH authentication failures", query='{job="auth"}', min_count=1)
    found = {(x.entity, x.ip): x for x in loki_findings(query, load("loki_auth.json"))}
    assert found[("pve1", "203.0.113.7")].count == 2
    assert found[("pve1", "203.0.113.7")].users == ["oracle", "root"]
    assert found[("nextcloud", None)].users == ["alice", "root"]
    strict = LogQuery(name="x", query='{job="auth"}', min_count=2)
    assert [(x.entity, x.count) for x in loki_findings(strict, load("loki_auth.json"))] == [
        ("pve1", 2)
    ]


def test_loki_refuses_a_metric_answer() -> None:
    query = LogQuery(name="rate", query='rate({job="auth"}[5m])')
    with pytest.raises(ValueError, match="not streams"):
        loki_findings(query, {"data": {"resultType": "matrix", "result": []}})


def test_promql_checks() -> None:
    check = PromCheck(name="Scrape target down", query="up == 0")
    found = prom_findings(check, load("vm_up.json"))
    assert [x.entity for x in found] == [
        "192.168.1.111:9100 node",
        "grafana.lab.internal:3000 grafana",
    ]
    absent = PromCheck(name="Backups heartbeat missing", query="absent(x)", condition="no_series")
    assert prom_findings(absent, load("vm_up.json")) == []
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert [x.title for x in prom_findings(absent, empty)] == ["Backups heartbeat missing"]
    assert prom_findings(check, empty) == []


def test_failed_proxmox_tasks_in_the_window_only() -> None:
    since = datetime.fromtimestamp(1764200000, UTC)
    found = pve_task_findings(load("pve_cluster_tasks.json"), since)
    assert [(x.entity, x.title) for x in found] == [
        ("guest 203 on pve2", "Proxmox task vzdump failed")
    ]
    assert found[0].evidence[0].endswith("job errors")


# -- de-dup, suppression, ranking --------------------------------------------------------------


def test_dedupe_merges_one_key() -> None:
    a = f(
        "brute force",
        "pve1",
        count=2,
        first_seen=T0 - timedelta(hours=3),
        last_seen=T0 - timedelta(hours=2),
        evidence=["l1"],
        rule="5712",
    )
    b = f(
        "brute force",
        "pve1",
        Severity.CRITICAL,
        count=3,
        first_seen=T0 - timedelta(hours=5),
        last_seen=T0 - timedelta(hours=1),
        evidence=["l1", "l2"],
        rule="5712",
    )
    c = f("brute force", "pve2", rule="5712")
    merged = dedupe([a, b, c])
    assert len(merged) == 2
    m = merged[0]
    assert (m.count, m.severity, m.evidence) == (5, Severity.CRITICAL, ["l1", "l2"])
    assert m.first_seen == T0 - timedelta(hours=5) and m.last_seen == T0 - timedelta(hours=1)


def test_rank_worst_first_then_new_then_count() -> None:
    items = [
        f("info", "a", Severity.INFO, count=100),
        f("warn old", "b", status="ongoing", count=50),
        f("warn new small", "c", count=1),
        f("warn new big", "d", count=9),
        f("crit", "e", Severity.CRITICAL),
    ]
    assert [x.title for x in rank(items)] == [
        "crit",
        "warn new big",
        "warn new small",
        "warn old",
        "info",
    ]


def test_suppression_by_rule_and_by_banned_ip() -> None:
    items = [
        f("rootcheck noise", "pve1", rule="510"),
        f("brute force", "pve1", rule="5712", ip="203.0.113.7"),
        f("ssh failures", "pve2", source="loki", ip="192.0.2.45"),
        f("ssh-bf", "203.0.113.7", source="crowdsec", ip="203.0.113.7"),
    ]
    rules = [Suppression(rule="510", reason="rootcheck false positive on PVE")]
    kept, hidden = suppress(items, rules, banned_ips=["203.0.113.7"])
    assert [x.title for x in kept] == ["ssh failures", "ssh-bf"]
    assert [h.reason for h in hidden] == [
        "known benign: rootcheck false positive on PVE",
        "203.0.113.7 already banned by CrowdSec",
    ]


def test_a_suppression_must_say_what_it_matches() -> None:
    with pytest.raises(ValueError, match="at least one of"):
        Suppression(reason="everything")
    assert DigestPolicy.model_validate({"suppressions": [{"ip": "1.2.3.4", "reason": "ok"}]})


# -- new / ongoing / resolved ------------------------------------------------------------------


def test_compare_with_the_previous_digest() -> None:
    prev = PreviousDigest(
        window_end=T0 - timedelta(days=1),
        findings=[
            f("brute force", "pve1", rule="5712"),
            f("target down", "grafana", source="metrics"),
            f("agent disconnected", "jellyfin", rule="agent-disconnected"),
        ],
    )
    now = [f("brute force", "pve1", rule="5712"), f("reverse shell", "nextcloud", rule="100210")]
    down = CouldNotCheck(reason="connection refused", kind="unreachable", since=T0)
    changes = compare(now, prev, now=T0, unknown_sources={"metrics": down})
    assert {x.entity: x.status for x in changes.findings} == {"pve1": "ongoing", "nextcloud": "new"}
    assert [x.entity for x in changes.resolved] == ["jellyfin"]
    assert [x.entity for x in changes.unknown] == ["grafana"]  # its source failed: unknown
    assert changes.unknown[0].status == "unknown" and changes.unknown[0].unknown == down
    assert all(x.status == "new" for x in compare(now, None, now=T0).findings)


# -- rendering ---------------------------------------------------------------------------------


def test_quiet_day_digest_still_says_something() -> None:
    text = render([])
    assert "all quiet" in text.splitlines()[0]
    assert "## All quiet" in text and "silence means the digest broke" in text
    report = SecurityDigest(window_start=T0 - timedelta(days=1), window_end=T0, rendered=text)
    note = report.notification()
    assert note.title == "Security digest (daily): all quiet"
    assert note.severity == Severity.OK and note.body == text
    assert note.payload["findings"] == 0


def test_failed_source_is_named_in_the_digest() -> None:
    status = SourceStatus(
        name="wazuh-alerts",
        label="Wazuh indexer",
        covers="Wazuh alerts",
        state="failed",
        detail="unreachable (connection refused)",
    )
    text = render([], problems=[status.problem()])
    assert (
        "- Wazuh indexer unreachable (connection refused): no Wazuh alerts in this digest" in text
    )
    assert "1 source(s) failed" in text.splitlines()[0]


def test_digest_lists_ranked_findings_grouped_by_source() -> None:
    items = rank(
        [
            f("brute force", "pve1", count=12, last_seen=T0),
            f("reverse shell", "nextcloud", Severity.CRITICAL),
            f("ssh-bf: banned", "203.0.113.7", Severity.INFO, source="crowdsec", status="ongoing"),
        ]
    )
    text = render(
        items,
        new_bans=["198.51.100.200"],
        resolved=[f("agent disconnected", "jellyfin")],
        suppressed_count=3,
    )
    assert text == render(
        items,
        new_bans=["198.51.100.200"],
        resolved=[f("agent disconnected", "jellyfin")],
        suppressed_count=3,
    )
    lines = text.splitlines()
    assert "## Findings: 1 critical, 1 warning, 1 info (2 new)" in lines
    wazuh = lines.index("### Wazuh")
    assert lines[wazuh + 1].startswith("- [CRITICAL] NEW reverse shell | nextcloud")
    assert lines[wazuh + 2] == "- [WARNING] NEW brute force | pve1 | x12 | last 11-27 09:00"
    assert "- [INFO] ssh-bf: banned | 203.0.113.7 | x1" in lines
    assert "198.51.100.200" in text and "- agent disconnected | jellyfin" in lines
    assert "3 finding(s) suppressed" in text


def test_custom_template_and_a_broken_one(tmp_path: Path) -> None:
    custom = tmp_path / "digest.md.j2"
    custom.write_text("{{ lab }}: {{ findings | length }} finding(s)\n")
    text = render_markdown(
        load_template(custom),
        lab="homelab",
        period="daily",
        window_start=T0,
        window_end=T0,
        findings=[f("x", "y")],
        resolved=[],
        problems=[],
        sources_ok=[],
        new_bans=[],
        suppressed_count=0,
        summary=None,
        summary_note=None,
        max_shown=5,
    )
    assert text == "homelab: 1 finding(s)\n"
    custom.write_text("{{ no_such_name }}")
    with pytest.raises(ConfigError, match=r"digest\.template"):
        render_markdown(
            load_template(custom),
            lab="h",
            period="daily",
            window_start=T0,
            window_end=T0,
            findings=[],
            resolved=[],
            problems=[],
            sources_ok=[],
            new_bans=[],
            suppressed_count=0,
            summary=None,
            summary_note=None,
            max_shown=5,
        )
    custom.write_text("{{ ''.__class__.__mro__ }}")  # the sandbox refuses Python internals
    with pytest.raises(ConfigError):
        render_markdown(
            load_template(custom),
            lab="h",
            period="daily",
            window_start=T0,
            window_end=T0,
            findings=[],
            resolved=[],
            problems=[],
            sources_ok=[],
            new_bans=[],
            suppressed_count=0,
            summary=None,
            summary_note=None,
            max_shown=5,
        )
    with pytest.raises(ConfigError, match="cannot read"):
        load_template(tmp_path / "missing.j2")


def test_model_answer_is_inert_text() -> None:
    text = as_text("Ban IP_1 now! ![x](http://evil/) <script>alert(1)</script> `rm -rf /`")
    assert "](" not in text and "<script>" not in text and "`" not in text
    assert text.startswith("> Ban IP_1 now!")


def test_a_10000_character_digest_is_split_on_line_boundaries() -> None:
    items = [f(f"rule {i:03d} <&> " + "x" * 60, f"host-{i:03d}", count=i + 1) for i in range(120)]
    text = render(items, max_shown=200)
    assert len(text) > 10_000
    report = SecurityDigest(window_start=T0, window_end=T0, findings=items, rendered=text)
    html = render_html(report.notification())
    parts = split_message(html, TELEGRAM_LIMIT)
    assert len(parts) >= 3 and all(len(p) <= TELEGRAM_LIMIT for p in parts)
    # every part ends on a whole line and together they are the whole message
    assert "\n".join(parts) == html
    for part in parts:
        assert re.search(r"x{60}$|host-\d{3} \| x\d+$", part.splitlines()[-1]) or part == parts[-1]


# -- redaction ---------------------------------------------------------------------------------


def test_redaction_replaces_identifiers_with_stable_placeholders() -> None:
    r = Redactor(hosts=["pve1", "nextcloud"], users=["alice"])
    line = (
        "Nov 27 pve1 sshd[811]: Failed password for invalid user oracle from 203.0.113.7 "
        "port 40112 ssh2; mail alice@example.com; sudo: alice : 3 incorrect password "
        "attempts ; USER=root ; host grafana.lab.internal 2001:db8::7 at 07:12:19 "
        "/var/log/auth.log nextcloud 203.0.113.7"
    )
    out = r.redact(line)
    for raw in (
        "pve1",
        "oracle",
        "203.0.113.7",
        "alice",
        "root",
        "grafana.lab.internal",
        "2001:db8::7",
        "nextcloud",
    ):
        assert raw not in out, raw
    assert "07:12:19" in out and "auth.log" in out and "sshd[811]" in out
    assert out.count(r.redact("203.0.113.7")) == 2  # stable: one value, one placeholder
    assert r.restore(out) == line


def test_only_allow_listed_fields_leave() -> None:
    finding = f(
        "brute force from 203.0.113.7",
        "pve1",
        ip="203.0.113.7",
        users=["oracle"],
        evidence=["Failed password for invalid user oracle from 203.0.113.7"] * 4,
        first_seen=T0,
        rule="5712",
    )
    r = redactor_for([finding])
    payload = llm_payload([finding], r)
    assert set(payload[0]) == {
        "severity",
        "status",
        "source",
        "title",
        "entity",
        "rule",
        "count",
        "evidence",
    }
    dumped = json.dumps(payload)
    assert "203.0.113.7" not in dumped and "pve1" not in dumped and "oracle" not in dumped
    assert len(payload[0]["evidence"]) == 2
    assert payload[0]["entity"] == "HOST_1"


def test_labops_flow_tables() -> None:
    """Rows are read by their check columns: ok, found, unknown (why, since), not checked; a row
    without them (an older labops) is unknown, never fine."""
    from labops.digest.sources import labops_row_findings

    tables = load("labops_tables.json")
    said = {flow: labops_row_findings(flow, rows, T0) for flow, rows in tables.items()}
    got = sorted((x.title, x.entity, x.severity.value) for c in said.values() for x in c.findings)
    assert got == [
        ("backups: could not check (error)", "206 wiki", "warning"),
        ("backups: failed (stale)", "203 paperless", "critical"),
        ("backups: not-backed-up", "205 mealie", "warning"),
        ("certificates: could not check (unreachable)", "offline.lab.internal:443", "warning"),
        ("certificates: critical", "nextcloud.lab.internal:443", "critical"),
        ("patching: 3 security update(s) pending", "pve1", "warning"),
        ("patching: could not check (error)", "oldformat", "warning"),
        ("patching: could not check (unreachable)", "immich", "warning"),
    ]
    assert sorted(said["patching"].checked) == ["patching|pve1", "patching|pve2"]
    immich = said["patching"].unknown["patching|immich"]
    assert immich.since == datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    assert immich.describe() == (
        "could not check (unreachable: connection refused) since 2026-11-27 06:00 UTC"
    )
    assert said["patching"].unknown["patching|oldformat"].since == T0
    assert said["backups"].unknown["backups|900 template"].kind == "skipped"
    assert "backups|900 template" not in said["backups"].checked


def test_a_host_one_line_gives_away_is_hidden_in_every_line() -> None:
    """A name learnt from a syslog line of a later finding ("backup01 cron[12]:") is hidden
    where an earlier finding mentions it alone; nothing known is left for the leak check."""
    alone = f("disk full", "pve1", evidence=["rsync to backup01 ran out of space"], first_seen=T0)
    syslog = f(
        "cron errors",
        "pve1",
        evidence=["Dec  5 10:01:20 backup01 cron[12]: (root) ERROR"],
        first_seen=T0,
    )
    r = redactor_for([alone, syslog])
    dumped = json.dumps(llm_payload([alone, syslog], r))
    assert "backup01" not in dumped
    assert r.leaked(dumped) == []
    host = next(k for k, v in r.mapping.items() if v == "backup01")
    assert dumped.count(host) == 2  # one value, one placeholder, in both findings
