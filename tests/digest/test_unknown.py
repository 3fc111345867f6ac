"""Unknown is never OK: a finding is resolved only by a later check that succeeded.

Pure sequences through the real report models, their table rows (as the artifacts carry them),
the digest's row reader, comparison and rendering; no Prefect. The same sequence runs end to end
on the sandbox in ``tests/digest/test_flow.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from labops.certificates.classify import CertStatus, Classification
from labops.certificates.classify import Finding as CertFinding
from labops.certificates.models import Target
from labops.certificates.report import CertificateReport, EndpointResult
from labops.digest.compare import PreviousDigest, compare
from labops.digest.findings import Finding, rank
from labops.digest.render import load_template, render_markdown
from labops.digest.report import SecurityDigest, SourceStatus
from labops.digest.sources import labops_row_findings
from labops.outcome import Checked, CouldNotCheck, UnknownSince
from labops.patching.packages import PendingUpdate
from labops.patching.report import CHECKED, HostCheck, PatchReport
from labops.reports import Severity

T1 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KINDS = ["unreachable", "host-key-rejected", "auth-failed", "timeout", "error"]


def patch_run(at: datetime, state: str, security: int = 76) -> PatchReport:
    packages = [
        PendingUpdate(name=f"lib{i}", to_version="2", suites=["trixie-security"], security=True)
        for i in range(security)
    ]
    ok = state in ("updates", "up-to-date")
    host = HostCheck(
        host="immich",
        state=state,  # type: ignore[arg-type]
        detail="" if ok else f"{state} after 3 tries",
        last_checked=at,
        package_manager="apt",
        packages=packages if ok else [],
    )
    fine = HostCheck(host="pve1", kind="node", state="up-to-date", last_checked=at)
    return PatchReport(started=at, hosts=[fine, host])


def artifact_rows(report: Any) -> list[dict[str, Any]]:
    """What ``tasks.publish`` stores: every value as text."""
    return [{k: str(v) for k, v in row.items()} for row in report.table()]


class Digests:
    """Consecutive digests over the patch check's table, as the flow chains them."""

    def __init__(self) -> None:
        self.previous: PreviousDigest | None = None

    def run(
        self, rows: list[dict[str, Any]], at: datetime, sources: list[SourceStatus] | None = None
    ) -> tuple[SecurityDigest, str]:
        said = labops_row_findings("patching", rows, at)
        unknown_sources = {
            s.name: s.could_not_check for s in sources or [] if s.could_not_check is not None
        }
        collected = [] if unknown_sources else said.findings
        changes = compare(
            collected,
            self.previous,
            now=at,
            unknown_sources={k: v for k, v in unknown_sources.items() if v is not None},
            unknown_scopes={} if unknown_sources else said.unknown,
            checked_scopes=[] if unknown_sources else said.checked,
        )
        ranked = rank([*changes.findings, *changes.unknown])
        text = render_markdown(
            load_template(None),
            lab="homelab",
            period="daily",
            window_start=at - DAY,
            window_end=at,
            findings=ranked,
            resolved=changes.resolved,
            problems=[s.problem() for s in sources or [] if s.state == "failed"],
            sources_ok=["Prefect API"],
            sources=[s.line() for s in sources or []],
            new_bans=[],
            suppressed_count=0,
            summary=None,
            summary_note=None,
            max_shown=50,
        )
        self.previous = PreviousDigest(window_end=at, findings=ranked)
        report = SecurityDigest(
            window_start=at - DAY,
            window_end=at,
            findings=ranked,
            resolved=changes.resolved,
            rendered=text,
        )
        return report, text


def _by_title(findings: list[Finding]) -> dict[str, Finding]:
    return {f.title: f for f in findings if f.entity == "immich"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_host_that_could_not_be_checked_keeps_its_findings_unknown(kind: str) -> None:
    digests, book = Digests(), UnknownSince()
    # good check -> digest: 76 security updates pending on immich
    first = patch_run(T1, "updates")
    book = first.date_unknown(book)
    report, _ = digests.run(artifact_rows(first), T1 + timedelta(hours=1))
    security = "patching: 76 security update(s) pending"
    assert _by_title(report.findings)[security].status == "new"

    # failing check -> digest: unknown since the failed check, named, never resolved
    t2 = T1 + DAY
    failing = patch_run(t2, kind)
    book = failing.date_unknown(book)
    assert failing.hosts[1].check is Checked.UNKNOWN
    report, text = digests.run(artifact_rows(failing), t2 + timedelta(hours=1))
    assert report.resolved == []
    found = _by_title(report.findings)
    unknown = found[security].unknown
    assert found[security].status == "unknown"
    assert unknown is not None and unknown.since == t2
    assert found[security].severity is Severity.WARNING  # as when last seen
    cannot = found[f"patching: could not check ({kind})"]
    assert cannot.severity is Severity.WARNING and cannot.unknown is not None
    assert cannot.unknown.kind == kind and cannot.unknown.since == t2
    assert report.notification().title.endswith("2 finding(s), 1 new, 1 unknown")
    line = next(x for x in text.splitlines() if security in x)
    assert "UNKNOWN" in line and "| immich |" in line
    assert f"could not check since 2026-11-25 06:00 UTC: {kind}" in line
    assert "Resolved" not in text

    # failing again -> still unknown, still since the FIRST failed check
    t3 = t2 + DAY
    again = patch_run(t3, kind)
    book = again.date_unknown(book)
    assert again.hosts[1].unknown_since == t2
    report, _ = digests.run(artifact_rows(again), t3 + timedelta(hours=1))
    found = _by_title(report.findings)
    unknown = found[security].unknown
    assert found[security].status == "unknown" and unknown is not None
    assert unknown.since == t2 and report.resolved == []

    # a good check that no longer finds them -> resolved, and the host is checked again
    t4 = t3 + DAY
    good = patch_run(t4, "up-to-date", security=0)
    book = good.date_unknown(book)
    assert "immich" not in book.since
    report, text = digests.run(artifact_rows(good), t4 + timedelta(hours=1))
    assert not _by_title(report.findings)
    resolved = {f.title for f in report.resolved if f.entity == "immich"}
    assert resolved == {security, f"patching: could not check ({kind})"}
    assert "## Resolved since the last digest (2)" in text


def test_every_patch_state_is_named_in_the_shared_vocabulary() -> None:
    from typing import get_args

    from labops.patching.report import CheckState

    assert set(CHECKED) == set(get_args(CheckState))
    assert {s for s, c in CHECKED.items() if c is Checked.UNKNOWN} == set(KINDS)


def test_a_source_that_could_not_be_read_leaves_its_findings_unknown_since_its_first_failure() -> (
    None
):
    digests = Digests()
    digests.run(artifact_rows(patch_run(T1, "updates")), T1)
    for day in (1, 2):  # the Prefect API down two digests in a row
        at = T1 + day * DAY
        down = SourceStatus(
            name="labops",
            label="Prefect API",
            covers="backup, certificate and patch results",
            state="failed",
            detail="unreachable (connection refused)",
            kind="unreachable",
            since=T1 + DAY,  # the flow dates it from the first digest that failed
        )
        report, text = digests.run([], at, sources=[down])
        found = _by_title(report.findings)
        assert report.resolved == [] and found, text
        assert all(f.status == "unknown" for f in found.values())
        assert all(f.unknown and f.unknown.since == T1 + DAY for f in found.values())
        assert (
            "- Prefect API: could not check (unreachable: unreachable (connection refused)) "
            "since 2026-11-25 06:00 UTC" in text
        )
        assert "## Sources that did not answer" in text


def test_an_entity_missing_from_the_latest_report_is_not_resolved() -> None:
    """A partial patch check (``hosts=[...]``) or a host skipped on purpose is not a check."""
    digests = Digests()
    digests.run(artifact_rows(patch_run(T1, "updates")), T1)
    partial = PatchReport(
        started=T1 + DAY,
        hosts=[
            HostCheck(host="pve1", kind="node", state="up-to-date", last_checked=T1 + DAY),
        ],
    )
    report, _ = digests.run(artifact_rows(partial), T1 + DAY)
    assert report.resolved == []
    unknown = _by_title(report.findings)["patching: 76 security update(s) pending"].unknown
    assert unknown is not None and unknown.kind == "not-checked"
    skipped = PatchReport(
        hosts=[HostCheck(host="immich", state="skipped", detail="stopped", last_checked=T1)]
    )
    report, _ = digests.run(artifact_rows(skipped), T1 + 2 * DAY)
    assert report.resolved == []
    unknown = _by_title(report.findings)["patching: 76 security update(s) pending"].unknown
    assert unknown is not None and unknown.kind == "skipped" and "stopped" in unknown.reason
    # since: the first time it could not be checked, across both reasons
    assert unknown.since == T1 + DAY


def test_an_unreachable_certificate_endpoint_is_a_could_not_check_row() -> None:
    since = T1 - DAY
    down = EndpointResult(
        target=Target(name="offline.lab.internal", address="10.0.0.9"),
        status=CertStatus.UNREACHABLE,
        reason="connection refused",
        classification=Classification(
            status=CertStatus.UNREACHABLE,
            findings=[CertFinding(status=CertStatus.UNREACHABLE, reason="connection refused")],
        ),
        unknown_since=since,
    )
    report = CertificateReport(started=T1, endpoints=[down])
    row = report.table()[0]
    assert row["status"] == "unreachable" and row["severity"] == "warning"
    assert row["check"] == "unknown" and row["could not check"] == "unreachable: connection refused"
    assert row["unknown since"] == since.isoformat()
    assert "could not check (unreachable: connection refused) since" in report.markdown()
    said = labops_row_findings("certificates", artifact_rows(report), T1)
    [finding] = said.findings
    assert finding.title == "certificates: could not check (unreachable)"
    assert finding.severity is Severity.WARNING and "critical" not in finding.title
    assert finding.unknown == CouldNotCheck(
        reason="connection refused", kind="unreachable", since=since
    )
    assert CertStatus.UNREACHABLE.severity is Severity.WARNING


def test_only_the_source_that_was_not_read_keeps_its_findings_unknown() -> None:
    """Two collectors report as "wazuh": the one that failed (or was skipped) keeps its findings
    unknown; the other one's answer still resolves its own."""

    def wazuh(title: str, collector: str) -> Finding:
        return Finding(
            source="wazuh",
            severity=Severity.WARNING,
            title=title,
            entity="pve1",
            collector=collector,
        )

    alert, agent = wazuh("brute force", "wazuh-alerts"), wazuh("agent down", "wazuh-agents")
    previous = PreviousDigest(window_end=T1, findings=[alert, agent])
    for kind in ("unreachable", "skipped"):
        why = CouldNotCheck(reason="not configured", kind=kind, since=T1)
        changes = compare([], previous, now=T1 + DAY, unknown_sources={"wazuh-agents": why})
        assert [f.title for f in changes.resolved] == ["brute force"]
        assert [(f.title, f.status) for f in changes.unknown] == [("agent down", "unknown")]
    # kept by an older labops (no collector): any unread source of its kind keeps it unknown
    old = alert.model_copy(update={"collector": None})
    why = CouldNotCheck(reason="refused", kind="auth-failed", since=T1)
    changes = compare(
        [],
        PreviousDigest(window_end=T1, findings=[old]),
        now=T1 + DAY,
        unknown_sources={"wazuh-alerts": why},
    )
    assert changes.resolved == [] and changes.unknown[0].unknown == why
