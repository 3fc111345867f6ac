"""Backup-gated apply on the sandbox (patching.require_backup): vzdump through the PVE API when a
guest's backup is too old, a guest whose backup fails is never patched, the backup is the
rollback point where no snapshot can be taken, and a dry run backs nothing up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.journal_rules import is_mutating
from tests.patching.helpers import apply_approved as apply
from tests.patching.helpers import (
    derived_config,
    fleet_as_seeded,  # noqa: F401 (a fixture)
    guest,
    pending_of,
    prime,
    report_of,
)

pytestmark = pytest.mark.usefixtures("prefect_server", "fleet_as_seeded")
OPEN = [{"start": "00:00", "end": "23:59"}]


def backups_of(sandbox: Any, vmid: int) -> list[str]:
    """Every backup volume of ``vmid`` on every storage every node lists."""
    pve = sandbox.pve()
    found: set[str] = set()
    for n in pve.nodes.get():
        if n.get("status") != "online":
            continue
        for st in pve.nodes(n["node"]).storage.get(content="backup"):
            for v in pve.nodes(n["node"]).storage(st["storage"]).content.get(content="backup"):
                if v.get("vmid") is not None and int(v["vmid"]) == vmid:
                    found.add(v["volid"])
    return sorted(found)


def test_too_old_backup_is_taken_now_then_patched(sandbox_clean: Any, tmp_path: Path) -> None:
    sb = sandbox_clean
    prime(sb, "paperless")
    _, vmid = guest(sb, "paperless")
    before = backups_of(sb, vmid)
    report = apply(sb, tmp_path, ["paperless"], require_backup={"enabled": True, "max_age_h": 0.1})
    done = {a.host: a for a in report.applied}
    assert done["paperless"].outcome == "patched", report.failures
    assert done["paperless"].rollback_point.startswith("snapshot labops-patch-")
    assert any(
        g.startswith("paperless: vzdump to ") and g.endswith(": ok") for g in report.gate_backups
    )
    new = set(backups_of(sb, vmid)) - set(before)
    assert len(new) == 1, "exactly one backup taken by the gate"
    assert "Backups taken before patching" in report.markdown()


def test_failed_backup_means_never_patched_and_the_others_go_on(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    sb = sandbox_clean
    prime(sb, "mealie", "gitea")
    _, vmid = guest(sb, "mealie")
    before = pending_of(sb, "mealie")
    sb.set_faults("pve", extra={"failing_vmids": [vmid]})
    report = apply(
        sb, tmp_path, ["mealie", "gitea"], require_backup={"enabled": True, "max_age_h": 0.1}
    )
    done = {a.host: a for a in report.applied}
    assert done["mealie"].outcome == "skipped" and "backup gate" in done["mealie"].detail
    assert "exit code 255" in done["mealie"].detail
    assert pending_of(sb, "mealie") == before, "a guest whose backup failed is never patched"
    assert done["gitea"].outcome == "patched"
    assert [f.entity for f in report.failures] == ["host mealie"]
    assert report.result().outcome == "failed"


def test_no_snapshot_possible_the_backup_is_the_rollback_point(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """A container PVE cannot snapshot (bind mount): patched with its fresh backup as the
    rollback point; when its upgrade fails the report names the exact restore."""
    sb = sandbox_clean
    prime(sb, "grafana", "homepage")
    node_a, vmid_a = guest(sb, "grafana")
    node_b, vmid_b = guest(sb, "homepage")
    sb.set_faults("pve", extra={"no_snapshot_vmids": [vmid_a, vmid_b]})
    sb.set_faults("fleet", extra={"failing_upgrade_hosts": ["homepage"]})
    report = apply(
        sb, tmp_path, ["grafana", "homepage"], require_backup={"enabled": True, "max_age_h": 0.1}
    )
    done = {a.host: a for a in report.applied}
    ok, bad = done["grafana"], done["homepage"]
    assert ok.outcome == "patched" and ok.snapshot is None
    assert ok.rollback_point and ok.rollback_point.startswith("backup ")
    assert "snapshot feature is not available" in ok.detail
    assert bad.outcome == "failed" and not bad.rolled_back
    volid = bad.rollback_point.removeprefix("backup ")  # type: ignore[union-attr]
    assert bad.restore and f"pct restore {vmid_b} {volid} --force 1" in bad.restore
    assert f"POST /nodes/{node_b}/lxc vmid={vmid_b} ostemplate={volid}" in bad.restore
    assert f"pct restore {vmid_b}" in report.markdown()
    assert node_a


def test_auto_restore_puts_a_failed_guest_back_from_its_backup(
    private_clean: Any, tmp_path: Path
) -> None:
    """require_backup.auto_restore: a running container PVE cannot snapshot whose upgrade fails
    is stopped, restored over itself from the gate's fresh backup (POST /nodes/{node}/lxc
    restore=1 force=1, checked against PVE's schema) and started again; its packages are those
    of the backup. The report says so per guest; the other guest is untouched. (A lab of the
    module's own: restores replace guests, and a failed one leaves none.)"""
    sb = private_clean
    prime(sb, "grafana", "homepage")
    node, vmid = guest(sb, "homepage")
    _, other = guest(sb, "grafana")
    before = pending_of(sb, "homepage")
    sb.set_faults("pve", extra={"no_snapshot_vmids": [vmid, other]})
    sb.set_faults("fleet", extra={"failing_upgrade_hosts": ["homepage"]})
    mark = sb.journal_mark()
    report = apply(
        sb,
        tmp_path,
        ["grafana", "homepage"],
        require_backup={"enabled": True, "max_age_h": 0.1, "auto_restore": True},
    )
    done = {a.host: a for a in report.applied}
    bad = done["homepage"]
    volid = bad.rollback_point.removeprefix("backup ")  # type: ignore[union-attr]
    assert bad.restored == f"restored from {volid}", bad.detail
    assert bad.outcome == "rolled-back" and bad.rolled_back
    assert done["grafana"].outcome == "patched" and done["grafana"].restored is None
    assert pending_of(sb, "homepage") == before, "the backup's packages are back"
    assert sb.pve().nodes(node).lxc(vmid).status.current.get()["status"] == "running"
    writes = [
        (e["method"], e["path"].split("/api2/json")[-1], e.get("args") or {})
        for e in sb.journal(mark, system="pve")
        if e["method"] != "GET"
    ]
    mine = [w for w in writes if f"/lxc/{vmid}/status/" in w[1] or w[1] == f"/nodes/{node}/lxc"]
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in mine] == [
        ("POST", "stop"),
        ("POST", "lxc"),
        ("POST", "start"),
    ]
    args = mine[1][2]
    assert args["ostemplate"] == volid and int(args["vmid"]) == vmid
    assert str(args["restore"]) in ("1", "True", "true") and str(args["force"]) in ("1", "True")
    assert f"automatic restore: restored from {volid}" in report.markdown()


def test_auto_restore_that_fails_is_reported_with_its_reason(
    private_clean: Any, tmp_path: Path
) -> None:
    """A failed automatic restore is reported with PVE's reason and the way to restore by hand.
    The sandbox removes a guest whose forced restore failed: the module's own lab."""
    sb = private_clean
    prime(sb, "homepage")
    _, vmid = guest(sb, "homepage")
    sb.set_faults("pve", extra={"no_snapshot_vmids": [vmid], "failing_restores": [vmid]})
    sb.set_faults("fleet", extra={"failing_upgrade_hosts": ["homepage"]})
    report = apply(
        sb,
        tmp_path,
        ["homepage"],
        require_backup={"enabled": True, "max_age_h": 0.1, "auto_restore": True},
    )
    (bad,) = report.applied
    assert bad.outcome == "failed" and not bad.rolled_back
    assert bad.restored and bad.restored.startswith("restore failed: restore task failed: ")
    assert "zstd" in bad.restored and "AUTOMATIC RESTORE FAILED" in bad.detail
    assert bad.restore and "pct restore" in bad.restore  # the way to do it by hand, still named


def test_auto_restore_puts_a_failed_vm_back_from_its_backup(
    private_clean: Any, tmp_path: Path
) -> None:
    """A VM reached through its guest agent, on storage PVE cannot snapshot, whose upgrade
    fails: the gate's fresh backup is restored over it (POST /nodes/{node}/qemu archive=<volid>
    force=1 after a stop) and it is started again with the backed-up OS."""
    sb = private_clean
    vm = "haos"
    node, vmid = guest(sb, vm)
    sb.pve().nodes(node).qemu(vmid).agent.ping.post()  # its OS exists from the first agent call
    sb.control("fleet", "set_pending", host=vm, packages=[{"name": "openssl"}], held=[])
    sb.set_faults("pve", extra={"no_snapshot_vmids": [vmid], "failing_upgrade_hosts": [vm]})
    mark = sb.journal_mark()
    report = apply(
        sb,
        tmp_path,
        [vm],
        require_backup={"enabled": True, "max_age_h": 0.1, "auto_restore": True},
    )
    (bad,) = report.applied
    assert bad.kind == "vm" and bad.snapshot is None
    volid = bad.rollback_point.removeprefix("backup ")  # type: ignore[union-attr]
    assert bad.restored == f"restored from {volid}", bad.detail
    assert bad.outcome == "rolled-back" and bad.rolled_back
    assert pending_of(sb, vm) == ["openssl"], "the backed-up OS is back"
    assert sb.pve().nodes(node).qemu(vmid).status.current.get()["status"] == "running"
    writes = [
        (e["path"].split("/api2/json")[-1], e.get("args") or {})
        for e in sb.journal(mark, system="pve")
        if e["method"] == "POST"
        and (f"/qemu/{vmid}/status/" in e["path"] or e["path"].endswith(f"/nodes/{node}/qemu"))
    ]
    assert [p.rsplit("/", 1)[-1] for p, _ in writes] == ["stop", "qemu", "start"], writes
    args = writes[1][1]
    assert args["archive"] == volid and int(args["vmid"]) == vmid
    assert str(args["force"]) in ("1", "True", "true")


def test_no_automatic_restore_once_the_window_closed(private_clean: Any, tmp_path: Path) -> None:
    """The window is asked again before an automatic restore: once it closed, the guest is left
    as it is, the report says why, and nothing is sent to PVE."""
    from datetime import UTC, datetime

    from blocks.context import LabContext
    from flows.patch_steps import maybe_restore
    from labops.backups.models import BackupCopy
    from labops.config.policies.patching import MaintenanceWindow
    from labops.patching import windows
    from labops.patching.report import HostApply

    sb = private_clean
    node, vmid = guest(sb, "grafana")
    cfg = derived_config(
        sb, tmp_path, require_backup={"enabled": True, "max_age_h": 0.1, "auto_restore": True}
    )
    volid = f"pbs:backup/ct/{vmid}/2026-12-06T01:00:00Z"
    r = HostApply(host="grafana", node=node, vmid=vmid, outcome="failed", restore="pct restore")
    backup = BackupCopy(volid=volid, storage="pbs", vmid=vmid, ctime=0)
    times = iter([datetime(2026, 12, 6, 3, 0, tzinfo=UTC), datetime(2026, 12, 6, 5, 0, tzinfo=UTC)])
    guard = windows.WindowGuard(
        [MaintenanceWindow.model_validate({"start": "02:00", "end": "04:00"})], lambda: next(times)
    )
    assert guard.closed() == ""  # open when the run began
    mark = sb.journal_mark()
    maybe_restore(LabContext.load(cfg), r, backup, guard)
    assert r.restored == "not restored automatically: window closed at 04:00"
    assert r.outcome == "failed" and not r.rolled_back
    assert [e for e in sb.journal(mark, system="pve") if e["method"] != "GET"] == []


def test_no_snapshot_and_no_gate_is_never_patched(sandbox_clean: Any, tmp_path: Path) -> None:
    sb = sandbox_clean
    prime(sb, "uptime-kuma")
    _, vmid = guest(sb, "uptime-kuma")
    before = pending_of(sb, "uptime-kuma")
    sb.set_faults("pve", extra={"no_snapshot_vmids": [vmid]})
    report = apply(sb, tmp_path, ["uptime-kuma"])
    done = {a.host: a for a in report.applied}
    assert done["uptime-kuma"].outcome == "failed"
    assert pending_of(sb, "uptime-kuma") == before


def test_unlistable_backups_refuse_every_guest(sandbox_clean: Any, tmp_path: Path) -> None:
    """Unknown is never fine: backups that cannot be listed pass no guest."""
    sb = sandbox_clean
    prime(sb, "nextcloud")
    before = pending_of(sb, "nextcloud")
    report = apply(
        sb, tmp_path, ["nextcloud"], require_backup={"enabled": True, "storage": "no-such-store"}
    )
    done = {a.host: a for a in report.applied}
    assert done["nextcloud"].outcome == "skipped"
    assert "cannot list the backups on no-such-store" in done["nextcloud"].detail
    assert pending_of(sb, "nextcloud") == before


def test_dry_run_says_what_it_would_back_up_and_backs_up_nothing(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    from flows.patching import patch_apply

    sb = sandbox_clean
    prime(sb, "vaultwarden")
    _, vmid = guest(sb, "vaultwarden")
    before, pending = backups_of(sb, vmid), pending_of(sb, "vaultwarden")
    cfg = derived_config(
        sb,
        tmp_path,
        windows=OPEN,
        refresh=False,
        require_backup={"enabled": True, "max_age_h": 0.1},
    )
    report = report_of(
        patch_apply(config=cfg, dry_run=True, hosts=["vaultwarden"], return_state=True)
    )
    assert report.gate_backups and report.gate_backups[0].startswith("vaultwarden: would back up")
    assert {a.host: a.outcome for a in report.applied} == {"vaultwarden": "simulated"}
    assert backups_of(sb, vmid) == before and pending_of(sb, "vaultwarden") == pending


def test_dry_run_says_it_would_restore_and_changes_nothing(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    from flows.patching import patch_apply

    sb = sandbox_clean
    prime(sb, "vaultwarden")
    pending = pending_of(sb, "vaultwarden")
    cfg = derived_config(
        sb,
        tmp_path,
        windows=OPEN,
        refresh=False,
        require_backup={"enabled": True, "max_age_h": 0.1, "auto_restore": True},
    )
    mark = sb.journal_mark()
    report = report_of(
        patch_apply(config=cfg, dry_run=True, hosts=["vaultwarden"], return_state=True)
    )
    assert (
        "vaultwarden: would be restored from its backup automatically if its upgrade failed "
        "with no snapshot (require_backup.auto_restore)"
    ) in report.gate_backups
    assert "would be restored from its backup automatically" in report.markdown()
    changed = [e for e in sb.journal(mark) if is_mutating(e)]
    assert not changed, changed[:5]
    assert pending_of(sb, "vaultwarden") == pending
