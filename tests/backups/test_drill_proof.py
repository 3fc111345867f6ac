"""Restore drills that prove the service: the in-guest checks (config and tags), the recovery
time against the guest's recent drills, the rotation; then on the sandbox, through the real
flow: a healthy drill with its recovery times, an in-guest check that fails (a port nobody
listens on, an HTTP path answering 503), a boot that is not healthy (a failed unit), a guest
that cannot be checked (no SSH for pct exec), an RTO regression, and the coverage report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from labops.backups.drill_proof import (
    DrillTimes,
    check_script,
    coverage,
    guest_checks,
    healthy_boot_script,
    rto_regression,
)
from labops.backups.models import BackupGuest
from labops.backups.report import RestoreDrillReport
from labops.config.policies.drill_checks import GuestCheck
from labops.outcome import Outcome
from tests.backups.test_drill import config as base_config
from tests.fixtures.sandbox import SandboxHandle

DAY = 86400.0


def guest(vmid: int, *tags: str, name: str = "") -> BackupGuest:
    return BackupGuest(vmid=vmid, name=name or f"g{vmid}", node="pve1", type="lxc", tags=list(tags))


# -- pure ---------------------------------------------------------------------------------------


def test_a_check_is_complete_and_its_path_cannot_add_a_command() -> None:
    with pytest.raises(ValidationError, match="needs a port"):
        GuestCheck(kind="tcp")
    with pytest.raises(ValidationError, match="needs a command"):
        GuestCheck(kind="command")
    with pytest.raises(ValidationError, match="path"):
        GuestCheck(kind="http", port=80, path="/x'; reboot; '")
    with pytest.raises(ValidationError, match="path"):
        GuestCheck(kind="http", port=80, path="/a b")
    script = check_script(GuestCheck(kind="http", port=8080, path="/health?full=1"), 5)
    assert "'http://127.0.0.1:8080/health?full=1'" in script


def test_checks_come_from_the_command_the_config_and_the_tags_each_once() -> None:
    configured = {101: [GuestCheck(kind="tcp", port=5432), GuestCheck(kind="http", port=80)]}
    checks = guest_checks(
        guest(101, "drill-tcp-5432", "drill-http-8123", "drill-tcp-99999", "prod"),
        configured,
        command="true",
    )
    assert [c.label for c in checks] == [
        "command 'true'",
        "tcp 5432 listening",
        "http 127.0.0.1:80/",
        "http 127.0.0.1:8123/",
    ]
    assert guest_checks(guest(102), configured) == []


def test_the_healthy_boot_script_knows_systemd_and_openrc_and_says_when_neither() -> None:
    script = healthy_boot_script(42.7)
    assert "timeout 42 systemctl is-system-running --wait" in script
    assert "rc-status --crashed" in script and "rc-status --runlevel" in script
    assert script.endswith("exit 3")


def test_rto_regression_is_above_the_median_of_recent_passed_drills_by_the_margin() -> None:
    assert rto_regression(100, [], 0.5, 3) == (None, None)
    base, why = rto_regression(150, [1000, 100, 90, 110], 0.5, 3)
    assert base == 100 and why is None  # exactly +50%: not above it
    base, why = rto_regression(151, [1000, 100, 90, 110], 0.5, 3)
    assert base == 100 and why is not None and "51% above its baseline of 100s" in why


def test_coverage_lists_the_overdue_oldest_first_and_the_next_due() -> None:
    now = 1000 * DAY
    scope = [guest(v) for v in (101, 102, 103, 104)]
    last = {101: now - 10 * DAY, 102: now - 100 * DAY, 104: now - 89 * DAY, 999: now}
    cov = coverage(scope, last, now, 90 * DAY, shown=3)
    assert (cov.in_scope, cov.drilled, cov.percent) == (4, 2, 50.0)
    assert [g.vmid for g in cov.overdue] == [103, 102]  # never drilled first
    assert [g.vmid for g in cov.next_due] == [103, 102, 104]
    assert cov.next_due[2].due == pytest.approx(now + DAY)
    assert cov.pace_per_week == pytest.approx(4 / (90 / 7))


def test_report_a_regression_and_overdue_guests_are_findings_could_not_check_fails() -> None:
    report = RestoreDrillReport(vmid=101, name="db", ok=True)
    report.times = DrillTimes(restore_s=10, boot_s=5, rto_s=20)
    report.rto_regression = "recovery took 20s, 100% above its baseline of 10s"
    report.coverage = coverage([guest(101), guest(102)], {101: 0.0}, 10 * DAY, 90 * DAY)
    assert report.result().outcome == Outcome.FINDINGS
    assert [f.line() for f in report.found()] == [
        "warning: guest 101 (db): recovery took 20s, 100% above its baseline of 10s",
        "warning: 1 guest(s) not drilled within 90d: 102 g102",
    ]
    names = {(m.name, m.labels.get("phase")) for m in report.metrics()}
    assert {("labops_drill_rto_seconds", p) for p in ("restore", "boot", "total")} <= names
    assert ("labops_drill_coverage_ratio", None) in names
    text = report.markdown()
    assert "## Recovery time" in text and "REGRESSION" in text and "## Rotation" in text
    note = report.notification()
    assert note is not None and note.title.endswith("findings") and "REGRESSION" not in note.body
    assert note.payload["rto_regression"] == report.rto_regression
    report.not_checked.append("healthy boot (pct exec needs systems.ssh)")
    assert report.result().outcome == Outcome.FAILED
    note = report.notification()
    assert note is not None and note.title.endswith("FAILED")
    assert "- could not check healthy boot (pct exec needs systems.ssh)" in note.body


# -- on the sandbox, through the flow -----------------------------------------------------------


VMID, HOST = 100, "dns-primary"  # a Debian container whose main service (dns) listens on 53


def config(sandbox: SandboxHandle, directory: Path, ssh: bool = True, **drill: Any) -> str:
    """test_drill's config, on a scratch range of its own, drilling the one guest."""
    path = base_config(
        sandbox,
        directory,
        boot_wait=10,
        scratch_vmid_min=9910,
        scratch_vmid_max=9919,
        **{"guests": [VMID], **drill},
    )
    if not ssh:
        cfg = yaml.safe_load(Path(path).read_text())
        cfg["systems"].pop("ssh", None)
        Path(path).write_text(yaml.safe_dump(cfg))
    return path


def drill(cfg: str, vmid: int = VMID) -> tuple[Any, RestoreDrillReport]:
    from flows.restore_drill import restore_drill

    state = restore_drill(config=cfg, vmid=vmid, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RestoreDrillReport), report
    return state, report


def vmids(sandbox: SandboxHandle) -> set[int]:
    return {int(g["vmid"]) for g in sandbox.pve().cluster.resources.get(type="vm")}


def test_drill_proves_the_service_and_measures_the_recovery(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    checks = {VMID: [{"kind": "tcp", "port": 53}, {"kind": "command", "command": "hostname"}]}
    cfg = config(sandbox_clean, tmp_path, checks=checks)
    before = vmids(sandbox_clean)
    state, report = drill(cfg)
    assert state.is_completed() and report.ok, report.markdown()
    assert report.checks == {
        "running": True,
        "healthy boot": True,
        "tcp 53 listening": True,
        "command 'hostname'": True,
    }
    t = report.times
    assert t.restore_s is not None and t.boot_s is not None and t.rto_s is not None
    assert 0 < t.restore_s < t.rto_s and 0 < t.boot_s < t.rto_s
    assert report.rto_baseline_s is None and report.rto_regression is None  # first drill
    assert report.coverage is not None and report.coverage.in_scope == 1
    assert report.coverage.drilled == 1 and not report.coverage.overdue
    assert vmids(sandbox_clean) == before
    history = json.loads((tmp_path / "state" / "restore-drills.json").read_text())
    assert history["rtos"][str(VMID)] == [pytest.approx(t.rto_s)]
    assert history["last"][str(VMID)]["times"]["rto_s"] == pytest.approx(t.rto_s)

    # The same guest, its recent drills recorded as far faster: a regression, a finding.
    history["rtos"][str(VMID)] = [0.01, 0.01, 0.01]
    (tmp_path / "state" / "restore-drills.json").write_text(json.dumps(history))
    state, report = drill(cfg)
    assert state.is_completed() and state.name == "Findings", report.markdown()
    assert report.ok and report.rto_baseline_s == pytest.approx(0.01)
    assert report.rto_regression and "above its baseline of 0s" in report.rto_regression
    assert report.result().outcome == Outcome.FINDINGS
    assert vmids(sandbox_clean) == before


def test_a_failing_in_guest_check_fails_the_drill_and_every_check_still_runs(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    checks = {
        VMID: [
            {"kind": "tcp", "port": 5432},  # nothing listens there
            {"kind": "tcp", "port": 53},
            {"kind": "command", "command": "grep -q nothing-like-this /etc/hostname"},
            {"kind": "http", "port": 8080, "path": "/"},
            {"kind": "http", "port": 8080, "path": "/health"},
        ]
    }
    cfg = config(sandbox_clean, tmp_path, checks=checks)
    before = vmids(sandbox_clean)
    web = {"extra_ports": {HOST: [8080]}, "http_status": {HOST: {"8080/health": 503}}}
    sandbox_clean.set_faults("fleet", extra=web)
    state, report = drill(cfg)
    assert state.is_failed() and not report.ok
    reason = report.failures[0].reason
    assert report.checks["healthy boot"] is True
    assert report.checks["tcp 5432 listening"] is False
    assert report.checks["tcp 53 listening"] is True
    assert report.checks["command 'grep -q nothing-like-this /etc/hostname'"] is False
    assert report.checks["http 127.0.0.1:8080/"] is True
    assert report.checks["http 127.0.0.1:8080/health"] is False
    assert "returned error: 503" in reason
    assert reason.startswith("in-guest check(s) failed: tcp 5432 listening (exit 1")
    assert "nothing listens on 5432" in reason
    assert report.times.rto_s is None  # a drill that failed has no recovery time
    assert vmids(sandbox_clean) == before  # the scratch guest is destroyed all the same
    history = json.loads((tmp_path / "state" / "restore-drills.json").read_text())
    assert history["rtos"] == {} and history["last"][str(VMID)]["ok"] is False


def test_an_unhealthy_boot_fails_the_drill_naming_the_failed_state(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    cfg = config(sandbox_clean, tmp_path)
    host = sandbox_clean.control("fleet", "state", host=HOST)
    services = dict(host["services"])
    broken = {**services, "cron.service": "failed"}
    sandbox_clean.control("fleet", "patch_state", host=HOST, set={"services": broken})
    try:
        state, report = drill(cfg)
    finally:
        sandbox_clean.control("fleet", "patch_state", host=HOST, set={"services": services})
    assert state.is_failed()
    assert report.checks["healthy boot"] is False
    assert "not a healthy boot: degraded" in report.failures[0].reason


def test_a_container_without_ssh_is_could_not_check_never_passed(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    cfg = config(sandbox_clean, tmp_path, ssh=False)
    state, report = drill(cfg)
    assert state.is_failed() and not report.ok
    assert "healthy boot" not in report.checks
    assert report.not_checked == ["healthy boot (pct exec needs systems.ssh)"]
    assert report.unchecked() == [
        f"guest {VMID} ({HOST}): could not check healthy boot (pct exec needs systems.ssh)"
    ]


def test_a_vm_drills_like_a_container_through_its_guest_agent(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    vm = min(
        int(g["vmid"])
        for g in sandbox_clean.pve().cluster.resources.get(type="vm")
        if g["type"] == "qemu" and not g.get("template") and int(g["vmid"]) < 9900
    )
    checks = {vm: [{"kind": "tcp", "port": 8080}, {"kind": "tcp", "port": 5432}]}
    cfg = config(sandbox_clean, tmp_path, guests=[vm], checks=checks)
    before = vmids(sandbox_clean)
    mark = sandbox_clean.journal_mark()
    state, report = drill(cfg, vm)
    assert report.vmid == vm and state.is_failed(), report.markdown()
    assert report.checks == {
        "running": True,
        "healthy boot": True,
        "tcp 8080 listening": True,
        "tcp 5432 listening": False,
    }
    assert "nothing listens on 5432" in report.failures[0].reason
    scratch = report.scratch_vmid
    execs = [
        e
        for e in sandbox_clean.journal(mark, system="pve")
        if e["path"] == f"/nodes/{report.node}/qemu/{scratch}/agent/exec"
    ]
    assert len(execs) == 3 and all(e["args"]["command"][:2] == ["/bin/sh", "-c"] for e in execs)
    assert vmids(sandbox_clean) == before


def test_an_alpine_container_proves_itself_with_openrc_and_busybox_tools(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    vmid, host = 109, "beszel"  # Alpine 3.20: OpenRC, busybox netstat and wget, no ss or curl
    # the Beszel hub listens on 8090
    checks = {vmid: [{"kind": "tcp", "port": 8090}, {"kind": "http", "port": 8090}]}
    cfg = config(sandbox_clean, tmp_path, guests=[vmid], checks=checks)
    state, report = drill(cfg, vmid)
    assert state.is_completed() and report.ok, report.markdown()
    passed = ("running", "healthy boot", "tcp 8090 listening", "http 127.0.0.1:8090/")
    assert report.checks == dict.fromkeys(passed, True)
    assert "runlevel" not in " ".join(report.steps)  # default reached: nothing to say

    services = dict(sandbox_clean.control("fleet", "state", host=host)["services"])
    crashed = {**services, "cron": "crashed"}
    sandbox_clean.control("fleet", "patch_state", host=host, set={"services": crashed})
    try:
        state, report = drill(cfg, vmid)
    finally:
        sandbox_clean.control("fleet", "patch_state", host=host, set={"services": services})
    assert state.is_failed() and report.checks["healthy boot"] is False
    assert report.failures[0].reason == "not a healthy boot: crashed:\ncron"
