"""The reconciliation's decisions without I/O: claims of the docs, live facts by source, what a
missing source means, ignored guests, the patch (refused with a secret in it), the fix branch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from labops.config.policies.docs import DocsPolicy
from labops.docs import reconcile
from labops.docs.models import LiveFacts, LiveGuest, LiveRouter, Status
from labops.docs.report import DocReport
from labops.redact import register_secret

DOC = "# Lab\n\nThe lab runs on 2 Proxmox nodes and 1 LXC containers.\n"


def live_lab() -> LiveFacts:
    live = LiveFacts()
    guests = [
        LiveGuest(vmid=100, name="dns", node="pve1", type="lxc"),
        LiveGuest(vmid=900, name="scratch", node="pve2", type="lxc"),
    ]
    reconcile.record(live, "proxmox", (["pve1", "pve2"], guests, "9.1"))
    reconcile.record(live, "beszel", ["pve1"])
    return live


def test_each_source_answer_lands_in_its_facts() -> None:
    live = live_lab()
    assert live.nodes == ["pve1", "pve2"] and live.pve_version == "9.1"
    assert live.guests is not None and len(live.guests) == 2
    assert live.beszel_systems == ["pve1"] and live.routers is None


def test_a_failed_source_is_a_failure_an_unconfigured_one_only_listed() -> None:
    live = LiveFacts(unavailable={"traefik": "not configured", "beszel": "failed: 502"})
    report = DocReport()
    reconcile.note_unavailable(report, live)
    assert report.skipped == ["traefik: not configured", "beszel: failed: 502"]
    assert [(f.entity, f.reason) for f in report.failures] == [("beszel", "failed: 502")]


def test_drift_is_judged_patched_and_ignored_guests_are_not_undocumented() -> None:
    claims = reconcile.documented_claims({"lab.md": DOC}, [])
    report = DocReport()
    reconcile.judge(report, claims, live_lab(), [900])
    assert {v.claim.subject: v.status for v in report.verdicts}["LXC containers"] is Status.DRIFTED
    assert [u.entity for u in report.undocumented] == ["CT 100 dns on pve1"]  # not CT 900
    patched = reconcile.propose_patch(report, {"lab.md": DOC})
    assert "2 LXC containers" in patched["lab.md"] and report.diff.startswith("---")


def test_a_patch_holding_a_secret_is_refused_whole() -> None:
    secret = "s3cr3t-token-pasted-into-a-doc"
    register_secret(secret)
    doc = f"The lab runs on 2 Proxmox nodes and 1 LXC containers. token {secret}\n"
    report = DocReport()
    reconcile.judge(report, reconcile.documented_claims({"lab.md": doc}, []), live_lab(), [])
    assert reconcile.propose_patch(report, {"lab.md": doc}) == {} and report.diff == ""
    assert [f.entity for f in report.failures] == ["proposed patch"]


def test_the_fix_branch_names_the_day_and_the_checked_commit() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert reconcile.fix_branch("labops/doc-drift-", "0123456789abcdef", now) == (
        "labops/doc-drift-20261205-01234567"
    )
    assert reconcile.fix_branch("fix-", None, now) == "fix-20261205-x"


def test_undocumented_things_are_grouped_by_kind_and_ignorable_per_kind() -> None:
    live = live_lab()
    live.routers = [
        LiveRouter(name=f"r{i}@docker", hosts=[f"app{i}.lab.internal"], tls=True) for i in range(3)
    ]
    claims = reconcile.documented_claims({"lab.md": DOC}, [])
    report = DocReport(lab="t")
    reconcile.judge(report, claims, live, [])
    assert sorted({u.kind for u in report.undocumented}) == ["guest", "router"]
    md = report.markdown()
    assert "2 proxmox guest(s) not mentioned" in md and "3 traefik router(s) not mentioned" in md
    policy = DocsPolicy.model_validate({"ignore_undocumented": ["router"]})
    reconcile.judge(report, claims, live, [], policy.ignore_undocumented)
    assert [u.kind for u in report.undocumented] == ["guest", "guest"]
    assert "router(s) not mentioned" not in report.markdown()
    with pytest.raises(ValidationError):
        DocsPolicy.model_validate({"ignore_undocumented": ["vm"]})  # not a kind: refused
