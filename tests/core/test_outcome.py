"""A run's outcome (clean, findings, failed), per operation, and what follows from it: the CLI's
exit code, the metrics and the names a lab uses on shared servers. Pure: no Prefect, no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labops.backups.drill_proof import DrillCoverage, DrillTimes
from labops.backups.models import JobCheck
from labops.backups.offsite import OffsiteRow
from labops.backups.report import BackupReport, GuestRow, GuestStatus, RestoreDrillReport
from labops.certificates.classify import CertStatus, Classification
from labops.certificates.models import CertInfo, Target
from labops.certificates.report import CertificateReport, EndpointResult
from labops.digest.findings import Finding
from labops.digest.report import SecurityDigest, SourceStatus
from labops.docs.models import Claim, ClaimKind, Status, Undocumented, Verdict
from labops.docs.report import DocReport
from labops.housekeeping import HousekeepingReport
from labops.limits import limit_name
from labops.metrics import Metric
from labops.notify.mqtt import topic_for
from labops.outcome import FailOn, Found, Outcome, Severity, judge
from labops.patching.cves import FeedState
from labops.patching.packages import PendingUpdate
from labops.patching.report import HostCheck, PatchReport
from labops.reports import Failure, OperationReport
from labops.scope import artifact_key, lab_slug, scoped_name
from tests.backups.test_report import row

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


# -- the verdict and the exit code ---------------------------------------------------------------


def test_judge_failed_beats_findings_and_keeps_the_severity() -> None:
    critical = Found(severity=Severity.CRITICAL, what="1 expired: a")
    clean = judge([], [Found(severity=Severity.OK, what="nothing")])
    assert (clean.outcome, clean.severity, clean.detail) == (Outcome.CLEAN, Severity.OK, "clean")
    found = judge([], [Found(severity=Severity.INFO, what="2 notes: x, y"), critical])
    assert found.outcome is Outcome.FINDINGS and found.severity is Severity.CRITICAL
    assert found.detail == "critical: 1 expired: a; info: 2 notes: x, y"  # worst first
    assert found.state_name == "Findings"
    failed = judge(["host pve2: unreachable"], [critical])
    assert failed.outcome is Outcome.FAILED and failed.severity is Severity.CRITICAL
    assert failed.detail == "1 failure(s): host pve2: unreachable"
    assert failed.state_name == "Failed"


@pytest.mark.parametrize(
    ("problems", "severity", "fail_on", "code"),
    [
        ([], Severity.OK, FailOn.INFO, 0),
        ([], Severity.INFO, FailOn.CRITICAL, 0),
        ([], Severity.WARNING, FailOn.CRITICAL, 0),
        ([], Severity.WARNING, FailOn.WARNING, 3),
        ([], Severity.INFO, FailOn.INFO, 3),
        ([], Severity.CRITICAL, FailOn.CRITICAL, 3),
        ([], Severity.CRITICAL, FailOn.NEVER, 0),
        (["x: down"], Severity.OK, FailOn.NEVER, 1),
        (["x: down"], Severity.CRITICAL, FailOn.CRITICAL, 1),
    ],
)
def test_exit_codes(problems: list[str], severity: Severity, fail_on: FailOn, code: int) -> None:
    found = [Found(severity=severity, what="something")] if severity is not Severity.OK else []
    assert judge(problems, found).exit_code(fail_on) == code


# -- what each operation counts as a finding and as a failure ------------------------------------


def cert(subject: str, days_left: float, *, self_signed: bool = False) -> CertInfo:
    return CertInfo(
        subject=subject,
        issuer=subject if self_signed else "Lab CA",
        serial="01",
        fingerprint_sha256="00",
        not_before=NOW - timedelta(days=30),
        not_after=NOW + timedelta(days=days_left),
        key_type="EC P-256",
        self_signed=self_signed,
    )


def endpoint(name: str, status: CertStatus, reason: str = "") -> EndpointResult:
    chain = [] if status is CertStatus.UNREACHABLE else [cert(name, 60)]
    return EndpointResult(
        target=Target(name=name, address="10.0.0.9"),
        status=status,
        reason=reason or status.value,
        classification=Classification(status=status),
        chain=chain,
    )


def test_certificates_untrusted_is_a_critical_finding_unreachable_a_failure() -> None:
    untrusted = CertificateReport(
        endpoints=[
            endpoint("a.lab", CertStatus.UNTRUSTED, "issuer 'Foreign Root CA' unknown"),
            endpoint("b.lab", CertStatus.UNTRUSTED),
            endpoint("c.lab", CertStatus.WARNING),
            endpoint("d.lab", CertStatus.OK),
        ]
    )
    result = untrusted.result()
    assert result.outcome is Outcome.FINDINGS and result.severity is Severity.CRITICAL
    assert result.detail.startswith("critical: 2 untrusted: a.lab:443")
    assert "warning: 1 warning: c.lab:443" in result.detail
    assert result.exit_code() == 3 and not untrusted.failed

    unreachable = CertificateReport(
        endpoints=[
            endpoint("a.lab", CertStatus.UNTRUSTED),
            endpoint("e.lab", CertStatus.UNREACHABLE, "connection refused"),
        ]
    )
    result = unreachable.result()
    assert result.outcome is Outcome.FAILED and unreachable.failed
    assert result.problems == ["e.lab:443 via 10.0.0.9: connection refused"]
    assert result.severity is Severity.CRITICAL  # what it did find is still known
    assert unreachable.failures == []  # named once: as a row, not again as a Failure


def guest(vmid: int, status: GuestStatus, age_h: float, **kw: object) -> GuestRow:
    return row(vmid, status, age_h * 3600, **kw)


def test_backups_failed_verification_is_critical_a_stale_verify_job_a_warning() -> None:
    report = BackupReport(
        guests=[
            guest(101, GuestStatus.FRESH, 3),
            guest(
                102,
                GuestStatus.FRESH,
                5,
                verified="FAILED 1d ago",
                problems=["verification failed 1d ago (pbs:ct/102/x)"],
            ),
        ],
        pbs_jobs=[
            JobCheck(job="verify", max_age_s=8 * 86400, ok=False, detail="last run 9d0h ago")
        ],
    )
    result = report.result()
    assert result.outcome is Outcome.FINDINGS and result.severity is Severity.CRITICAL
    assert [f.line() for f in result.found] == [
        "critical: 1 guest(s) whose latest verification failed: guest 102 (ct102)",
        "warning: 1 coverage gap(s): PBS verify: last run 9d0h ago",
    ]
    assert result.exit_code() == 3 and result.exit_code(FailOn.NEVER) == 0

    stale_verify_only = report.model_copy(update={"guests": report.guests[:1]})
    assert stale_verify_only.result().severity is Severity.WARNING
    assert stale_verify_only.result().exit_code() == 0
    assert stale_verify_only.result().exit_code(FailOn.WARNING) == 3


def test_backups_stale_guest_is_critical_and_a_failed_guest_fails_the_run() -> None:
    stale = BackupReport(guests=[guest(101, GuestStatus.NOT_BACKED_UP, 40)])
    assert (
        stale.result().found[0].line() == "critical: 1 guest(s) past their RPO: guest 101 (ct101)"
    )
    failed = BackupReport(
        guests=[guest(101, GuestStatus.FAILED, 40)],
        failures=[Failure(entity="guest 101 (ct101)", reason="exit code 255")],
    )
    assert failed.result().outcome is Outcome.FAILED
    assert failed.result().detail == "1 failure(s): guest 101 (ct101): exit code 255"


def host(name: str, **kw: object) -> HostCheck:
    return HostCheck(host=name, state="updates", **kw)  # type: ignore[arg-type]


def update(name: str, security: bool) -> PendingUpdate:
    return PendingUpdate(name=name, to_version="2", security=security)


def test_patch_check_eol_critical_security_warning_other_updates_info() -> None:
    hosts = [
        host("ct-a", packages=[update("openssl", True)], package_manager="apt"),
        host("ct-b", packages=[update("vim", False)], package_manager="apt"),
        host("ct-c", packages=[], eol=True, os="debian 10"),
        HostCheck(host="ct-d", state="unreachable", detail="connection refused"),
    ]
    report = PatchReport(hosts=hosts[:3])
    lines = [f.line() for f in report.result().found]
    assert lines == [
        "critical: 1 host(s) on an end-of-life release: ct-c",
        "warning: 1 host(s) with security updates: ct-a",
        "info: 1 host(s) with other pending updates: ct-b",
    ]
    only_info = PatchReport(hosts=[hosts[1]])
    assert only_info.result().outcome is Outcome.FINDINGS
    assert only_info.result().exit_code() == 0
    unreachable = PatchReport(
        hosts=hosts,
        failures=[Failure(entity="host ct-d", reason="unreachable: connection refused")],
    )
    assert unreachable.result().outcome is Outcome.FAILED


def test_digest_doc_and_housekeeping_outcomes() -> None:
    digest = SecurityDigest(
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        findings=[
            Finding(source="wazuh", severity=Severity.CRITICAL, title="rootcheck", entity="ct-a"),
            Finding(source="crowdsec", severity=Severity.WARNING, title="ssh-bf", entity="1.2.3.4"),
        ],
    )
    assert digest.result().detail == (
        "critical: 1 finding(s): rootcheck (ct-a); warning: 1 finding(s): ssh-bf (1.2.3.4)"
    )
    failed_source = digest.model_copy(
        update={"failures": [Failure(entity="Wazuh indexer", reason="unreachable")]}
    )
    assert failed_source.result().outcome is Outcome.FAILED
    quiet = SecurityDigest(window_start=NOW - timedelta(days=1), window_end=NOW)
    assert quiet.result().outcome is Outcome.CLEAN

    claim = Claim(
        kind=ClaimKind.COUNT, file="infra.md", line=3, text="12 containers", subject="lxc"
    )
    docs = DocReport(
        verdicts=[Verdict(claim=claim, status=Status.DRIFTED, documented="12", live="14")],
        undocumented=[Undocumented(kind="guest", entity="CT 150 new", source="proxmox")],
    )
    assert [f.line() for f in docs.result().found] == [
        "warning: 1 claim(s) drifted: infra.md:3 lxc",
        "info: 1 item(s) live but undocumented: CT 150 new",
    ]
    assert HousekeepingReport().result().outcome is Outcome.CLEAN


def test_the_json_report_says_its_outcome() -> None:
    report = CertificateReport(endpoints=[endpoint("a.lab", CertStatus.EXPIRED)])
    data = report.model_dump(mode="json")
    assert data["outcome"] == "findings" and data["highest_severity"] == "critical"
    assert data["outcome_detail"] == "critical: 1 expired: a.lab:443 via 10.0.0.9"
    assert CertificateReport.model_validate(data).endpoints == report.endpoints


# -- metrics: every series has lab, states are values --------------------------------------------


def sample_reports(lab: str) -> list[OperationReport]:
    """One report of every operation, each with enough rows for every metric it can push."""
    claim = Claim(kind=ClaimKind.COUNT, file="infra.md", line=3, text="12 lxc", subject="lxc")
    return [
        BackupReport(
            lab=lab,
            guests=[guest(101, GuestStatus.BACKED_UP, 2)],
            offsite=[
                OffsiteRow(
                    vmid=101,
                    name="g101",
                    target="pbs2:offsite",
                    rpo_s=7 * 86400,
                    newest=1.0,
                    age_s=3600.0,
                )
            ],
        ),
        RestoreDrillReport(
            lab=lab,
            vmid=101,
            name="dns",
            ok=True,
            duration_s=42.0,
            times=DrillTimes(restore_s=20.0, boot_s=10.0, rto_s=40.0),
            coverage=DrillCoverage(period_s=90 * 86400.0, in_scope=2, drilled=1),
        ),
        CertificateReport(lab=lab, endpoints=[endpoint("a.lab", CertStatus.OK)]),
        PatchReport(
            lab=lab,
            hosts=[host("ct-a", packages=[update("openssl", True)], package_manager="apt")],
            cve_feeds=[FeedState(name="kev", url="http://kev", health="fresh", age_h=2.0)],
        ),
        SecurityDigest(
            lab=lab,
            window_start=NOW - timedelta(days=1),
            window_end=NOW,
            sources=[SourceStatus(name="loki", label="Loki", covers="log findings")],
        ),
        DocReport(
            lab=lab,
            verdicts=[Verdict(claim=claim, status=Status.MATCH, documented="12", live="12")],
        ),
        HousekeepingReport(lab=lab),
    ]


def pushed(lab: str) -> list[Metric]:
    return [m for report in sample_reports(lab) for m in report.pushed_metrics()]


def test_every_pushed_series_has_the_lab_and_no_state_label() -> None:
    samples = pushed("Home Lab")
    assert samples and all(m.labels.get("lab") == "Home Lab" for m in samples)
    status_rank = [m for m in samples if m.name == "labops_cert_status_rank"]
    assert status_rank and all("status" not in m.labels for m in status_rank)
    flows = {m.labels["flow"] for m in samples if m.name == "labops_flow_outcome"}
    assert len(flows) == 7
    outcome = {m.labels["flow"]: m.value for m in samples if m.name == "labops_flow_outcome"}
    severity = {m.labels["flow"]: m.value for m in samples if m.name == "labops_flow_severity"}
    assert outcome["patch_check"] == 1.0 and severity["patch_check"] == 2.0  # warning
    assert outcome["housekeeping"] == 0.0 and severity["housekeeping"] == 0.0


def documented_metrics() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `(labops_[a-z_]+)` \| ([^|]*) \|", DOCS.read_text(), re.MULTILINE)
    return {name: set(re.findall(r"`([a-z_]+)`", labels)) for name, labels in rows}


def test_docs_metrics_table_lists_every_metric_with_its_labels() -> None:
    produced: dict[str, set[str]] = {}
    for m in pushed("homelab"):
        produced.setdefault(m.name, set()).update(m.labels)
    assert documented_metrics() == produced


def test_docs_list_the_certificate_status_ranks() -> None:
    text = DOCS.read_text()
    ranks = ", ".join(f"{s.rank} {s.value}" for s in CertStatus)
    assert ranks in text


# -- one lab's names on shared servers -----------------------------------------------------------


def test_lab_names_are_slugs_and_never_collide() -> None:
    assert lab_slug("homelab") == "homelab"
    names = ["Home Lab", "home-lab", "home_lab", "HOME LAB", "home/lab", "lab#1", "x" * 80]
    slugs = [lab_slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    for slug in slugs:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", slug) and len(slug) <= 47
    assert lab_slug("Home Lab") == lab_slug("Home Lab")  # stable run to run


def test_every_shared_name_carries_the_lab() -> None:
    assert artifact_key("alpha", "patch_check", "table") == "labops-alpha-patch-check-table"
    assert artifact_key("alpha", "backups", "table") != artifact_key("bravo", "backups", "table")
    assert limit_name("node", "pve1", lab="alpha") == "labops-alpha-node-pve1"
    assert limit_name("storage", "local-zfs", lab="alpha", scope="t1") == (
        "t1-alpha-storage-local-zfs"
    )
    assert scoped_name("Home Lab", "drill") == f"labops-{lab_slug('Home Lab')}-drill"
    assert topic_for("labops", "backups/report", "alpha") == "labops/alpha/backups/report"
    assert topic_for("labops/", "/x/", "Home Lab") == f"labops/{lab_slug('Home Lab')}/x"
    assert "+" not in topic_for("labops", "x", "a+b#c") and "#" not in topic_for("p", "x", "#")
