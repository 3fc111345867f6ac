"""CVE matching, severity, ranking and the report's views of them (pure: no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labops.digest.sources import labops_row_findings
from labops.models.traefik import TraefikRouter
from labops.outcome import Severity
from labops.patching import cves
from labops.patching.exposure import exposures
from labops.patching.report import HostCheck, PatchReport


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 8.8),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.1),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss3_base_score(vector: str, score: float) -> None:
    assert cves.cvss3_score(vector) == score


def test_cvss_not_v3_or_broken() -> None:
    assert cves.cvss3_score("AV:N/AC:L/Au:N/C:P/I:P/A:P") is None
    assert cves.cvss3_score("CVSS:3.1/AV:X") is None


@pytest.mark.parametrize(
    ("os_id", "version", "eco"),
    [
        ("debian", "12", "Debian:12"),
        ("debian", "12.12", "Debian:12"),
        ("ubuntu", "24.04", "Ubuntu:24.04:LTS"),
        ("ubuntu", "24.10", "Ubuntu:24.10"),
        ("alpine", "3.20.3", "Alpine:v3.20"),
        ("arch", "rolling", None),
        ("debian", None, None),
    ],
)
def test_ecosystem(os_id: str, version: str | None, eco: str | None) -> None:
    assert cves.ecosystem(os_id, version) == eco


def test_os_of_label() -> None:
    assert cves.os_of_label("debian 12 (bookworm)") == ("debian", "12")
    assert cves.os_of_label("unknown ?") == ("unknown", None)


def test_parse_advisory_cves_and_scores() -> None:
    adv = cves.parse_advisory(
        {
            "id": "DSA-6015-1",
            "upstream": ["CVE-2025-9230", "CVE-2025-9232"],
            "aliases": ["GHSA-x"],
            "severity": [
                {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"}
            ],
        }
    )
    assert adv.cves == ["CVE-2025-9230", "CVE-2025-9232"] and adv.score == 8.1
    ubuntu = cves.parse_advisory(
        {
            "id": "UBUNTU-CVE-2025-9230",
            "upstream": ["CVE-2025-9230"],
            "severity": [{"type": "Ubuntu", "score": "medium"}],
        }
    )
    assert ubuntu.score is None and ubuntu.word == "medium"
    assert cves.rate(ubuntu, set(), None) == [("CVE-2025-9230", "medium", None, "ubuntu", False)]
    bare = cves.parse_advisory({"id": "DEBIAN-CVE-2025-61984", "upstream": ["CVE-2025-61984"]})
    assert cves.rate(bare, {"CVE-2025-61984"}, {"CVE-2025-61984": "low"}) == [
        ("CVE-2025-61984", "low", None, "debian-tracker", True)
    ]
    assert cves.rate(bare, set(), {"CVE-2025-61984": "not yet assigned"})[0][1] == "unknown"
    with pytest.raises(ValueError):
        cves.parse_advisory({"aliases": []})


def test_batch_ids_and_kev() -> None:
    answer = {"results": [{"vulns": [{"id": "DSA-1-1", "modified": "x"}]}, {}]}
    assert cves.batch_ids(answer, 2) == [["DSA-1-1"], []]
    with pytest.raises(ValueError):
        cves.batch_ids(answer, 3)  # an answer that does not fit the question is refused
    with pytest.raises(ValueError):
        cves.batch_ids({"error": 1}, 1)
    with pytest.raises(ValueError, match="id grammar"):  # never put into a URL path
        cves.batch_ids({"results": [{"vulns": [{"id": "../../admin?x=1"}]}]}, 1)
    ids, released = cves.parse_kev(
        {"dateReleased": "2025-12-01T15:00:00.000Z", "vulnerabilities": [{"cveID": "CVE-1"}]}
    )
    assert ids == {"CVE-1"} and released == datetime(2025, 12, 1, 15, tzinfo=UTC)
    assert cves.fixed_by(["A", "B"], ["B"]) == ["A"]


def _host(name: str, *rows: cves.PackageCve, exposed: bool = False) -> HostCheck:
    return HostCheck(
        host=name,
        state="updates",
        os="debian 12 (bookworm)",
        package_manager="apt",
        cves=list(rows),
        exposed=["r: Host(`x`) @ websecure"] if exposed else [],
    )


def _cve(cve: str, sev: cves.CveSeverity, kev: bool = False) -> cves.PackageCve:
    return cves.PackageCve(
        package="openssl", to_version="3", cve=cve, advisory="A", severity=sev, kev=kev
    )


def _report() -> PatchReport:
    report = PatchReport(lab="homelab")
    report.cve_feeds = [
        cves.FeedState(name="osv", url="u", health="fresh"),
        cves.FeedState(name="kev", url="u", health="stale", age_h=240.0, detail="old"),
    ]
    report.hosts = [
        _host("inner", _cve("CVE-1", "critical")),
        _host("web", _cve("CVE-2", "high"), exposed=True),
        _host("kevhost", _cve("CVE-3", "low", kev=True)),
        _host("kevweb", _cve("CVE-3", "low", kev=True), exposed=True),
        _host("none"),
    ]
    return report


def test_ranking_kev_first_then_severity_times_exposure() -> None:
    ranked = [(h.host, c.cve) for h, c in _report().ranked_cves()]
    assert ranked[:2] == [("kevweb", "CVE-3"), ("kevhost", "CVE-3")]
    # high x exposed (3*2) outranks critical unexposed (4)
    assert ranked[2:] == [("web", "CVE-2"), ("inner", "CVE-1")]


def test_report_views_carry_cves() -> None:
    report = _report()
    lines = [f.line() for f in report.found()]
    assert "critical: 2 host(s) with a known-exploited CVE pending: kevweb (exposed), kevhost" in (
        lines
    )
    assert any(line.startswith("warning: 1 CVE source(s) stale: kev stale") for line in lines)
    assert report.cve_headline() == (
        "exploited CVE pending on 1 exposed host(s) (kevweb) and 1 other(s): CVE-3"
    )
    md = report.markdown()
    assert "## CVEs fixed by pending updates" in md and "kev stale, 240.0 h old" in md
    rows = {r["host"]: r for r in report.table()}
    assert rows["kevweb"]["cves"] == "1 (low, KEV: CVE-3)" and rows["none"]["cves"] == "0"
    series = [m for m in report.metrics() if m.name == "labops_patch_cves"]
    kev = [m for m in series if m.labels["host"] == "kevweb" and m.value]
    assert [(m.labels["severity"], m.labels["kev"]) for m in kev] == [("low", "true")]
    assert all(m.labels["lab"] == "homelab" for m in series)
    note = report.notification()
    assert note is not None and note.body.startswith("exploited CVE pending")


def test_unknown_cves_are_never_zero() -> None:
    report = _report()
    report.hosts[0].cve_unchecked = "osv: unreachable"
    report.cve_feeds.append(cves.FeedState(name="debian-tracker", url="u", health="unreachable"))
    assert report.table()[0]["cves"] == "?"
    assert not [
        m for m in report.metrics() if m.name == "labops_patch_cves" and m.labels["host"] == "inner"
    ]
    assert any("inner: CVEs: osv" in u for u in report.unchecked())
    assert any("debian-tracker unreachable" in u for u in report.unchecked())
    assert report.result().outcome.value == "failed"


def test_not_configured_says_so() -> None:
    report = PatchReport(hosts=[_host("a")])
    assert "cves" not in report.table()[0]
    assert "CVE lookup: not configured" in report.markdown()


def test_exposure_from_routers() -> None:
    routers = [
        TraefikRouter(
            name="jellyfin@file", rule="Host(`jellyfin.lab.internal`)", entryPoints=["websecure"]
        ),
        TraefikRouter(name="api", rule="PathPrefix(`/x`)", service="immich@docker"),
        TraefikRouter(name="off", rule="Host(`nas.lab.internal`)", status="disabled"),
    ]
    seen = exposures(routers, ["jellyfin", "immich", "nas", "db"])
    assert seen["jellyfin"][0].line() == "jellyfin@file: Host(`jellyfin.lab.internal`) @ websecure"
    assert "immich" in seen and "nas" not in seen and "db" not in seen


def test_digest_puts_exploited_exposed_on_top() -> None:
    now = datetime.now(UTC)
    base = {"check": "found", "security": "1", "state": "updates"}
    rows = [
        {**base, "host": "web", "cves": "2 (high, KEV: CVE-3)", "exposed": "web: Host(`w`) @ a"},
        {**base, "host": "db", "cves": "1 (low, KEV: CVE-3)", "exposed": ""},
        {**base, "host": "ok", "cves": "1 (high)", "exposed": ""},
    ]
    got = labops_row_findings("patching", rows, now)
    summary = [f for f in got.findings if f.rule == "patching:kev-summary"]
    assert summary and summary[0].severity is Severity.CRITICAL
    assert summary[0].title == "exploited CVE pending on 1 exposed host(s) (+1 not exposed)"
    assert {f.entity for f in got.findings if f.rule == "patching:kev"} == {"web", "db"}


def test_approval_names_the_cves_the_plan_fixes() -> None:
    from labops.patching.report import cve_plan_line

    rows = _report().hosts
    line = cve_plan_line(rows, {"kevweb", "web", "none"})
    assert line == "- CVEs fixed by the plan: 2; known exploited (CVE-3) on kevweb (exposed)"
    rows[1].cve_unchecked = "osv: down"
    assert (cve_plan_line(rows, {"web"}) or "").endswith("CVEs unknown on 1 host(s)")
    assert cve_plan_line([_host("a")], {"a"}) is None  # no lookup ran: nothing said
    apply = _report()
    apply.mode = "apply"
    apply.hosts[0].cve_unchecked = "osv: down"
    assert apply.unchecked() == []  # apply is judged by what it patched
