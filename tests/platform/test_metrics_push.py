"""Pushing metrics to a real VictoriaMetrics and reading them back."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from labops.certificates.report import CertificateReport
from labops.config.systems import HttpRetry
from labops.errors import ApiError, Unreachable
from labops.http import HttpClient
from labops.metrics import Metric, heartbeat
from labops.metrics_push import VictoriaMetricsPusher
from tests.fixtures.sshd import free_port
from tests.fixtures.victoriametrics import VictoriaMetrics

AGE = "labops_test_backup_age_seconds"


def test_pushed_samples_are_queryable(victoriametrics: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    samples = [
        Metric(
            name="labops_test_backup_age_seconds", value=3600.5, labels={"guest": "101", "run": run}
        ),
        Metric(
            name="labops_test_backup_age_seconds", value=7.0, labels={"guest": "102", "run": run}
        ),
        *heartbeat(f"test-{run}", "homelab", success=True),
    ]
    with HttpClient("victoriametrics", victoriametrics.url) as client:
        sent = VictoriaMetricsPusher(client).push(samples)
    assert sent == 5
    result = victoriametrics.wait_for(f'{AGE}{{run="{run}"}}', 2)
    values = {r["metric"]["guest"]: float(r["value"][1]) for r in result}
    assert values == {"101": 3600.5, "102": 7.0}
    up = victoriametrics.wait_for(f'labops_flow_up{{flow="test-{run}"}}')
    assert [float(r["value"][1]) for r in up] == [1.0]
    last = victoriametrics.wait_for(
        f'labops_flow_last_success_timestamp_seconds{{flow="test-{run}"}}'
    )
    assert abs(float(last[0]["value"][1]) - time.time()) < 60


def test_extra_labels_and_empty_batch(victoriametrics: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    with HttpClient("victoriametrics", victoriametrics.url) as client:
        pusher = VictoriaMetricsPusher(client, extra_labels={"lab": "test", "run": run})
        assert pusher.push([]) == 0
        pusher.push([Metric(name="labops_test_extra", value=1, labels={"lab": "own"})])
    result = victoriametrics.wait_for(f'labops_test_extra{{run="{run}"}}')
    assert result[0]["metric"]["lab"] == "own"  # the sample's own label wins


def test_bad_payload_is_an_api_error(victoriametrics: VictoriaMetrics) -> None:
    client = HttpClient("victoriametrics", victoriametrics.url)
    with client, pytest.raises(ApiError) as err:
        client.request("POST", "/api/v1/import/prometheus?extra_label=bad", content=b"{{{")
    assert err.value.system == "victoriametrics"


def test_victoriametrics_down_is_unreachable() -> None:
    retry = HttpRetry(attempts=2, backoff_s=0.01, timeout_s=1)
    client = HttpClient("victoriametrics", f"http://127.0.0.1:{free_port()}", retry=retry)
    with client, pytest.raises(Unreachable, match="after 2 tries"):
        VictoriaMetricsPusher(client).push([Metric(name="x", value=1)])


def _pushed_through_publish(report: Any, url: str) -> None:
    """What a flow's push-metrics step sends, to this VictoriaMetrics."""
    from blocks.delivery import delivery_for
    from labops.config import LabopsConfig
    from tasks.publish import push_report_metrics

    config = LabopsConfig.model_validate(
        {"lab": {"name": report.lab}, "systems": {"victoriametrics": {"url": url}}}
    )
    assert push_report_metrics.fn(report, delivery_for(config).metrics) is None


def test_a_status_change_leaves_one_series_per_target_and_every_series_has_lab(
    victoriametrics: VictoriaMetrics,
) -> None:
    from labops.certificates.classify import CertStatus
    from tests.core.test_outcome import endpoint, sample_reports

    lab = f"lab-{uuid.uuid4().hex[:8]}"
    report = CertificateReport(
        lab=lab,
        endpoints=[endpoint("a.lab", CertStatus.OK), endpoint("b.lab", CertStatus.WARNING)],
    )
    _pushed_through_publish(report, victoriametrics.url)
    query = f'labops_cert_status_rank{{lab="{lab}"}}'
    assert len(victoriametrics.wait_for(query, 2)) == 2
    # a.lab expires: its status changes; an instant query still sees one series per target
    report.endpoints[0] = endpoint("a.lab", CertStatus.EXPIRED)
    _pushed_through_publish(report, victoriametrics.url)
    expired = float(CertStatus.EXPIRED.rank)
    deadline = time.monotonic() + 20
    while True:
        series = victoriametrics.wait_for(query, 2)
        values = {r["metric"]["name"]: float(r["value"][1]) for r in series}
        if values.get("a.lab") == expired or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert values == {"a.lab": expired, "b.lab": float(CertStatus.WARNING.rank)}
    assert len(series) == 2, series  # not a third series left behind by the old status
    outcome = victoriametrics.wait_for(f'labops_flow_outcome{{lab="{lab}"}}')
    assert [(r["metric"]["flow"], r["value"][1]) for r in outcome] == [("certificates", "1")]

    # every series of every operation's report reaches VictoriaMetrics with its lab
    every = f"lab-{uuid.uuid4().hex[:8]}"
    expected = set()
    for sample in sample_reports(every):
        _pushed_through_publish(sample, victoriametrics.url)
        expected |= {(m.name, tuple(sorted(m.labels.items()))) for m in sample.pushed_metrics()}
    found = victoriametrics.wait_for(f'{{lab="{every}"}}', len(expected))
    assert {
        (
            r["metric"]["__name__"],
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")),
        )
        for r in found
    } == expected
