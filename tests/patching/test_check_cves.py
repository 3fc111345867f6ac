"""Patch check with ``patching.cves`` on the sandbox, end to end (real SSH, PVE, Traefik, OSV,
tracker and KEV services, a real Prefect server and VictoriaMetrics): the CVEs of the sandbox's
advisories in the report, its table artifact, the digest's reading of it and the metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.patching.helpers import (
    derived_config,
    fleet_as_seeded,  # noqa: F401 (a fixture)
    report_of,
)

# The hosts checked here must have their seeded pending updates: test_apply.py patches pve1 and
# gitea in the session sandbox, and when it ran earlier on the same worker the CVE lookups had
# nothing to ask (a loaded new-user run failed on it).
pytestmark = pytest.mark.usefixtures("prefect_server", "fleet_as_seeded")


def _cves(sandbox: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    return {**cfg["patching"]["cves"], "retry": {"attempts": 1, "timeout_s": 5}}


def test_check_with_cves_kev_and_exposure(
    sandbox_clean: Any, tmp_path: Path, victoriametrics: Any
) -> None:
    from flows.patching import patch_check
    from labops.digest.sources import labops_row_findings
    from labops.scope import artifact_key
    from tasks.digest_sources import _latest_table

    sb = sandbox_clean
    sb.control("vulnfeeds", "kev_add", cves=["CVE-2025-9230"])
    try:
        cfg = derived_config(
            sb,
            tmp_path,
            systems={"victoriametrics": {"url": victoriametrics.url}},
            refresh=False,
            cves=_cves(sb),
        )
        report = report_of(patch_check(config=cfg, return_state=True))
    finally:
        sb.control("vulnfeeds", "reset")
    assert [(f.name, f.health) for f in report.cve_feeds] == [
        ("osv", "fresh"),
        ("kev", "fresh"),
        ("debian-tracker", "fresh"),
    ]
    known = [h for h in report.hosts if h.known]
    assert not [h.host for h in known if h.cve_unchecked], "every checked host's CVEs looked up"
    # the sandbox's advisories, on the hosts whose updates fix them
    debian12 = [h for h in known if h.os.startswith("debian 12") and h.security]
    assert debian12
    for h in debian12:
        fixed = {(c.package, c.cve) for c in h.cves}
        pending = {p.name for p in h.packages}
        if "libssl3" in pending:
            assert ("libssl3", "CVE-2025-9230") in fixed
    kev_hosts = [h for h in known if h.kev]
    assert kev_hosts and all(c.cve == "CVE-2025-9230" for h in kev_hosts for c in h.kev)
    # exposure from the sandbox's Traefik routers (Host(`<guest>.<domain>`) per app)
    exposed = [h for h in report.hosts if h.exposed]
    assert exposed and all("Host(`" in e for h in exposed for e in h.exposed)
    # ranking: known-exploited first, exposed before not exposed among equals
    ranked = report.ranked_cves()
    assert ranked[0][1].kev
    first_plain = next(i for i, (_, c) in enumerate(ranked) if not c.kev)
    assert all(c.kev for _, c in ranked[:first_plain])
    # report, notification
    md = report.markdown()
    assert "## CVEs fixed by pending updates" in md and "CVE-2025-9230" in md
    assert md.index("exploited CVE pending on") < md.index("| rank |")
    note = report.notification()
    assert note is not None and note.body.startswith("exploited CVE pending on")
    assert report.highest_severity.value == "critical"
    # the table artifact carries it, and the digest reads it into a top finding
    rows, created = _latest_table(artifact_key(report.lab, "patch_check", "table")) or ([], None)
    by_host = {r["host"]: r for r in rows}
    assert "KEV: CVE-2025-9230" in by_host[kev_hosts[0].host]["cves"]
    said = labops_row_findings("patching", rows, created or datetime.now(UTC))
    top = [f for f in said.findings if f.rule == "patching:kev-summary"]
    assert top and top[0].title.startswith("exploited CVE pending on")
    # metrics: per host, severity and kev; the KEV count reached VictoriaMetrics
    query = 'labops_patch_cves{kev="true"} > 0'
    series = victoriametrics.wait_for(query, len(kev_hosts), timeout=90)
    pushed = {s["metric"]["host"] for s in series if float(s["value"][1]) > 0}
    assert pushed == {h.host for h in kev_hosts}


def test_check_with_feed_faults_names_them(sandbox_clean: Any, tmp_path: Path) -> None:
    from flows.patching import patch_check

    sb = sandbox_clean
    sb.control("vulnfeeds", "kev_age", days=5)
    sb.set_faults("osv", error_rate=1.0)
    try:
        cfg = derived_config(sb, tmp_path, refresh=False, cves=_cves(sb))
        state = patch_check(config=cfg, hosts=["pve1", "gitea"], return_state=True)
    finally:
        sb.control("vulnfeeds", "reset")
    report = report_of(state)
    assert state.is_failed()  # CVEs unknown: never "no CVEs"
    feeds = {f.name: f for f in report.cve_feeds}
    assert feeds["osv"].health == "unreachable" and feeds["kev"].health == "stale"
    assert all(r["cves"] == "?" for r in report.table() if r["host"] in ("pve1", "gitea"))
    assert "osv unreachable" in report.markdown()
    assert not [m for m in report.metrics() if m.name == "labops_patch_cves"]
