"""The digest's collection bookkeeping and assembly without I/O: a source's time budget, why it
failed, its findings labelled; the digest built, rendered and remembered for the next one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labops.config.policies.digest import DigestPolicy
from labops.digest.assemble import build_digest, date_unread, remembered, render
from labops.digest.collect import answered, describe, failed, fit_tries, skipped, timed_out
from labops.digest.compare import PreviousDigest
from labops.digest.findings import Collected, Finding
from labops.digest.render import load_template
from labops.digest.report import SourceStatus
from labops.errors import ApiError, AuthFailed, Unreachable
from labops.reports import Severity

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def status(name: str) -> SourceStatus:
    return SourceStatus(name=name, label=name.title(), covers=f"{name} findings")


@pytest.mark.parametrize(
    ("per_try", "attempts", "budget", "fitted"),
    [
        (10.0, 3, 60.0, (10.0, 3)),  # fits as it is
        (30.0, 3, 20.0, (10.0, 2)),  # a retry kept within the budget
        (30.0, 1, 20.0, (20.0, 1)),  # no retries: the whole budget for the one try
        (5.0, 10, 12.0, (5.0, 2)),  # no more tries than the budget holds
    ],
)
def test_a_retry_policy_fits_the_sources_budget(
    per_try: float, attempts: int, budget: float, fitted: tuple[float, int]
) -> None:
    assert fit_tries(per_try, attempts, budget) == fitted


def test_a_failure_reads_as_what_happened_and_a_request_timeout_as_the_budget() -> None:
    assert describe(AuthFailed("wazuh", "401")) == "refused the credentials (401)"
    assert describe(ApiError("loki", "500")) == "answered with an error (500)"
    assert describe(ValueError("x" * 300)) == f"failed (ValueError: {'x' * 200})"
    s = status("loki")
    failed(s, Unreachable("loki", "timed out after 2 tries"), 5)
    assert (s.state, s.detail, s.kind) == ("failed", "did not answer within 5 s", "timeout")
    s = status("loki")
    failed(s, Unreachable("loki", "timed out"))  # no budget (a block not built): as it is
    assert s.detail.startswith("unreachable (")
    s = status("wazuh")
    timed_out(s, 2.5)
    assert (s.detail, s.kind) == ("did not answer within 2.5 s", "timeout")
    s = status("loki")
    skipped(s, "not configured")
    assert (s.state, s.detail) == ("skipped", "not configured")


def test_an_answer_labels_its_findings_with_the_collector() -> None:
    s = status("wazuh-alerts")
    got = answered(
        s,
        Collected(
            findings=[Finding(source="wazuh", severity=Severity.WARNING, title="t", entity="e")],
            note="partial",
        ),
    )
    assert [f.collector for f in got.findings] == ["wazuh-alerts"]
    assert (s.findings, s.detail) == (1, "partial")


def test_a_source_unread_again_keeps_the_date_of_its_first_miss() -> None:
    s = status("loki")
    failed(s, Unreachable("loki", "refused"))
    previous = PreviousDigest(window_end=T0, unknown_since={"loki": T0 - timedelta(days=1)})
    [(name, why)] = date_unread([s], previous, T0).items()
    assert name == "loki" and why.since == T0 - timedelta(days=1) and why.kind == "unreachable"
    assert s.since == T0 - timedelta(days=1)


def test_the_digest_is_built_rendered_and_remembered() -> None:
    wazuh, crowdsec, loki = status("wazuh-alerts"), status("crowdsec"), status("loki")
    failed(crowdsec, Unreachable("crowdsec", "refused"))
    skipped(loki, "nothing to check in the policy")
    finding = Finding(source="wazuh", severity=Severity.CRITICAL, title="root login", entity="h1")
    results = {"wazuh-alerts": answered(wazuh, Collected(findings=[finding]))}
    previous = PreviousDigest(window_end=T0 - timedelta(days=1), banned_ips=["203.0.113.9"])
    report, changes = build_digest(
        [wazuh, crowdsec, loki],
        results,
        previous,
        DigestPolicy(),
        lab="home",
        period="daily",
        since=T0 - timedelta(days=1),
        until=T0,
        dry_run=False,
    )
    assert [f.title for f in changes.new] == ["root login"]
    assert [f.entity for f in report.failures] == ["Crowdsec"]
    assert report.skipped == ["loki: nothing to check in the policy"]
    assert report.new_bans == []  # CrowdSec not read: no ban is new
    text = render(report, load_template(None), 10)
    assert "root login" in text and text == render(report, load_template(None), 10)
    kept = remembered(report, previous)
    assert kept.banned_ips == ["203.0.113.9"]  # CrowdSec failed: the last bans stay
    assert set(kept.unknown_since) == {"crowdsec", "loki"}
    assert [f.title for f in kept.findings] == ["root login"]
