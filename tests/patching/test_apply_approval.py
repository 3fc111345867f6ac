"""What an approval of patch apply shows and may change, on the sandbox and a real Prefect server
(issues 22 and 14): the plan table's CVE/KEV counts, an answer that asks for more than the plan
showed, an approval that comes after the window, and a reboot the window no longer allows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.scope import artifact_key
from tests.core.test_progress import run_artifact
from tests.journal_rules import is_mutating
from tests.patching.helpers import derived_config, guest, pending_of, report_of, run_paused_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
OPEN = [{"start": "00:00", "end": "23:59"}]
# Debian 12 versions the sandbox's OSV advisories fix: DSA-6015-1 (openssl: CVE-2025-9230 and
# CVE-2025-9232) and DEBIAN-CVE-2025-9086 (curl)
LIBSSL3 = {"name": "libssl3", "from": "3.0.16-1~deb12u1", "version": "3.0.17-1~deb12u3"}
CURL = {"name": "curl", "from": "7.88.1-10+deb12u12", "version": "7.88.1-10+deb12u14"}
TZDATA = {"name": "tzdata", "from": "2025b-0+deb12u1", "version": "2025b-0+deb12u2"}
CANDIDATES = ["listmonk", "plausible", "changedetection", "mealie", "grafana", "ntfy", "it-tools"]


@pytest.fixture(autouse=True)
def _fleet_as_seeded(sandbox: Any) -> Any:
    """These tests set what hosts have pending and upgrade them: every host of the session
    sandbox as seeded afterwards, for the tests that read the seeded lab."""
    yield
    sandbox.control("fleet", "reset", keep_faults=True)


def debian12(sandbox: Any, count: int) -> list[str]:
    """``count`` running Debian 12 containers of the sandbox (its OSes are drawn from a seed)."""
    running = {
        g["name"]
        for g in sandbox.pve().cluster.resources.get(type="vm")
        if g.get("type") == "lxc" and g.get("status") == "running"
    }
    found = [
        h
        for h in CANDIDATES
        if h in running and sandbox.control("fleet", "state", host=h)["os"] == "debian12"
    ]
    assert len(found) >= count, found
    return found[:count]


def sandbox_cves(sandbox: Any) -> dict[str, Any]:
    """The sandbox's ``patching.cves`` (OSV, tracker and KEV services), one quick try each."""
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    return {**cfg["patching"]["cves"], "retry": {"attempts": 1, "timeout_s": 5}}


def lab_of(cfg: str) -> str:
    return str(yaml.safe_load(Path(cfg).read_text())["lab"]["name"])


def answered(cfg: str, hosts: list[str], answer: dict[str, Any], **flow: Any) -> tuple[Any, Any]:
    """Patch apply on ``hosts`` (``flow``: more of its parameters), paused for approval and
    resumed with ``answer`` (``on_pause``: run while it waits); (its state, the paused run)."""
    import flows.patching as patching

    on_pause = flow.pop("on_pause", None)
    state, paused = run_paused_flow(
        lambda: patching.patch_apply(config=cfg, hosts=hosts, return_state=True, **flow),
        cfg,
        answer,
        on_pause=on_pause,
    )
    assert paused is not None, "the run must pause for approval"
    return state, paused


def closing_at_three(sandbox: Any, tmp_path: Path, **patching: Any) -> str:
    """A config whose only window is 00:30-03:00 (the tests' clock says when it is)."""
    window = [{"start": "00:30", "end": "03:00"}]
    return derived_config(sandbox, tmp_path, windows=window, refresh=False, **patching)


def test_plan_table_counts_cves_and_kev_per_host(sandbox: Any, tmp_path: Path) -> None:
    """With ``patching.cves``, the plan table published before the pause says per host how many
    CVEs its planned updates fix and how many are known exploited; a rejected plan changes
    nothing."""
    fixes, plain = debian12(sandbox, 2)
    sandbox.control("fleet", "set_pending", host=fixes, packages=[LIBSSL3, CURL, TZDATA], held=[])
    sandbox.control("fleet", "set_pending", host=plain, packages=[TZDATA], held=[])
    sandbox.control("vulnfeeds", "kev_add", cves=["CVE-2025-9230"])
    cfg = derived_config(
        sandbox, tmp_path, windows=OPEN, refresh=False, canary_count=0, cves=sandbox_cves(sandbox)
    )
    try:
        state, paused = answered(cfg, [fixes, plain], {"approve": False, "note": "CVEs first"})
    finally:
        sandbox.control("vulnfeeds", "reset")
    table = run_artifact(paused.id, artifact_key(lab_of(cfg), "patch-plan", "table"))
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    rows = {r["host"]: r for r in data}
    assert rows[fixes]["cve/kev"] == "3 CVEs, 1 KEV"
    assert rows[plain]["cve/kev"] == "0 CVEs, 0 KEV"
    report = report_of(state)
    assert report.approval == "rejected: CVEs first" and not report.applied
    assert sorted(pending_of(sandbox, fixes)) == ["curl", "libssl3", "tzdata"]


def test_approval_asking_for_all_updates_of_a_security_only_plan_is_refused(
    sandbox: Any, tmp_path: Path
) -> None:
    """The plan shows security updates only; an answer that unticks "security only" would apply
    what nobody was shown: refused, only the security update is applied, and the run's log and
    the report say so."""
    (host,) = debian12(sandbox, 1)
    sandbox.control(
        "fleet",
        "set_pending",
        host=host,
        packages=[{**LIBSSL3, "security": True}, TZDATA],
        held=[],
    )
    cfg = derived_config(
        sandbox, tmp_path, windows=OPEN, refresh=False, canary_count=0, delete_snapshots_after_h=0
    )
    answer = {"approve": True, "security_only": False}
    state, _ = answered(cfg, [host], answer, security_only=True)
    report = report_of(state)
    assert not report.failures, report.failures
    done = {a.host: a for a in report.applied}
    assert done[host].outcome == "patched" and done[host].upgraded == ["libssl3"]
    assert pending_of(sandbox, host) == ["tzdata"]  # never shown, never applied
    assert report.approval == "approved (widening refused)"
    assert report.narrowed == []
    assert report.widening_refused == [
        "all updates (the plan showed security updates only; only those are applied)"
    ]
    assert "**Refused at approval (beyond the plan shown):** all updates" in report.markdown()


def _late_clock(opened: datetime, late: Any) -> Any:
    """01:00 until ``late()`` says otherwise, then 03:30 (the window closes at 03:00)."""

    def clock() -> datetime:
        return opened + timedelta(hours=2, minutes=30) if late() else opened

    return clock


def test_approval_after_the_window_applies_nothing(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is open when the plan is shown and closed when the approval arrives (a fake
    clock moved while the run waits): nothing is applied, every planned host is reported not run
    with why, and the approval says it came too late."""
    import flows.patching as patching

    hosts = debian12(sandbox, 2)
    for h in hosts:
        sandbox.control("fleet", "set_pending", host=h, packages=[TZDATA], held=[])
    late: dict[str, int] = {}
    opened = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(patching, "now", _late_clock(opened, lambda: "mark" in late))
    cfg = closing_at_three(sandbox, tmp_path)

    def answer_late(_run: Any) -> None:
        late["mark"] = sandbox.journal_mark()

    state, _ = answered(cfg, hosts, {"approve": True}, on_pause=answer_late)
    report = report_of(state)
    why = "approved after the end: window closed at 03:00"
    assert report.approval == "approved, too late (window closed at 03:00): nothing applied"
    assert {a.host: (a.outcome, a.detail) for a in report.applied} == {
        h: ("not-run", why) for h in hosts
    }
    assert report.stopped == why
    assert state.is_failed() and f"{why}: 2 hosts not run" in [f.reason for f in report.failures]
    assert all(pending_of(sandbox, h) == ["tzdata"] for h in hosts)
    changed = [e for e in sandbox.journal(late["mark"]) if is_mutating(e)]
    assert not changed, changed[:5]
    assert f"**Stopped:** {why}" in report.markdown()


def test_reboot_the_window_no_longer_allows_is_left_for_later(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Ubuntu container whose libc6 upgrade asks for a reboot; the window closes once it is
    patched (a fake clock): the container is not rebooted, the host and the report say the
    reboot was left for later, and the run ends with that as a finding."""
    import flows.patching as patching

    sandbox.control("fleet", "set_pending", host="traefik", packages=[{"name": "libc6"}])
    opened = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(
        patching, "now", _late_clock(opened, lambda: not pending_of(sandbox, "traefik"))
    )
    cfg = closing_at_three(
        sandbox, tmp_path, canary_count=0, reboot="when-required", delete_snapshots_after_h=0
    )
    node, vmid = guest(sandbox, "traefik")
    mark = sandbox.journal_mark()
    state, _ = answered(cfg, ["traefik"], {"approve": True})
    report = report_of(state)
    assert not report.failures, report.failures
    (row,) = report.applied
    assert row.outcome == "patched" and not row.rebooted
    assert row.reboot_left == "window closed at 03:00"
    assert row.detail.endswith("reboot left for later: window closed at 03:00")
    assert "traefik: reboot left for later (window closed at 03:00)" in report.skipped
    assert sandbox.control("fleet", "state", host="traefik")["reboot_required"]
    reboots = [
        e
        for e in sandbox.journal(mark, system="pve")
        if e.get("path", "").endswith(f"/lxc/{vmid}/status/reboot")
    ]
    assert not reboots, reboots
    assert sandbox.pve().nodes(node).lxc(vmid).status.current.get()["status"] == "running"
    assert state.name == "Findings"
    assert [f.kind for f in report.found()] == [
        "patched host(s) still needing a reboot (left for later)"
    ]


def test_node_reboot_longer_than_the_window_left_is_left_for_later(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """02:55, the window closes at 03:00 and a node's reboot may take 10 min
    (``node_boot_timeout_s``): the node is upgraded, its new kernel waits for a later reboot,
    and the run says so."""
    import flows.patching as patching

    opened = datetime.now(UTC).replace(hour=2, minute=55, second=0, microsecond=0)
    monkeypatch.setattr(patching, "now", lambda: opened)
    cfg = closing_at_three(
        sandbox, tmp_path, reboot="when-required", node_boot_timeout_s=600, step_estimate_s=60
    )
    state, _ = answered(cfg, ["pve1"], {"approve": True})
    report = report_of(state)
    assert not report.failures, report.failures
    (row,) = report.applied
    assert row.outcome == "patched" and not row.rebooted
    assert row.reboot_left == (
        "window closes at 03:00, sooner than a node's reboot (node_boot_timeout_s) may take "
        "(10 min)"
    )
    after = sandbox.control("fleet", "state", host="pve1")
    assert not after["pending"] and after["kernel_running"] < max(after["kernels"])
    assert not report.drains and state.name == "Findings"


HOSTILE = [
    "![x](http://evil.example/p.png)",
    "<img src=x onerror=alert(1)>",
    "pve9\n## Approved by root",
    *[f"ghost-{n}" for n in range(40)],
]


def test_excluded_hosts_the_plan_never_showed_are_ignored_bounded_and_inert(
    sandbox: Any, tmp_path: Path
) -> None:
    """The approval form is input from outside: names in ``exclude_hosts`` that the plan never
    showed exclude nothing and are never echoed as they came. The report (its markdown, the
    notification sent from it, its skipped list) says "unknown hosts ignored" once, with at
    most three names made inert and the rest counted; the excluded host of the plan is named."""
    kept, left_out = debian12(sandbox, 2)
    for host in (kept, left_out):
        sandbox.control(
            "fleet", "set_pending", host=host, packages=[{**LIBSSL3, "security": True}], held=[]
        )
    cfg = derived_config(
        sandbox, tmp_path, windows=OPEN, refresh=False, canary_count=0, delete_snapshots_after_h=0
    )
    answer = {"approve": True, "exclude_hosts": [left_out, *HOSTILE, left_out]}
    state, _ = answered(cfg, [kept, left_out], answer)
    report = report_of(state)
    assert [a.host for a in report.applied] == [kept], report.applied
    assert pending_of(sandbox, left_out) == ["libssl3"]
    unknown = (
        "unknown hosts ignored (not in the plan): '??x??http???evil.example?p.png?', "
        "'?img?src?x?onerror?alert?1??', 'pve9????Approved?by?root' (and 40 more)"
    )
    assert report.narrowed == [f"hosts excluded: {left_out}", unknown]
    assert report.skipped == [f"{left_out}: excluded at approval"]
    notification = report.notification()
    assert notification is not None
    for text in (report.markdown(), notification.body, "\n".join(report.skipped)):
        assert "evil.example/" not in text and "<img" not in text and "ghost-" not in text
        assert "## Approved" not in text


def test_guest_reboot_longer_than_the_window_left_is_left_for_later(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """02:55, the window closes at 03:00 and a guest's reboot may take 10 min
    (``guest_boot_allowance_s``): the container is upgraded, its reboot waits for later (no
    reboot request sent), and the run says so as it does for a node."""
    import flows.patching as patching

    sandbox.control("fleet", "set_pending", host="traefik", packages=[{"name": "libc6"}])
    opened = datetime.now(UTC).replace(hour=2, minute=55, second=0, microsecond=0)
    monkeypatch.setattr(patching, "now", lambda: opened)
    cfg = closing_at_three(
        sandbox,
        tmp_path,
        canary_count=0,
        reboot="when-required",
        guest_boot_allowance_s=600,
        step_estimate_s=60,
        delete_snapshots_after_h=0,
    )
    _node, vmid = guest(sandbox, "traefik")
    mark = sandbox.journal_mark()
    state, _ = answered(cfg, ["traefik"], {"approve": True})
    report = report_of(state)
    assert not report.failures, report.failures
    (row,) = report.applied
    why = (
        "window closes at 03:00, sooner than a guest's reboot (guest_boot_allowance_s) may take "
        "(10 min)"
    )
    assert row.outcome == "patched" and not row.rebooted
    assert row.reboot_left == why
    assert f"traefik: reboot left for later ({why})" in report.skipped
    reboots = [
        e
        for e in sandbox.journal(mark, system="pve")
        if e.get("path", "").endswith(f"/lxc/{vmid}/status/reboot")
    ]
    assert not reboots, reboots
    assert state.name == "Findings"
