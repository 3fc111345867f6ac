"""Each digest collector against its source: the real CrowdSec LAPI and VictoriaMetrics, the
sandbox's Wazuh and Loki. Tasks run as plain functions (``.fn``): the I/O is what is tested."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks.factory import block_for
from blocks.observability import VictoriaMetrics
from blocks.security import CrowdsecLapi
from labops.config import load_config
from labops.config.policies.digest import DigestPolicy, LogQuery, PromCheck
from labops.errors import AuthFailed, Unreachable
from labops.http_settings import VictoriaMetricsSettings
from labops.reports import Severity
from tasks.crowdsec import crowdsec_activity
from tasks.loki import loki_queries
from tasks.victoriametrics import promql_checks
from tasks.wazuh import wazuh_agents, wazuh_alerts
from tests.fixtures.crowdsec import MANUAL_BAN
from tests.fixtures.crowdsec import CrowdsecLapi as Lapi

NOW = datetime.now(UTC)
DAY_AGO = NOW - timedelta(hours=24)


def block(sandbox: Any, system: str) -> Any:
    return block_for(load_config(sandbox.config_path), system)


# -- Wazuh (sandbox) ---------------------------------------------------------------------------


def test_wazuh_alerts_at_or_above_the_level(sandbox: Any) -> None:
    collected = wazuh_alerts.fn(
        block(sandbox, "wazuh_indexer"),
        DAY_AGO,
        NOW + timedelta(minutes=1),
        min_level=10,
        critical_level=12,
        max_alerts=5000,
    )
    assert collected.findings
    assert {f.source for f in collected.findings} == {"wazuh"}
    assert all(int(f.title.rsplit("level ", 1)[1].rstrip(")")) >= 10 for f in collected.findings)
    assert any(f.severity == Severity.CRITICAL for f in collected.findings)  # level 12 rule
    keys = [(f.rule, f.entity) for f in collected.findings]
    assert len(keys) == len(set(keys))  # one finding per rule and agent
    # inside the window asked for (the sandbox keeps raising alerts after NOW)
    until = NOW + timedelta(minutes=1)
    assert all(f.last_seen and DAY_AGO <= f.last_seen <= until for f in collected.findings)
    body = sandbox.control("wazuh", "state")["searches"][-1]
    assert body["query"]["bool"]["filter"][1] == {"range": {"rule.level": {"gte": 10}}}
    assert body["sort"] == [{"timestamp": {"order": "desc"}}]


def test_wazuh_alert_cap_is_said(sandbox: Any) -> None:
    collected = wazuh_alerts.fn(
        block(sandbox, "wazuh_indexer"), DAY_AGO, NOW, min_level=0, critical_level=12, max_alerts=5
    )
    assert collected.note.startswith("read the newest 5 of ")


def test_wazuh_agents_disconnected_and_never_connected(sandbox: Any) -> None:
    collected = wazuh_agents.fn(block(sandbox, "wazuh_api"), ["disconnected", "never_connected"])
    titles = {f.entity: f.title for f in collected.findings}
    assert titles["new-ct-enrolled"] == "Wazuh agent never connected"
    assert "Wazuh agent disconnected" in titles.values()
    assert "wazuh" not in titles  # the manager (agent 000) is never a finding


def test_wazuh_wrong_password_is_refused(sandbox: Any) -> None:
    indexer = block(sandbox, "wazuh_indexer").model_copy(
        update={"password": SecretStr("wrong-password")}
    )
    with pytest.raises(AuthFailed, match="wazuh_indexer"):
        wazuh_alerts.fn(indexer, DAY_AGO, NOW, 7, 12, 10)
    api = block(sandbox, "wazuh_api").model_copy(update={"password": SecretStr("nope-nope")})
    with pytest.raises(AuthFailed, match="wazuh_api"):
        wazuh_agents.fn(api, ["disconnected"])


# -- Loki (sandbox) ----------------------------------------------------------------------------


def test_loki_ssh_and_sudo_failures(sandbox: Any) -> None:
    queries = DigestPolicy().log_queries
    collected = loki_queries.fn(block(sandbox, "loki"), queries, DAY_AGO, NOW)
    ssh = [f for f in collected.findings if f.title.startswith("SSH authentication failures")]
    sudo = [f for f in collected.findings if f.title.startswith("sudo authentication")]
    assert ssh and sudo
    assert all(f.ip and f.count >= 5 for f in ssh)  # min_count of the default query
    assert all("Accepted publickey" not in line for f in ssh for line in f.evidence)
    assert "alice" in sudo[0].users
    sent = sandbox.control("loki", "state")["queries"][-1]
    assert sent["direction"] == "backward" and int(sent["end"]) > int(sent["start"])


def test_loki_window_is_respected(sandbox: Any) -> None:
    host = f"window-test-{time.monotonic_ns()}"
    old = int((NOW - timedelta(days=3)).timestamp() * 1e9)
    fresh = int((NOW - timedelta(minutes=5)).timestamp() * 1e9)
    line = f"{host} sshd[1]: Failed password for root from 192.0.2.77 port 1 ssh2"
    sandbox.control(
        "loki",
        "add_lines",
        stream={"job": "auth", "host": host},
        lines=[[old, line], [fresh, line]],
    )
    query = LogQuery(name="probe", query=f'{{host="{host}"}} |= "Failed password"')
    collected = loki_queries.fn(block(sandbox, "loki"), [query], DAY_AGO, NOW)
    assert [(f.entity, f.count, f.ip) for f in collected.findings] == [(host, 1, "192.0.2.77")]


# -- CrowdSec (real LAPI) ----------------------------------------------------------------------


def lapi_block(lapi: Lapi, **kw: Any) -> CrowdsecLapi:
    values: dict[str, Any] = dict(
        url=lapi.url,
        machine_id=lapi.machine_id,
        machine_password=SecretStr(lapi.machine_password),
        bouncer_key=SecretStr(lapi.bouncer_key),
    )
    values.update(kw)
    return CrowdsecLapi(**values)


def test_crowdsec_alerts_bans_and_repeat_offenders(crowdsec: Lapi) -> None:
    collected = crowdsec_activity.fn(lapi_block(crowdsec), 24, 1000, False, 2)
    assert set(collected.banned_ips) >= {"203.0.113.7", "198.51.100.23", MANUAL_BAN["ip"]}
    assert "192.0.2.99" not in collected.banned_ips  # alerted without a ban
    by = {(f.rule, f.entity): f for f in collected.findings}
    crawl = by[("crowdsecurity/http-crawl-non_statics", "192.0.2.99")]
    assert crawl.severity == Severity.WARNING and crawl.count == 40
    assert "EXAMPLE-AS-3, US" in crawl.title
    assert by[("crowdsecurity/ssh-bf", "203.0.113.7")].severity == Severity.INFO
    assert ("repeat-offender", "203.0.113.7") in by
    assert by[(MANUAL_BAN["reason"], MANUAL_BAN["ip"])].count == 1


def test_crowdsec_no_match_is_null_and_bad_key_is_refused(crowdsec: Lapi) -> None:
    resp = httpx.get(
        f"{crowdsec.url}/v1/decisions",
        params={"ip": "192.0.2.250"},
        headers={"X-Api-Key": crowdsec.bouncer_key},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.text.strip() == "null"
    with pytest.raises(AuthFailed, match="crowdsec"):
        crowdsec_activity.fn(
            lapi_block(crowdsec, bouncer_key=SecretStr("0" * 32)), 24, 10, False, 2
        )
    with pytest.raises(AuthFailed, match="crowdsec"):
        crowdsec_activity.fn(
            lapi_block(crowdsec, machine_password=SecretStr("bad-password")), 24, 10, False, 2
        )


def test_crowdsec_down_is_unreachable(crowdsec: Lapi) -> None:
    from labops.http_settings import HttpRetry

    dead = lapi_block(crowdsec, url="http://127.0.0.1:9", retry=HttpRetry(attempts=1))
    with pytest.raises(Unreachable):
        crowdsec_activity.fn(dead, 24, 10, False, 2)


# -- VictoriaMetrics (real) --------------------------------------------------------------------


def seed_metrics(vm: Any) -> None:
    now_ms = int(time.time() * 1000)
    lines = [
        f'up{{instance="ct-grafana:3000",job="grafana",digest_test="1"}} 0 {now_ms}',
        f'up{{instance="pve1:9100",job="node",digest_test="1"}} 1 {now_ms}',
        f'node_systemd_unit_state{{name="pbs-sync.service",state="failed",instance="pve2:9100"'
        f',digest_test="1"}} 1 {now_ms}',
    ]
    # a filesystem losing 2 GiB an hour with 3 GiB left: full within 24 h
    for step in range(0, 7 * 3600, 600):
        ts = now_ms - (6 * 3600 - step) * 1000 if step <= 6 * 3600 else now_ms
        avail = 15 * 1024**3 - 2 * 1024**3 * step / 3600
        lines.append(
            f'node_filesystem_avail_bytes{{instance="nextcloud:9100",mountpoint="/data",'
            f'fstype="ext4",digest_test="1"}} {avail:.0f} {min(ts, now_ms)}'
        )
    httpx.post(
        f"{vm.url}/api/v1/import/prometheus", content="\n".join(lines) + "\n", timeout=10
    ).raise_for_status()
    httpx.get(f"{vm.url}/internal/force_flush", timeout=10)


def test_promql_checks_against_victoriametrics(victoriametrics: Any) -> None:
    seed_metrics(victoriametrics)
    victoriametrics.wait_for('up{digest_test="1"}', count=2)
    checks = [
        PromCheck(name="Scrape target down", query='up{digest_test="1"} == 0'),
        PromCheck(
            name="Failed systemd unit",
            query='node_systemd_unit_state{state="failed",digest_test="1"} == 1',
            entity_labels=["name", "instance"],
        ),
        PromCheck(
            name="Disk fills within 24 h",
            severity="critical",
            query='predict_linear(node_filesystem_avail_bytes{digest_test="1"}[6h], 86400) < 0',
            entity_labels=["instance", "mountpoint"],
        ),
        PromCheck(name="Never there", query='absent(up{job="nope",digest_test="1"})'),
        PromCheck(name="Broken", query="up{{"),
    ]
    block_ = VictoriaMetrics(settings=VictoriaMetricsSettings(url=victoriametrics.url))
    deadline = time.monotonic() + 15
    while True:  # freshly imported series take a moment to be searchable at an explicit time
        collected = promql_checks.fn(block_, checks, datetime.now(UTC))
        got = sorted((f.title, f.entity, f.severity.value) for f in collected.findings)
        if len(got) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == [
        ("Disk fills within 24 h", "nextcloud:9100 /data", "critical"),
        ("Failed systemd unit", "pbs-sync.service pve2:9100", "warning"),
        ("Never there", "nope", "warning"),  # absent() returns a series: a finding
        ("Scrape target down", "ct-grafana:3000 grafana", "warning"),
    ]
    assert "check 'Broken' rejected" in collected.note
