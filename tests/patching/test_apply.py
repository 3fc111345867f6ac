"""Patch apply mode on the sandbox: approval through the Prefect API, window, canaries,
snapshots and rollback through the PVE API, node reboots, killed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.patching.helpers import derived_config, guest, pending_of, report_of, run_paused_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
REPO = Path(__file__).resolve().parents[2]
OPEN = [
    {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
]


def snapshots_of(sandbox: Any, node: str, vmid: int) -> list[str]:
    snaps = sandbox.pve().nodes(node).lxc(vmid).snapshot.get()
    return [s["name"] for s in snaps if s["name"] != "current"]


def test_refused_outside_the_window(sandbox: Any, tmp_path: Path) -> None:
    from flows.patching import patch_apply

    now = datetime.now(UTC)
    closed = [
        {
            "start": (now + timedelta(hours=2)).strftime("%H:%M"),
            "end": (now + timedelta(hours=3)).strftime("%H:%M"),
            "timezone": "Europe/Paris",
        }
    ]
    cfg = derived_config(sandbox, tmp_path, windows=closed)
    before = pending_of(sandbox, "postgres")
    state = patch_apply(config=cfg, hosts=["postgres"], return_state=True)
    assert state.is_failed()
    report = report_of(state)
    assert "outside the maintenance window" in report.failures[0].reason
    assert not report.applied and pending_of(sandbox, "postgres") == before


def test_reject_changes_nothing(sandbox: Any, tmp_path: Path) -> None:
    from flows.patching import patch_apply

    cfg = derived_config(sandbox, tmp_path, windows=OPEN, refresh=False)
    before = pending_of(sandbox, "dns-primary")
    state, paused = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=["dns-primary"], return_state=True),
        cfg,
        {"approve": False, "note": "not today"},
    )
    assert paused is not None, "the flow must pause for approval"
    report = report_of(state)
    assert report.approval == "rejected: not today"
    assert not report.applied and pending_of(sandbox, "dns-primary") == before


def test_approve_narrowed_canary_first_snapshot_and_rerun(sandbox: Any, tmp_path: Path) -> None:
    """Approved with one host excluded and security only; canary first, snapshots named for
    the run and deleted after (keep time 0); a re-run finds nothing to do and does not pause."""
    from flows.patching import patch_apply

    hosts = ["step-ca", "semaphore", "minio", "stirling-pdf"]
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canaries=["step-ca"],
        batch_size=2,
        delete_snapshots_after_h=0,
    )
    excluded_before = pending_of(sandbox, "stirling-pdf")
    state, paused = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True),
        cfg,
        {"approve": True, "exclude_hosts": ["stirling-pdf"], "security_only": True},
    )
    assert paused is not None
    report = report_of(state)
    assert not report.failures, report.failures
    assert report.approval and report.approval.startswith("approved (narrowed)")
    done = {a.host: a for a in report.applied}
    assert set(done) == {"step-ca", "semaphore", "minio"}
    assert done["step-ca"].phase == "canary" and report.applied[0].host == "step-ca"
    assert all(a.outcome == "patched" and a.snapshot for a in report.applied)
    assert done["step-ca"].finished <= min(done[h].started for h in ("semaphore", "minio"))
    # security only: the non-security updates stay pending; the excluded host is untouched
    node, vmid = guest(sandbox, "minio")
    left = sandbox.control("fleet", "state", host="minio")["pending"]
    assert left and not any(p["security"] for p in left.values())
    assert pending_of(sandbox, "stirling-pdf") == excluded_before
    assert snapshots_of(sandbox, node, vmid) == []  # deleted at once (keep time 0)
    assert len(report.deleted_snapshots) == 3
    # re-run: nothing left to apply in security-only mode -> no pause, nothing upgraded twice
    cfg2 = derived_config(sandbox, tmp_path, windows=OPEN, refresh=False, security_only=True)
    state2, paused2 = run_paused_flow(
        lambda: patch_apply(config=cfg2, hosts=hosts[:3], return_state=True), cfg2, None
    )
    assert paused2 is None
    report2 = report_of(state2)
    assert report2.approval == "nothing to apply" and not report2.applied


def test_canary_failure_rolls_back_and_stops(sandbox_clean: Any, tmp_path: Path) -> None:
    from flows.patching import patch_apply

    sb = sandbox_clean
    hosts = ["wikijs", "open-webui", "litellm"]
    cfg = derived_config(
        sb, tmp_path, windows=OPEN, refresh=False, canaries=["wikijs"], delete_snapshots_after_h=0
    )
    sb.set_faults("fleet", extra={"failing_upgrade_hosts": ["wikijs"]})
    before = {h: pending_of(sb, h) for h in hosts}
    state, _ = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True), cfg, {"approve": True}
    )
    assert state.is_failed()
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["wikijs"].outcome == "rolled-back" and done["wikijs"].rolled_back
    assert "dpkg failed" in done["wikijs"].detail or "exit" in done["wikijs"].detail
    assert report.stopped and "canary" in report.stopped
    assert {done["open-webui"].outcome, done["litellm"].outcome} == {"not-run"}
    # the rollback restored the container's package state; the others were never touched
    assert {h: pending_of(sb, h) for h in hosts} == before
    # the rolled-back host keeps its snapshot for the operator, and the next run reports it
    node, vmid = guest(sb, "wikijs")
    assert any(s.startswith("labops-patch-") for s in snapshots_of(sb, node, vmid))


def test_failed_and_broken_hosts_rolled_back_backup_locked_skipped(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    from flows.patching import patch_apply

    sb = sandbox_clean
    hosts = ["mqtt", "postgres", "calibre-web", "victoriametrics"]
    cfg = derived_config(
        sb,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        max_failures=5,
        max_fail_ratio=1.0,
        batch_size=4,
        per_node_parallel=4,
        delete_snapshots_after_h=0,
        health_by_host={"postgres": {"services": ["postgresql"]}},
    )
    _, locked = guest(sb, "victoriametrics")
    sb.set_faults(
        "fleet",
        extra={"failing_upgrade_hosts": ["mqtt"], "broken_after_upgrade_hosts": ["postgres"]},
    )
    sb.set_faults("pve", extra={"locked_vmids": {str(locked): "backup"}})
    try:
        state, _ = run_paused_flow(
            lambda: patch_apply(config=cfg, hosts=hosts, return_state=True), cfg, {"approve": True}
        )
    finally:
        sb.set_faults("pve", extra={})
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["mqtt"].outcome == "rolled-back"
    assert done["postgres"].outcome == "rolled-back" and "services" in done["postgres"].detail
    assert done["calibre-web"].outcome == "patched"
    assert (
        done["victoriametrics"].outcome == "skipped"
        and "backed up" in done["victoriametrics"].detail
    )
    assert report.stopped is None
    assert {f.entity for f in report.failures} == {"host mqtt", "host postgres"}


def test_dry_run_changes_nothing(sandbox: Any, tmp_path: Path) -> None:
    """A dry run simulates and changes nothing; it names the excluded packages held back."""
    from flows.patching import patch_apply

    hosts = ["paperless", "immich"]
    before = {h: pending_of(sandbox, h) for h in hosts}
    assert len(before["immich"]) > 1
    kept = before["immich"][-1]
    cfg = derived_config(  # dry runs ignore the window
        sandbox, tmp_path, refresh=False, exclusions={"packages": [kept]}
    )
    report = report_of(patch_apply(config=cfg, dry_run=True, hosts=hosts, return_state=True))
    sims = {a.host: a for a in report.applied}
    assert {a.outcome for a in sims.values()} == {"simulated"}
    assert "Inst " in (sims["paperless"].simulation or "")
    assert "Upgrading" in (sims["immich"].simulation or "")
    assert sims["immich"].held_back == [kept] and sims["paperless"].held_back == []
    text = report.markdown()
    would = len(before["immich"]) - 1  # the simulation lists the excluded package; not counted
    assert f"immich: simulated, would upgrade {would}, held back: {kept}" in text
    section = "## Excluded packages left pending (patching.exclusions.packages)"
    assert f"{section}\n- immich: {kept}" in text
    assert {h: pending_of(sandbox, h) for h in hosts} == before


def test_nodes_last_one_at_a_time_rebooted_and_waited_for(sandbox: Any, tmp_path: Path) -> None:
    """Containers first; then each node alone: dist-upgrade, reboot (new kernel), and the next
    node starts only once the previous one is back with its guests running."""
    from prefect.input import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    from flows.patching import patch_apply

    hosts = ["pve1", "pve4", "ntfy"]
    # pve4 gets two more updates: pve-qemu-kvm (excluded) and lxc-pve (excluded and held by the
    # operator); its dist-upgrade must leave both at their versions and only lxc-pve held.
    st = sandbox.control("fleet", "state", host="pve4")
    pending = [{"name": n, **p} for n, p in st["pending"].items()]
    pending += [
        {"name": "pve-qemu-kvm", "from": "10.0.2-4", "version": "10.1.2-1", "pve": True},
        {"name": "lxc-pve", "from": "6.0.5-1", "version": "6.0.5-2", "pve": True},
    ]
    sandbox.control("fleet", "set_pending", host="pve4", packages=pending, held=["lxc-pve"])
    others = sorted(n for n in st["pending"] if n not in ("pve-qemu-kvm", "lxc-pve"))
    assert others
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        reboot="when-required",
        delete_snapshots_after_h=0,
        node_boot_timeout_s=60,
        # ceph-common is not installed: holding it would fail the upgrade
        exclusions={"packages": ["pve-qemu-kvm", "lxc-pve", "ceph-common"]},
    )
    state, paused = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True),
        cfg,
        {"approve": True},
        timeout=120,
    )
    report = report_of(state)
    assert not report.failures, report.failures
    done = {a.host: a for a in report.applied}
    nodes = [a for a in report.applied if a.kind == "node"]
    assert [a.host for a in nodes] == ["pve1", "pve4"]
    assert all(a.outcome == "patched" and a.rebooted for a in nodes)
    assert done["ntfy"].finished <= nodes[0].started  # containers before nodes
    assert nodes[0].finished <= nodes[1].started  # never two nodes at once
    for node in ("pve1", "pve4"):
        after = sandbox.control("fleet", "state", host=node)
        assert after["kernel_running"] == max(after["kernels"])
    assert not sandbox.control("fleet", "state", host="pve1")["pending"]
    st = sandbox.control("fleet", "state", host="pve4")
    # the excluded packages stayed back, everything else was upgraded, only the operator's hold
    # is left
    assert sorted(st["pending"]) == ["lxc-pve", "pve-qemu-kvm"]
    assert st["packages"]["pve-qemu-kvm"][0] == "10.0.2-4"
    assert st["packages"]["lxc-pve"][0] == "6.0.5-1"
    assert sorted(done["pve4"].upgraded) == others
    assert st["held"] == ["lxc-pve"]
    # the plan shown for approval and the report say what stayed back where
    shown = str(
        read_flow_run_input(
            keyset_from_paused_state(paused.state)["description"], flow_run_id=paused.id
        )
    )
    assert "pve4 (" in shown and "; held back: lxc-pve, pve-qemu-kvm)" in shown
    assert done["pve4"].held_back == ["lxc-pve", "pve-qemu-kvm"] and not done["pve1"].held_back
    assert "- pve4: lxc-pve, pve-qemu-kvm" in report.markdown()
    pve = sandbox.pve()
    assert all(n["status"] == "online" for n in pve.nodes.get() if n["node"] != "pve3")


def test_killed_mid_batch_then_rerun(
    sandbox_clean: Any, tmp_path: Path, prefect_server: Any
) -> None:
    """The flow process is killed while one host of a batch hangs in its upgrade: the re-run
    upgrades no host twice and reports the snapshot the killed run left behind."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from flows.patching import patch_apply

    sb = sandbox_clean
    hosts = ["gitea", "actual", "agent-sec"]
    cfg = derived_config(
        sb,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        batch_size=3,
        per_node_parallel=3,
        delete_snapshots_after_h=0,
    )
    # The killed run runs under a lab name of its own: its maintenance slot
    # (labops-<lab.name>-maintenance-slot) is a lease Prefect frees a minute after the kill, and
    # the re-run (and the tests after this one) must not wait for it.
    killed_cfg = tmp_path / "killed.yaml"
    raw = yaml.safe_load(Path(cfg).read_text())
    raw["lab"]["name"] = "killed-patch-run"
    killed_cfg.write_text(yaml.safe_dump(raw))
    sb.set_faults("fleet", extra={"hanging_commands": {"agent-sec": "dist-upgrade"}})
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom flows.patching import patch_apply\n"
        "patch_apply(config=sys.argv[1], hosts=sys.argv[2].split(','))\n"
    )
    env = dict(os.environ, PREFECT_API_URL=prefect_server.api_url, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed_cfg), ",".join(hosts)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        resumed = False
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not resumed:
                for run in client.read_flow_runs():
                    killed = run.parameters.get("config") == str(killed_cfg)
                    if killed and run.state and run.state.is_paused():
                        resume_flow_run(run.id, run_input={"approve": True})
                        resumed = True
                time.sleep(0.3)
        assert resumed
        while time.monotonic() < deadline:
            if not pending_of(sb, "gitea") and not pending_of(sb, "actual"):
                break
            time.sleep(0.3)
        assert not pending_of(sb, "gitea") and not pending_of(sb, "actual")
        assert pending_of(sb, "agent-sec"), "the hanging host must not have upgraded"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    node, vmid = guest(sb, "agent-sec")
    left = [s for s in snapshots_of(sb, node, vmid) if s.startswith("labops-patch-")]
    assert left, "the killed run snapshotted the hanging host before upgrading it"
    sb.reset_faults()
    state, _ = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True), cfg, {"approve": True}
    )
    report = report_of(state)
    assert [a.host for a in report.applied] == ["agent-sec"]  # the others are clean already
    assert report.applied[0].outcome == "patched"
    assert any("agent-sec" in s and left[0] in s for s in report.leftover_snapshots)


def test_container_restarted_only_when_its_own_packages_ask(sandbox: Any, tmp_path: Path) -> None:
    """An Ubuntu container whose libc6 upgrade writes /run/reboot-required is rebooted through
    PVE's own reboot task (one request, no stop + start of labops' own); a Debian one next to it
    is not."""
    from flows.patching import patch_apply

    sandbox.control("fleet", "set_pending", host="traefik", packages=[{"name": "libc6"}])
    sandbox.control("fleet", "set_pending", host="grafana", packages=[{"name": "tzdata"}])
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        reboot="when-required",
        delete_snapshots_after_h=0,
    )
    since = sandbox.journal_mark()
    state, _ = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=["traefik", "grafana"], return_state=True),
        cfg,
        {"approve": True},
    )
    report = report_of(state)
    assert not report.failures, report.failures
    done = {a.host: a for a in report.applied}
    assert done["traefik"].outcome == "patched" and done["traefik"].rebooted
    assert done["grafana"].outcome == "patched" and not done["grafana"].rebooted
    node, vmid = guest(sandbox, "traefik")
    assert sandbox.pve().nodes(node).lxc(vmid).status.current.get()["status"] == "running"
    assert not sandbox.control("fleet", "state", host="traefik")["reboot_required"]
    calls = [
        (e["method"], e["path"].rsplit("/", 1)[-1])
        for e in sandbox.journal(since, system="pve")
        if f"/lxc/{vmid}/status/" in e.get("path", "")
    ]
    assert calls == [("POST", "reboot")], calls


def test_scheduled_run_preapproved_by_policy(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the scheduler created applies without pausing when the policy pre-approves it.
    (Whether a run is scheduled comes from the flow run's ``auto_scheduled``; faked here, as a
    deployment schedule would take minutes to fire.)"""
    import flows.patching as patching

    monkeypatch.setattr(patching, "_is_scheduled", lambda: True)
    sandbox.control("fleet", "set_pending", host="it-tools", packages=[{"name": "tzdata"}], held=[])
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        preapproved_scheduled=True,
        delete_snapshots_after_h=0,
    )
    state, paused = run_paused_flow(
        lambda: patching.patch_apply(config=cfg, hosts=["it-tools"], return_state=True), cfg, None
    )
    report = report_of(state)
    assert paused is None and report.approval and report.approval.startswith("pre-approved")
    assert [a.outcome for a in report.applied] == ["patched"]
    assert pending_of(sandbox, "it-tools") == []


def test_unanswered_approval_applies_nothing(sandbox: Any, tmp_path: Path) -> None:
    from flows.patching import patch_apply

    before = pending_of(sandbox, "ollama")
    cfg = derived_config(sandbox, tmp_path, windows=OPEN, refresh=False, approval_timeout_s=3)
    state = patch_apply(config=cfg, hosts=["ollama"], return_state=True)
    # Prefect fails a run whose pause times out ("never resumed"); nothing was applied
    assert state.is_failed()
    assert pending_of(sandbox, "ollama") == before
