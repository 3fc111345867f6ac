"""The restore drill on the session sandbox: success, a failed start, a scratch vmid taken.

Every drill destroys what it restored, so the shared sandbox is left as it was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.planners.restore_drill import DrillRefused, choose_guest, choose_scratch_vmid
from labops.reports_backups import DrillHistory, DrillResult
from tests.fixtures.sandbox import SandboxHandle

NODES = ("pve1", "pve2", "pve3", "pve4")


def config(sandbox: SandboxHandle, directory: Path, **drill: Any) -> str:
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    settings: dict[str, Any] = {
        "start_wait": 5,
        "timeout": 60,
        "scratch_vmid_min": 9900,
        "scratch_vmid_max": 9909,
    }
    settings.update(drill)
    cfg["backups"] = {"restore_drill": settings, "poll_interval": 0.1}
    fast = {"timeout_s": 2, "attempts": 4, "backoff_s": 0.02, "backoff_max_s": 0.3}
    cfg["systems"]["proxmox"]["retry"] = fast
    cfg["lab"]["state_dir"] = str(directory / "state")
    path = directory / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def report_of(state: Any) -> Any:
    from labops.reports_backups import RestoreDrillReport

    value = state.result(raise_on_failure=False)
    assert isinstance(value, RestoreDrillReport), value
    return value


def vmids(sandbox: SandboxHandle) -> set[int]:
    return {int(g["vmid"]) for g in sandbox.pve().cluster.resources.get(type="vm")}


def restores_since(sandbox: SandboxHandle, since: float) -> int:
    return sum(
        len(
            sandbox.pve().nodes(n).tasks.get(typefilter="vzrestore", since=int(since), source="all")
        )
        for n in NODES
    )


def test_drill_restores_checks_and_destroys_then_picks_the_next_guest(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill

    cfg = config(sandbox_clean, tmp_path, check_command="cat /etc/os-release")
    before = vmids(sandbox_clean)
    dry = report_of(restore_drill(config=cfg, dry_run=True, return_state=True))
    assert (
        dry.scratch_vmid == 9900
        and dry.vmid is not None
        and dry.steps[0].startswith("would restore")
    )
    assert vmids(sandbox_clean) == before

    state = restore_drill(config=cfg, return_state=True)
    report = report_of(state)
    assert state.is_completed(), report.markdown()
    assert report.ok and report.scratch_vmid == 9900 and report.vmid == dry.vmid
    assert report.checks == {"running": True, "command 'cat /etc/os-release'": True}
    assert [s.split(" ")[0] for s in report.steps] == ["restore", "start", "check", "destroy"]
    assert report.duration_s is not None and report.duration_s > 0
    assert vmids(sandbox_clean) == before  # scratch destroyed, nothing else touched
    first = report.vmid

    # The next drill takes a guest never drilled, and a failed start still cleans up.
    sandbox_clean.set_faults(
        "pve", stall_rate=1.0, stall_s=0.2, extra={"stall_paths": ["/status/start"]}
    )
    state = restore_drill(config=cfg, return_state=True)
    failed = report_of(state)
    assert state.is_failed()
    assert failed.vmid != first and not failed.ok
    assert failed.failures[0].entity == f"guest {failed.vmid} ({failed.name})"
    assert "start failed" in failed.failures[0].reason
    assert failed.steps[-1].startswith("destroy 9900")
    assert vmids(sandbox_clean) == before

    history = yaml.safe_load((tmp_path / "state" / "restore-drills.json").read_text())
    assert {int(k): v["ok"] for k, v in history["last"].items()} == {
        first: True,
        failed.vmid: False,
    }


def test_drill_refuses_a_scratch_vmid_that_exists(
    sandbox: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill

    # Count every restore task ever, before and after: a time window would catch the restores
    # of the tests just before this one.
    restores_before = restores_since(sandbox, 0)
    before = vmids(sandbox)
    state = restore_drill(
        config=config(sandbox, tmp_path), vmid=101, scratch_vmid=100, return_state=True
    )
    report = report_of(state)
    assert state.is_failed()
    assert report.failures[0].reason == "scratch vmid 100 exists: refusing to touch it"
    assert restores_since(sandbox, 0) == restores_before and vmids(sandbox) == before


def test_choice_of_guest_and_scratch_vmid() -> None:
    from labops.config.policies.backups import BackupPolicy
    from labops.models.backups import BackupCopy, BackupGuest

    guests = [BackupGuest(vmid=v, name=f"g{v}", node="pve1", type="lxc") for v in (101, 102, 103)]
    guests.append(BackupGuest(vmid=104, name="t", node="pve1", type="qemu", template=True))
    copies = [
        BackupCopy(volid=f"pbs:{v}", storage="pbs", vmid=v, ctime=100.0, size=5)
        for v in (101, 102, 104)
    ]
    history = DrillHistory(
        last={
            101: DrillResult(vmid=101, ok=True, when=500.0),
            102: DrillResult(vmid=102, ok=False, when=400.0),
        }
    )
    assert choose_guest(guests, copies, BackupPolicy(), history).guest.vmid == 102
    assert choose_guest(guests, copies, BackupPolicy(), DrillHistory()).reason == "never drilled"
    with pytest.raises(DrillRefused, match="no good backup"):
        choose_guest(guests, copies, BackupPolicy(), history, vmid=103)
    with pytest.raises(DrillRefused, match="does not exist"):
        choose_guest(guests, copies, BackupPolicy(), history, vmid=999)
    only = BackupPolicy.model_validate({"restore_drill": {"guests": [101]}})
    assert choose_guest(guests, copies, only, history).guest.vmid == 101
    assert choose_scratch_vmid({9900, 9901}, 9900, 9905) == 9902
    with pytest.raises(DrillRefused, match="no free scratch vmid"):
        choose_scratch_vmid(range(9900, 9906), 9900, 9905)
    with pytest.raises(DrillRefused, match="exists"):
        choose_scratch_vmid({101}, 9900, 9905, requested=101)
