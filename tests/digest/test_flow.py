"""The security digest flow end to end: sandbox Wazuh/Loki/PVE/LLM/Telegram, the real CrowdSec
LAPI, VictoriaMetrics and Mosquitto, on the session Prefect server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from labops.digest.headline import headline
from labops.digest.report import SecurityDigest
from tests.fixtures.crowdsec import CrowdsecLapi


def write_config(
    sandbox: Any,
    tmp: Path,
    *,
    lapi: CrowdsecLapi | None = None,
    vm_url: str | None = None,
    mqtt: Any = None,
    digest: dict[str, Any] | None = None,
    fast: bool = True,
) -> str:
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["lab"]["state_dir"] = str(tmp / "state")
    systems = cfg["systems"]
    if lapi is not None:
        (tmp / "cs-pass").write_text(lapi.machine_password)
        (tmp / "cs-key").write_text(lapi.bouncer_key)
        systems["crowdsec"] = {
            "url": lapi.url,
            "machine_id": lapi.machine_id,
            "machine_password": f"file:{tmp / 'cs-pass'}",
            "bouncer_key": f"file:{tmp / 'cs-key'}",
        }
    if vm_url:
        systems["victoriametrics"] = {"url": vm_url}
    if mqtt is not None:
        systems["mqtt"] = {"host": mqtt.host, "port": mqtt.port, "topic_prefix": mqtt.prefix}
    if fast:
        retry = {"timeout_s": 5, "attempts": 1}
        for section in (
            systems.get("loki"),
            systems.get("crowdsec"),
            systems.get("victoriametrics"),
            systems["wazuh"]["indexer"],
            systems["wazuh"]["api"],
            systems["proxmox"],
        ):
            if section is not None:
                section["retry"] = retry
    policy: dict[str, Any] = {
        "llm_summary": True,
        "source_timeout_s": 20,
        "mqtt_topic": "security/digest",
        "prom_checks": [{"name": "Scrape target down", "query": 'up{digest_flow="1"} == 0'}],
        "suppressions": [{"rule": "550", "reason": "config files change on deploys"}],
    }
    policy.update(digest or {})
    cfg["digest"] = policy
    path = tmp / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def report_of(state: Any) -> SecurityDigest:
    value = state if isinstance(state, SecurityDigest) else state.result(raise_on_failure=False)
    assert isinstance(value, SecurityDigest), value
    return value


def telegram_texts(sandbox: Any, since: int) -> list[str]:
    messages = sandbox.control("telegram", "messages")["messages"][since:]
    return [str(m.get("text", "")) for m in messages]


def test_digest_collects_ranks_delivers_and_remembers(
    sandbox_clean: Any,
    crowdsec: CrowdsecLapi,
    victoriametrics: Any,
    mqtt: Any,
    prefect_server: Any,
    tmp_path: Path,
) -> None:
    import httpx
    from prefect.artifacts import Artifact

    from flows.security_digest import security_digest
    from labops.scope import artifact_key

    httpx.post(
        f"{victoriametrics.url}/api/v1/import/prometheus",
        content=f'up{{instance="ct-grafana:3000",job="grafana",digest_flow="1"}} 0 '
        f"{int(time.time() * 1000)}\n",
        timeout=5,
    ).raise_for_status()
    victoriametrics.wait_for('up{digest_flow="1"}')
    time.sleep(1.5)  # searchable at an explicit time a moment after import
    cfg = write_config(
        sandbox_clean, tmp_path, lapi=crowdsec, vm_url=victoriametrics.url, mqtt=mqtt
    )
    sub = mqtt.subscribe()
    sent_before = len(sandbox_clean.control("telegram", "messages")["messages"])

    state = security_digest(config=cfg, return_state=True)
    first = report_of(state)
    assert state.is_completed(), first.failure_summary()
    sources = {s.name: s.state for s in first.sources}
    assert sources == {
        "wazuh-alerts": "ok",
        "wazuh-agents": "ok",
        "crowdsec": "ok",
        "loki": "ok",
        "metrics": "ok",
        "proxmox": "ok",
        "labops": "ok",
    }
    found = {f.source for f in first.findings}
    assert {"wazuh", "crowdsec", "loki", "metrics"} <= found
    assert all(f.status == "new" for f in first.findings)
    ranks = [f.severity.rank for f in first.findings]
    assert ranks == sorted(ranks, reverse=True)
    # suppressed: the configured rule and what CrowdSec already bans
    reasons = {s.reason for s in first.suppressed}
    assert "known benign: config files change on deploys" in reasons
    assert any("already banned by CrowdSec" in r for r in reasons)
    assert not any(f.rule == "550" for f in first.findings)
    assert "203.0.113.7" in first.new_bans
    # the LLM summary came back with real names, read as text
    assert first.llm.summary and first.llm.model == "sandbox-primary", first.llm
    assert "## Summary (LLM, read as text)" in first.rendered
    assert first.rendered.splitlines()[0].startswith("# Security digest homelab (daily):")

    artifact: Any = Artifact.get(artifact_key("homelab", "security_digest", "summary"))
    assert artifact is not None and "Security digest" in str(artifact.data)
    got = {m.topic: m for m in sub.wait_for(2, timeout=10)}
    topic = f"{mqtt.prefix}/homelab/security/digest"  # under the lab's own topic level
    assert got[topic].json()["findings"] == len(first.findings)
    assert got[f"{topic}/latest"].retain is False  # live delivery; retained on later subscribe
    late = mqtt.subscribe(f"{topic}/latest").wait_for(1, timeout=10)
    assert late[0].retain and late[0].json()["new"] == len(first.findings)
    texts = telegram_texts(sandbox_clean, sent_before)
    assert texts and texts[0].startswith(("\u26a0", "\U0001f6a8")) and "Security digest" in texts[0]
    assert all(len(t) <= 4096 for t in texts)
    # the day reads in 30 seconds: one message, at most 15 finding lines, the rest behind the link
    assert len(texts) == 1 and "table of every finding are in the run" in texts[0]
    assert len(headline(first.findings).lines()) <= 15
    assert first.brief and first.brief.count("\n- ") <= 15 and first.brief != first.rendered

    up = victoriametrics.wait_for('labops_digest_source_up{source="crowdsec"}')
    assert up and up[0]["value"][1] == "1"
    assert victoriametrics.wait_for(
        'labops_flow_last_success_timestamp_seconds{flow="security_digest"}'
    )

    second = report_of(security_digest(config=cfg, return_state=True))
    statuses = {f.key: f.status for f in second.findings}
    common = set(statuses) & {f.key for f in first.findings}
    assert common and all(statuses[k] == "ongoing" for k in common)
    assert second.new_bans == []


def test_failing_and_stalling_sources_are_named(
    sandbox_clean: Any, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.security_digest import security_digest

    sandbox_clean.set_faults("wazuh_indexer", error_rate=1.0)
    sandbox_clean.set_faults("loki", stall_rate=1.0, stall_s=6)
    # the default retry policy (4 tries of 15 s): the source's budget must still cut it short
    cfg = write_config(
        sandbox_clean,
        tmp_path,
        fast=False,
        digest={"llm_summary": False, "source_timeouts": {"loki": 1.5}, "prom_checks": []},
    )
    state = security_digest(config=cfg, return_state=True)
    report = report_of(state)
    assert state.is_failed()
    problems = report.problems
    assert any(
        p.startswith("Wazuh indexer answered with an error")
        and p.endswith("no Wazuh alerts in this digest")
        for p in problems
    ), problems
    assert (
        "Loki did not answer within 1.5 s: no log findings (SSH, sudo, LogQL queries) in "
        "this digest" in problems
    )
    assert {s.name: s.state for s in report.sources}["wazuh-agents"] == "ok"
    assert "## Sources that did not answer" in report.rendered
    assert any(f.entity == "Wazuh indexer" for f in report.failures)
    assert "crowdsec: not configured" in report.skipped


def test_quiet_day_digest_is_sent(
    sandbox_clean: Any, mqtt: Any, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.security_digest import security_digest

    cfg = write_config(
        sandbox_clean,
        tmp_path,
        mqtt=mqtt,
        digest={
            "llm_summary": False,
            "prom_checks": [],
            "proxmox_failed_tasks": False,
            "labops_results": False,
            "wazuh": {"min_level": 16, "agent_statuses": []},
            "log_queries": [{"name": "nothing", "query": '{job="auth"} |= "no-such-line-xyz"'}],
        },
    )
    sub = mqtt.subscribe()
    sent_before = len(sandbox_clean.control("telegram", "messages")["messages"])
    report = report_of(security_digest(config=cfg, period="weekly", return_state=True))
    assert report.findings == [] and report.problems == []
    assert report.period == "weekly"
    assert (report.window_end - report.window_start).days == 7
    assert report.rendered.splitlines()[0] == "# Security digest homelab (weekly): all quiet"
    assert "sent every week" in report.rendered
    texts = telegram_texts(sandbox_clean, sent_before)
    assert len(texts) == 1 and "all quiet" in texts[0]
    messages = sub.wait_for(2, timeout=10)
    assert {m.json()["findings"] for m in messages} == {0}


def test_labops_results_from_the_other_flows_artifacts(prefect_server: Any) -> None:
    import json
    from datetime import UTC, datetime
    from pathlib import Path

    from prefect import flow
    from prefect.artifacts import create_table_artifact

    from tasks.digest_sources import labops_results

    tables = json.loads((Path(__file__).parents[1] / "data/digest/labops_tables.json").read_text())

    from labops.scope import artifact_key

    @flow(name="digest-test-seed-reports")
    def seed() -> None:  # what the backups and certificates flows of lab "homelab" leave behind
        for operation in ("backups", "certificates"):
            key = artifact_key("homelab", operation, "table")
            create_table_artifact(tables[operation], key=key)

    seed()
    collected = labops_results.fn("homelab", 48, datetime.now(UTC))
    titles = {(f.title, f.entity) for f in collected.findings}
    assert ("backups: failed (stale)", "203 paperless") in titles
    assert ("certificates: critical", "nextcloud.lab.internal:443") in titles
    # the latest report is recent, so no "flow has not reported" finding
    assert not any(f.rule and f.rule.endswith(":silent") for f in collected.findings)
    stale = labops_results.fn("homelab", 48, datetime(2030, 1, 1, tzinfo=UTC))
    assert any(f.rule == "backups:silent" for f in stale.findings)


def test_a_10000_character_digest_reaches_telegram_in_parts(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from blocks.factory import telegram_block
    from labops.config import load_config
    from labops.digest.findings import Finding
    from labops.digest.render import load_template, render_markdown
    from labops.markdown import md_text
    from labops.reports import Severity

    now = datetime.now(UTC)
    findings = [
        Finding(
            source="wazuh",
            severity=Severity.WARNING,
            entity=f"ct-{i:03d}",
            title=f"rule {i:03d} <script> & " + "y" * 60,
            count=i + 1,
        )
        for i in range(120)
    ]
    text = render_markdown(
        load_template(None),
        lab="homelab",
        period="daily",
        window_start=now,
        window_end=now,
        findings=findings,
        resolved=[],
        problems=[],
        sources_ok=[],
        new_bans=[],
        suppressed_count=0,
        summary=None,
        summary_note=None,
        max_shown=500,
    )
    assert len(text) > 10_000
    report = SecurityDigest(window_start=now, window_end=now, findings=findings, rendered=text)
    sandbox_clean.control("telegram", "flood", count=1, retry_after=1)  # one 429 first
    before = len(sandbox_clean.control("telegram", "messages")["messages"])
    notifier = telegram_block(load_config(sandbox_clean.config_path)).get_client()
    delivery = notifier.send(report.notification())
    assert delivery.ok, delivery.detail
    parts = telegram_texts(sandbox_clean, before)
    assert len(parts) >= 3 and all(len(p) <= 4096 for p in parts)
    joined = "\n".join(parts)
    # the title as the digest shows it (inert: look-alikes for <, >), its & escaped and parsed back
    assert md_text("rule 000 <script> & ") in joined and "ct-119 | x120" in joined
    assert "<script>" not in joined
    for part in parts[:-1]:
        assert part.splitlines()[-1].endswith(tuple(f"| x{i}" for i in range(1, 121)))


def test_a_host_the_patch_check_cannot_check_stays_unknown_until_checked_again(
    sandbox_clean: Any, prefect_server: Any, tmp_path: Path
) -> None:
    """Real patch checks (sshd of the sandbox fleet) and digests reading their table artifact:
    good check -> digest -> refused host key -> hanging command (timeout) -> digest: the pending
    security updates are unknown since the first failed check, the host is named, nothing is
    "resolved"; then a good check that no longer finds them -> resolved."""
    from flows.patching import patch_check
    from flows.security_digest import security_digest
    from tests.patching.helpers import derived_config
    from tests.patching.helpers import report_of as patch_report

    sb, host = sandbox_clean, "grafana"
    (tmp_path / "patch").mkdir()
    patch_cfg = derived_config(sb, tmp_path / "patch", check_timeout_s=3, refresh=False)
    cfg = yaml.safe_load(sb.config_path.read_text())
    cfg["lab"]["state_dir"] = str(tmp_path / "digest-state")
    cfg["systems"] = {}  # the digest reads only labops' own results (the Prefect API)
    cfg["digest"] = {"llm_summary": False, "proxmox_failed_tasks": False}
    digest_cfg = tmp_path / "digest.yaml"
    digest_cfg.write_text(yaml.safe_dump(cfg))
    security = "patching: 2 security update(s) pending"

    def check() -> Any:
        return patch_report(patch_check(config=patch_cfg, hosts=[host], return_state=True))

    def digest() -> SecurityDigest:
        return report_of(security_digest(config=str(digest_cfg), return_state=True))

    def about_host(findings: list[Any]) -> dict[str, Any]:
        return {f.title: f for f in findings if f.entity == host}

    pending = [{"name": p, "security": True} for p in ("openssl", "libssl3t64")]
    sb.control("fleet", "set_pending", host=host, packages=pending)
    try:
        assert next(h for h in check().hosts if h.host == host).security == 2
        assert about_host(digest().findings)[security].status == "new"

        sb.set_faults("fleet", extra={"changed_host_keys": [host]})
        refused = next(h for h in check().hosts if h.host == host)
        assert refused.state == "host-key-rejected"
        sb.reset_faults()
        sb.set_faults("fleet", extra={"hanging_commands": {host: "apt list"}})
        hung = next(h for h in check().hosts if h.host == host)
        assert hung.state == "timeout"
        sb.reset_faults()

        report = digest()
        assert security not in {f.title for f in report.resolved if f.entity == host}
        found = about_host(report.findings)
        assert found[security].status == "unknown", found
        assert hung.unknown_since == refused.last_checked  # the patch flow's memory
        first_failure = refused.last_checked.replace(microsecond=0)  # the table says seconds
        unknown = found[security].unknown
        assert unknown is not None and unknown.since == first_failure
        cannot = found["patching: could not check (timeout)"]
        assert cannot.unknown is not None and cannot.unknown.since == first_failure
        line = next(x for x in report.rendered.splitlines() if security in x)
        assert "UNKNOWN" in line and f"| {host} |" in line and "could not check since" in line

        sb.control("fleet", "set_pending", host=host, packages=[])
        assert next(h for h in check().hosts if h.host == host).state == "up-to-date"
        report = digest()
        assert not about_host(report.findings)
        assert {f.title for f in report.resolved if f.entity == host} == {
            security,
            "patching: could not check (timeout)",
        }
    finally:
        sb.control("fleet", "reset", hosts=[host], keep_faults=True)
