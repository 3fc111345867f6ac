"""The backup gate's decisions (labops/patching/gate.py), without I/O."""

from __future__ import annotations

from labops.backups.models import BackupCopy
from labops.config.policies.patching import RequireBackup
from labops.patching import gate

NOW = 1_700_000_000.0
H = 3600.0


def copy(vmid: int, age_h: float, verify: str | None = None, storage: str = "pbs") -> BackupCopy:
    return BackupCopy(
        volid=f"{storage}:backup/ct/{vmid}/{age_h}",
        storage=storage,
        vmid=vmid,
        ctime=NOW - age_h * H,
        verify_state=verify,
    )


def test_recent_good_backup_passes_and_is_the_one_named() -> None:
    v = gate.judge(101, [copy(101, 30), copy(101, 2), copy(102, 1)], RequireBackup(), NOW)
    assert v.passed and v.backup is not None and v.backup.volid.endswith("/2")
    assert "2.0 h old" in v.reason


def test_too_old_or_missing_needs_a_backup_now() -> None:
    policy = RequireBackup(max_age_h=12)
    assert gate.judge(101, [copy(101, 13)], policy, NOW).state == "needs-backup"
    v = gate.judge(101, [], policy, NOW)
    assert v.state == "needs-backup" and v.reason == "no good backup"


def test_failed_verification_never_counts() -> None:
    v = gate.judge(101, [copy(101, 1, verify="failed")], RequireBackup(), NOW)
    assert v.state == "needs-backup"


def test_verified_policy_wants_a_verified_backup_and_cannot_wait_for_one() -> None:
    policy = RequireBackup(verified=True)
    assert gate.judge(101, [copy(101, 1, verify="ok")], policy, NOW).passed
    v = gate.judge(101, [copy(101, 1)], policy, NOW)
    assert v.state == "refused" and "not verified yet" in v.reason


def test_backup_now_off_refuses() -> None:
    v = gate.judge(101, [copy(101, 50)], RequireBackup(backup_now=False), NOW)
    assert v.state == "refused" and "backup_now is off" in v.reason


def test_a_failed_backup_refuses_the_guest_with_its_reason() -> None:
    v = gate.judge(101, [copy(101, 50)], RequireBackup(), NOW, tried="exit code 255")
    assert v.state == "refused" and "exit code 255" in v.reason and v.backup is None


def test_rollback_point_snapshot_first_then_backup() -> None:
    v = gate.judge(101, [copy(101, 1)], RequireBackup(), NOW)
    assert v.backup is not None
    assert gate.rollback_point("labops-patch-x", v.backup) == "snapshot labops-patch-x"
    assert gate.rollback_point(None, v.backup) == f"backup {v.backup.volid}"
    assert gate.rollback_point(None, None) is None


def test_restore_hint_names_the_exact_command_and_api_call() -> None:
    c = copy(101, 1)
    lxc = gate.restore_hint("lxc", "pve1", 101, c)
    assert f"pct restore 101 {c.volid} --force 1" in lxc
    assert f"POST /nodes/pve1/lxc vmid=101 ostemplate={c.volid} restore=1 force=1" in lxc
    vm = gate.restore_hint("qemu", "pve2", 200, copy(200, 1))
    assert "qmrestore" in vm and "POST /nodes/pve2/qemu vmid=200 archive=" in vm
