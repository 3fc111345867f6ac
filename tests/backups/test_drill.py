"""The restore drill on the session sandbox: success (network isolated), a failed start, a kept
network, a scratch vmid taken; the network plan from fixture config strings.

Every drill destroys what it restored, so the shared sandbox is left as it was found.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from labops.backups.drill import (
    DrillRefused,
    choose_guest,
    choose_scratch_vmid,
    network_changes,
    network_problems,
)
from labops.backups.report import DrillHistory, DrillResult
from labops.config import load_config, parse_config
from labops.errors import ConfigError
from labops.models.pve_net import interfaces, link_is_down, net_parts, with_link_down
from tasks.progress import progress_key
from tests.core.test_progress import run_artifact
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
    from labops.backups.report import RestoreDrillReport

    value = state.result(raise_on_failure=False)
    assert isinstance(value, RestoreDrillReport), value
    return value


def vmids(sandbox: SandboxHandle) -> set[int]:
    return {int(g["vmid"]) for g in sandbox.pve().cluster.resources.get(type="vm")}


def guest_api(sandbox: SandboxHandle, vmid: int) -> Any:
    """proxmoxer's handle of guest ``vmid`` (``.config.get()``, ``.config.put()``)."""
    pve = sandbox.pve()
    g = next(g for g in pve.cluster.resources.get(type="vm") if int(g["vmid"]) == vmid)
    return getattr(pve.nodes(g["node"]), g["type"])(vmid)


def starts_of(sandbox: SandboxHandle, vmid: int) -> list[dict[str, Any]]:
    """Every start of ``vmid`` the sandbox saw, each with the config the guest started with."""
    starts: list[dict[str, Any]] = sandbox.control("pve", "starts", vmid=vmid)["starts"]
    return starts


def without(value: str, *keys: str) -> list[tuple[str | None, str]]:
    return [(k, v) for k, v in net_parts(value) if k not in keys]


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
    mark = sandbox_clean.journal_mark()
    dry = report_of(restore_drill(config=cfg, dry_run=True, return_state=True))
    assert sandbox_clean.journal(mark) == []  # the dry run only reads
    assert (
        dry.scratch_vmid == 9900
        and dry.vmid is not None
        and dry.steps[0].startswith("would restore")
        and "unplug every network interface (link_down=1) before starting it" in dry.steps[0]
    )
    assert vmids(sandbox_clean) == before

    # A second interface on the original, so that "every interface" means more than net0; the
    # backup's config is the original's as it is (the sandbox restores it from there).
    original = guest_api(sandbox_clean, dry.vmid)
    original.config.put(net1="name=eth1,bridge=vmbr1,ip=10.20.0.7/24,tag=20")
    try:
        original_conf = original.config.get()
        seen = len(starts_of(sandbox_clean, 9900))
        state = restore_drill(config=cfg, return_state=True)
        assert original.config.get() == original_conf  # the original is never touched
    finally:
        original.config.put(delete="net1")
    report = report_of(state)
    assert state.is_completed(), report.markdown()
    assert report.ok and report.scratch_vmid == 9900 and report.vmid == dry.vmid
    drill_key = progress_key(load_config(Path(cfg)).lab.name, "restore_drill")
    progress = run_artifact(state.state_details.flow_run_id, drill_key)
    assert (float(progress.data), progress.description) == (100.0, "9 of 9 drill steps (recorded)")
    assert report.checks == {
        "running": True,
        "healthy boot": True,
        "command 'cat /etc/os-release'": True,
    }
    steps = [s.split(" ")[0] for s in report.steps]
    assert steps == ["restore", "tag", "network", "start", "check", "check", "destroy"]
    assert report.steps[4].startswith("check healthy boot: ok")
    assert report.steps[2].startswith("network isolate: net0, net1 unplugged (link_down=1")
    assert report.duration_s is not None and report.duration_s > 0
    assert vmids(sandbox_clean) == before  # scratch destroyed, nothing else touched
    # What PVE had when it started the scratch guest: every interface unplugged, nothing else
    # of it changed (the restore made new MACs).
    started = starts_of(sandbox_clean, 9900)[seen:]
    assert len(started) == 1
    nets = interfaces(started[0]["config"])
    assert set(nets) == {"net0", "net1"} and all(link_is_down(v) for v in nets.values())
    for key, value in nets.items():
        assert without(value, "link_down", "hwaddr") == without(
            original_conf[key], "link_down", "hwaddr"
        )
    first = report.vmid

    # The next drill takes a guest never drilled, and a failed start still cleans up.
    sandbox_clean.set_faults(
        "pve", stall_rate=1.0, stall_s=0.2, extra={"stall_paths": ["/status/start"]}
    )
    state = restore_drill(config=cfg, return_state=True)
    failed = report_of(state)
    assert state.is_failed()
    assert failed.vmid != first and not failed.ok
    # the UI shows where it stopped: restored and isolated, not started, cleaned up, recorded
    progress = run_artifact(state.state_details.flow_run_id, drill_key)
    assert progress.description == "7 of 9 drill steps (recorded)"
    assert failed.failures[0].entity == f"guest {failed.vmid} ({failed.name})"
    assert "start failed" in failed.failures[0].reason
    assert failed.steps[-1].startswith("destroy 9900")
    assert vmids(sandbox_clean) == before

    history = yaml.safe_load((tmp_path / "state" / "restore-drills.json").read_text())
    assert {int(k): v["ok"] for k, v in history["last"].items()} == {
        first: True,
        failed.vmid: False,
    }


def test_drill_with_network_keep_starts_the_guest_as_restored(
    sandbox: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill

    vmid = 101
    original_net0 = guest_api(sandbox, vmid).config.get()["net0"]
    seen = len(starts_of(sandbox, 9900))
    cfg = config(sandbox, tmp_path, network="keep")
    report = report_of(restore_drill(config=cfg, vmid=vmid, return_state=True))
    assert report.ok, report.markdown()
    network = next(s for s in report.steps if s.startswith("network"))
    assert network.startswith("network keep: WARNING starting with the backed-up interfaces")
    assert "ip=192.168.1.101/24" in network and f"guest {vmid}" in network
    started = starts_of(sandbox, 9900)[seen:]
    assert len(started) == 1
    net0 = started[0]["config"]["net0"]
    assert not link_is_down(net0)
    assert without(net0, "hwaddr") == without(original_net0, "hwaddr")


def test_drill_refuses_a_scratch_vmid_outside_its_range(
    sandbox: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill

    # Count every restore task ever, before and after: a time window would catch the restores
    # of the tests just before this one.
    restores_before = restores_since(sandbox, 0)
    before = vmids(sandbox)
    mark = sandbox.journal_mark()
    state = restore_drill(
        config=config(sandbox, tmp_path), vmid=101, scratch_vmid=100, return_state=True
    )
    report = report_of(state)
    assert state.is_failed()
    assert report.failures[0].reason == (
        "scratch vmid 100 is outside restore_drill's scratch range 9900-9909: refused"
    )
    assert restores_since(sandbox, 0) == restores_before and vmids(sandbox) == before
    assert sandbox.journal(mark, system="pve") == []


def test_choice_of_guest_and_scratch_vmid() -> None:
    from labops.backups.models import BackupCopy, BackupGuest
    from labops.config.policies.backups import BackupPolicy

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
        choose_scratch_vmid({9903}, 9900, 9905, requested=9903)
    assert choose_scratch_vmid({9903}, 9900, 9905, requested=9905) == 9905
    for outside in (101, 9899, 9906):
        with pytest.raises(DrillRefused, match=f"{outside} is outside .* range 9900-9905"):
            choose_scratch_vmid({101}, 9900, 9905, requested=outside)


LXC_NET = (
    "name=eth0,bridge=vmbr0,firewall=1,gw=192.168.1.1,hwaddr=BC:24:11:3A:11:02,"
    "ip=192.168.1.101/24,tag=20,type=veth"
)
QEMU_NET = "virtio=BC:24:11:00:03:21,bridge=vmbr0,firewall=1,tag=30,trunks=30;40"


def test_isolated_net_strings_keep_every_other_part() -> None:
    assert with_link_down(LXC_NET) == LXC_NET + ",link_down=1"
    assert with_link_down(QEMU_NET) == QEMU_NET + ",link_down=1"
    assert with_link_down("e1000,link_down=0,bridge=vmbr2") == "e1000,bridge=vmbr2,link_down=1"
    down = "name=eth1,bridge=vmbr1,link_down=1,type=veth"
    lxc = {"net0": LXC_NET, "net1": down, "net10": "name=eth10,bridge=vmbr2"}
    assert network_changes(lxc, "isolate", {}, "lxc") == {
        "net0": LXC_NET + ",link_down=1",
        "net10": "name=eth10,bridge=vmbr2,link_down=1",
    }  # net1 is unplugged already
    assert network_changes({"net0": QEMU_NET}, "isolate", {}, "qemu") == {
        "net0": QEMU_NET + ",link_down=1"
    }
    assert network_changes(lxc, "keep", {}, "lxc") == {}

    given = {"net0": "name=eth0,bridge=vmbr9,ip=10.99.0.50/24"}
    assert network_changes(lxc, "replace", given, "lxc") == {
        **given,
        "net10": "name=eth10,bridge=vmbr2,link_down=1",
    }
    with pytest.raises(DrillRefused, match=r"replace_nets\.net0: unknown key 'virtio' for a lxc"):
        network_changes(lxc, "replace", {"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr9"}, "lxc")
    with pytest.raises(DrillRefused, match=r"replace_nets\.net0: a container interface needs"):
        network_changes(lxc, "replace", {"net0": "bridge=vmbr9"}, "lxc")


def test_network_read_back_is_checked_before_the_start() -> None:
    isolated = {"net0": LXC_NET.replace(",type", ",link_down=1,type"), "net1": QEMU_NET}
    assert network_problems(isolated, "isolate", {}) == [
        "net1 is still plugged in (bridge=vmbr0,tag=30,trunks=30;40)"
    ]
    assert network_problems({"net0": QEMU_NET + ",link_down=1"}, "isolate", {}) == []
    assert network_problems({"net0": LXC_NET}, "keep", {}) == []
    # PVE prints the replacement its own way (key order, a made-up MAC): still as asked
    given = {"net0": "name=eth0,ip=10.99.0.50/24,bridge=vmbr9"}
    read = "name=eth0,bridge=vmbr9,hwaddr=BC:24:11:00:00:09,ip=10.99.0.50/24,type=veth"
    assert network_problems({"net0": read}, "replace", given) == []
    assert network_problems({"net0": LXC_NET}, "replace", given) == [
        "net0 has ip=192.168.1.101/24 instead of 10.99.0.50/24",
        "net0 has bridge=vmbr0 instead of vmbr9",
    ]


def test_network_config_errors_name_the_field() -> None:
    def error(drill: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as exc:
            parse_config({"backups": {"restore_drill": drill}})
        return str(exc.value)

    assert error({"check_port": 22, "check_host": "10.0.0.5"}).startswith(
        "backups.restore_drill: check_port cannot reach a scratch guest whose interfaces are "
        "unplugged (network: isolate)"
    )
    assert "backups.restore_drill.replace_nets.eth0" in error(
        {"network": "replace", "replace_nets": {"eth0": "name=eth0"}}
    )
    assert error({"network": "replace", "replace_nets": {"net0": "name=eth0,brigde=vmbr1"}}) == (
        "backups.restore_drill.replace_nets.net0: not a PVE net string: unknown key 'brigde' "
        "for a network interface (got 'name=eth0,brigde=vmbr1')"
    )
    assert "needs replace_nets" in error({"network": "replace"})
    assert "only with network: replace" in error({"replace_nets": {"net0": "name=eth0"}})
    ok = parse_config(
        {
            "backups": {
                "restore_drill": {
                    "network": "replace",
                    "replace_nets": {"net0": "name=eth0,bridge=vmbr9,ip=10.99.0.50/24"},
                    "check_host": "10.99.0.50",
                    "check_port": 22,
                }
            }
        }
    )
    assert ok.backups.restore_drill.replace_nets == {
        "net0": "name=eth0,bridge=vmbr9,ip=10.99.0.50/24"
    }


# -- what the drill marks, what it destroys, and the token it needs -----------------------------


def test_run_tag_destroy_decision_and_needed_privileges() -> None:
    from labops.backups.drill import (
        RestoreSeen,
        destroy_refusal,
        missing_privileges,
        run_tag,
        scratch_needs,
        source_needs,
    )

    tag = run_tag("0853EE14-9774-4f6a-b590-4231f3ae37bf")
    assert tag == "labops-drill-0853ee14-9774-4f6a-b590-4231f3ae37bf"  # PVE stores tags lowercase
    with pytest.raises(ValueError):
        run_tag("a b")

    ok = RestoreSeen(vmid=9900, node="pve1", kind="lxc", upid="UPID:pve1:x", state="ok")
    assert destroy_refusal(ok, [tag], tag, 9900, 9909) is None
    assert destroy_refusal(ok, ["other", tag], tag, 9900, 9909) is None
    refusals = {
        "never started": destroy_refusal(
            RestoreSeen(vmid=9900, node="pve1", kind="lxc", state="refused"),
            [tag],
            tag,
            9900,
            9909,
        ),
        "failed": destroy_refusal(
            ok.model_copy(update={"state": "failed", "detail": "zstd failed"}),
            [tag],
            tag,
            9900,
            9909,
        ),
        "still running": destroy_refusal(
            ok.model_copy(update={"state": "running"}), [tag], tag, 9900, 9909
        ),
        "outside": destroy_refusal(ok.model_copy(update={"vmid": 100}), [tag], tag, 9900, 9909),
        "unreadable": destroy_refusal(ok, None, tag, 9900, 9909),
        "other tag": destroy_refusal(ok, ["labops-drill-another-run"], tag, 9900, 9909),
        "untagged": destroy_refusal(ok, [], tag, 9900, 9909),
    }
    assert all(refusals.values()), refusals
    assert "someone else" in str(refusals["never started"])
    assert "did not succeed (failed: zstd failed)" in str(refusals["failed"])
    assert "outside the scratch range 9900-9909" in str(refusals["outside"])
    assert str(refusals["untagged"]).endswith("(its tags: none)")

    # The scratch guest's privileges count from its own path and the pool it is restored into.
    needs = source_needs(101, "pbs") + scratch_needs("local-lvm", "drill", 9900, "isolate")
    held = {
        "/vms/101": ["VM.Audit", "VM.Backup"],
        "/vms/9900": ["VM.Audit", "VM.Backup"],
        "/pool/drill": ["VM.Allocate", "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt"],
        "/storage/pbs": ["Datastore.AllocateSpace"],
        "/storage/local-lvm": ["Datastore.AllocateSpace"],
    }
    assert missing_privileges(needs, held) == []
    held["/pool/drill"] = ["VM.Allocate", "VM.Config.Network", "VM.PowerMgmt"]
    assert missing_privileges(needs, held) == [
        "VM.Config.Options on /pool/drill (tag the scratch guest with the run)"
    ]
    keep = scratch_needs("local-lvm", None, 9900, "keep")
    assert {p for n in keep for p in n.privs} == {
        "Datastore.AllocateSpace",
        "VM.Allocate",
        "VM.Audit",
        "VM.Config.Options",
        "VM.PowerMgmt",
    }
    assert all(n.paths in (["/vms/9900"], ["/storage/local-lvm"]) for n in keep)


def pve_writes(sb: SandboxHandle, mark: int) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in sb.journal(mark, system="pve")]


def remove_guest(sb: SandboxHandle, vmid: int) -> None:
    """Test cleanup with the sandbox's root token: stop and destroy ``vmid`` if it exists."""
    from tests.fixtures.sandbox import wait_task

    found = [g for g in sb.pve().cluster.resources.get(type="vm") if int(g["vmid"]) == vmid]
    if not found:
        return
    api = guest_api(sb, vmid)
    if api.status.current.get()["status"] == "running":
        wait_task(sb.pve(), found[0]["node"], api.status.stop.post())
    wait_task(sb.pve(), found[0]["node"], api.delete(purge=1))


@pytest.fixture
def lab(private_sandbox: SandboxHandle) -> Any:
    """This module's own lab for the drills that leave guests or change the access config."""
    try:
        yield private_sandbox
    finally:
        private_sandbox.reset_faults()
        remove_guest(private_sandbox, 9900)
        private_sandbox.control("pve", "access-reset")


def drill_with_knob(lab: SandboxHandle, directory: Path, **knob: Any) -> tuple[Any, Any, list[Any]]:
    """Drill guest 101 while the sandbox PVE knob ``knob`` acts; the state, the report and the
    PVE writes of the run (method, path)."""
    from flows.restore_drill import restore_drill

    lab.set_faults("pve", extra=knob)
    mark = lab.journal_mark()
    state = restore_drill(config=config(lab, directory), vmid=101, return_state=True)
    return state, report_of(state), pve_writes(lab, mark)


def test_a_guest_that_takes_the_scratch_vmid_before_the_restore_is_left_alone(
    lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    # Between the drill's choice of 9900 and its restore, another actor creates guest 9900.
    state, report, writes = drill_with_knob(
        lab, tmp_path, occupy_on_restore={"9900": "someone-else"}
    )
    assert state.is_failed() and report.scratch_vmid == 9900
    # Only the refused restore (labops's HTTP policy retries a 500), no PUT, no DELETE.
    assert set(writes) == {("POST", f"/nodes/{report.node}/lxc")}
    reason = report.failures[0].reason
    assert reason.startswith("restore refused: ") and "CT 9900 already exists" in reason
    assert reason.endswith(
        f"vmid 9900 is now used by guest 9900 (someone-else) on {report.node}; this run has no "
        "restore task for it, so it leaves it alone"
    )
    assert report.steps[-1] == "destroy 9900: nothing to destroy, this run created no guest"
    assert 9900 in vmids(lab)


def test_a_scratch_guest_without_the_run_tag_is_not_destroyed(
    lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    # As the scratch guest starts, another actor replaces its tags.
    state, report, writes = drill_with_knob(
        lab, tmp_path, on_start={"9900": {"tags": "someone-else"}}
    )
    assert state.is_failed()
    assert ("DELETE", f"/nodes/{report.node}/lxc/9900") not in writes
    refusal = f"it does not carry this run's tag {report.tag} (its tags: someone-else)"
    assert report.left == [f"guest 9900 on {report.node}: not destroyed, {refusal}"]
    assert report.failures[-1].entity == "scratch guest 9900"
    assert report.steps[-1] == f"destroy 9900: refused, {refusal}"
    assert 9900 in vmids(lab)


def test_a_failed_restore_destroys_nothing(
    lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    # The restore task fails and, as when its own cleanup fails too, leaves the guest behind.
    state, report, writes = drill_with_knob(lab, tmp_path, failing_restores={"9900": "keep"})
    assert state.is_failed()
    assert writes == [("POST", f"/nodes/{report.node}/lxc")]
    assert report.failures[0].reason.startswith("restore failed: unable to restore CT 9900 - ")
    assert len(report.left) == 1 and "did not succeed (failed: unable to restore" in report.left[0]
    assert 9900 in vmids(lab)


def test_a_guest_whose_backups_are_in_a_pbs_namespace_is_restored_from_there(
    lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    """A VM whose backups are only in namespace home of store1 (PVE storage pbs-home, the
    guest's own storage) is drilled from there: the drill reads every storage the backups flow
    reads, not only the default one, checks its privileges on that storage and names the
    namespace (PVE's volume id names the storage alone)."""
    from flows.restore_drill import restore_drill

    vm = min(lab.state()["services"]["pbs"]["seed"]["home_vmids"])
    store = lab.pbs().admin.datastore("store1")
    for s in store.snapshots.get(**{"backup-type": "vm", "backup-id": str(vm)}):  # the root's
        store.snapshots.delete(
            **{"backup-type": "vm", "backup-id": str(vm), "backup-time": s["backup-time"]}
        )
    home = store.snapshots.get(ns="home", **{"backup-type": "vm", "backup-id": str(vm)})
    newest = max(int(s["backup-time"]) for s in home)
    path = Path(config(lab, tmp_path))
    cfg = yaml.safe_load(path.read_text())
    cfg["backups"]["guests"] = {vm: {"storage": "pbs-home"}}
    path.write_text(yaml.safe_dump(cfg))
    before = vmids(lab)

    dry = report_of(restore_drill(config=str(path), vmid=vm, dry_run=True, return_state=True))
    volid = f"pbs-home:backup/vm/{vm}/{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(newest))}"
    assert (dry.volid, dry.backup_time) == (volid, newest), dry.markdown()
    assert dry.steps[0].startswith(f"would restore {volid} from pbs-home (store1/home) as 9900")

    mark = lab.journal_mark()
    state = restore_drill(config=str(path), vmid=vm, return_state=True)
    report = report_of(state)
    assert state.is_completed() and report.ok, report.markdown()
    assert report.backup_location == "pbs-home (store1/home)"
    assert "on pbs-home (store1/home)" in report.markdown()
    restores = [
        e["args"]
        for e in lab.journal(mark, system="pve")
        if (e["method"], e["path"]) == ("POST", f"/nodes/{report.node}/qemu")
    ]
    assert [r["archive"] for r in restores] == [volid]
    assert vmids(lab) == before


def test_two_drills_never_overlap(lab: SandboxHandle, prefect_server: Any, tmp_path: Path) -> None:
    from prefect.concurrency.sync import concurrency

    from flows.restore_drill import restore_drill
    from labops.limits import ensure_limit, limit_name

    cfg = config(lab, tmp_path)
    name = limit_name("drill", "slot", lab=yaml.safe_load(Path(cfg).read_text())["lab"]["name"])
    ensure_limit(name, 1)
    mark = lab.journal_mark()
    with concurrency(name, occupy=1, strict=True):  # a drill of the same lab is running
        state = restore_drill(config=cfg, vmid=101, return_state=True)
    report = report_of(state)
    assert state.is_failed() and report.vmid is None
    assert report.failures[0].reason.startswith("not run: another restore drill of lab ")
    assert name in report.failures[0].reason
    assert pve_writes(lab, mark) == []


def drill_token_config(
    sb: SandboxHandle, directory: Path, commands: list[list[str]], **drill: Any
) -> str:
    """A config whose PVE token is the drill's, holding what ``commands`` grant it."""
    from tests.fixtures.pve_acl import apply

    sb.control("pve", "access-reset")
    root = sb.pve()
    root.access.users.post(userid="labops@pve", comment="labops automation")
    secrets = apply(root, commands)
    ((token_id, secret),) = secrets.items()
    pool = next(argv[3] for argv in commands if argv[1:3] == ["pool", "add"])
    path = Path(config(sb, directory, pool=pool, **drill))
    cfg = yaml.safe_load(path.read_text())
    secret_file = directory / "drill-token"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    cfg["systems"]["proxmox"].update(token_id=token_id, token_secret=f"file:{secret_file}")
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_the_drill_completes_with_exactly_the_documented_acl(
    lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill
    from tests.fixtures.pve_acl import documented_commands

    cfg = drill_token_config(lab, tmp_path, documented_commands())
    before = vmids(lab)
    mark = lab.journal_mark()
    state = restore_drill(config=cfg, vmid=101, return_state=True)
    report = report_of(state)
    assert state.is_completed(), report.markdown()
    assert report.ok and report.tag == f"labops-drill-{state.state_details.flow_run_id}"
    writes = lab.journal(mark, system="pve")
    restore = next(e for e in writes if e["path"] == f"/nodes/{report.node}/lxc")
    assert restore["args"]["pool"] == "labops-drill" and "tags" not in restore["args"]
    tagged = [e for e in writes if e["method"] == "PUT" and "tags" in e["args"]]
    assert [e["args"]["tags"] for e in tagged] == [report.tag]
    started = starts_of(lab, 9900)[-1]["config"]
    assert started["tags"] == report.tag
    assert [s.split(" ")[0] for s in report.steps] == [
        "restore",
        "tag",
        "network",
        "start",
        "check",  # the healthy boot, through pct exec (SSH to the node: no PVE privilege)
        "destroy",
    ]
    assert vmids(lab) == before


def _variants() -> list[Any]:
    from tests.fixtures.pve_acl import documented_commands, without_one

    return without_one(documented_commands())


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v.name)
def test_the_drill_fails_with_a_permission_error_without_any_one_entry(
    variant: Any, lab: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.restore_drill import restore_drill

    cfg = drill_token_config(lab, tmp_path, variant.commands)
    before = vmids(lab)
    state = restore_drill(config=cfg, vmid=101, return_state=True)
    report = report_of(state)
    assert state.is_failed()
    assert any("permission" in f.reason.lower() for f in report.failures), report.markdown()
    assert not report.left and vmids(lab) == before


def test_a_lost_restore_answer_adopts_only_a_task_of_this_token() -> None:
    from labops.errors import MaybeApplied
    from labops.models.pve import PveTaskItem
    from tasks.pve import start_once

    ours = "UPID:pve1:0000AA01:0B5E27C1:67000000:vzrestore:9900:labops@pve!drill:"
    theirs = "UPID:pve1:0000AA02:0B5E27C1:67000001:vzrestore:9900:root@pam!labops:"

    class Pve:
        def __init__(self, listed: list[str]) -> None:
            self.listed = listed

        def tasks(self, node: str, **_: Any) -> list[PveTaskItem]:
            return [PveTaskItem(upid=u) for u in self.listed]

    sent: list[str] = []
    naps: list[float] = []

    def start() -> str:
        sent.append("POST")
        if len(sent) == 1:
            raise MaybeApplied("proxmox", "answer lost")
        return "UPID:new"

    def adopt(listed: list[str]) -> str:
        pve = cast(Any, Pve(listed))  # the one method start_once reads after a lost answer
        return start_once(
            pve, "pve1", 9900, "vzrestore", start, "labops@pve!drill", wait_s=0.5, sleep=naps.append
        )

    assert adopt([theirs, ours]) == ours
    assert sent == ["POST"]
    sent.clear()
    # Only someone else's restore of that vmid: not adopted; the restore is sent again (PVE
    # refuses it when that vmid exists now).
    assert adopt([theirs]) == "UPID:new"
    assert sent == ["POST", "POST"]


def test_a_lost_answer_whose_task_appears_late_is_followed_never_sent_twice() -> None:
    """A busy node acts on the request seconds after its answer was lost: the task list is
    watched and the late task adopted; a list that cannot be read means nothing is sent again."""
    from labops.errors import MaybeApplied, Unreachable
    from labops.models.pve import PveTaskItem
    from tasks.pve import start_once

    late = "UPID:pve1:0000AA03:0B5E27C1:67000002:vzstart:9900:labops@pve!drill:"

    class Pve:
        def __init__(self, appears_after: int | None) -> None:
            self.looks = 0
            self.appears_after = appears_after

        def tasks(self, node: str, **_: Any) -> list[PveTaskItem]:
            self.looks += 1
            if self.appears_after is None:
                raise Unreachable("proxmox", "connection refused")
            return [PveTaskItem(upid=late)] if self.looks > self.appears_after else []

    sent: list[str] = []

    def start() -> str:
        sent.append("POST")
        if len(sent) == 1:
            raise MaybeApplied("proxmox", "answer lost")
        return "UPID:second"

    pve = Pve(appears_after=3)
    naps: list[float] = []
    got = start_once(cast(Any, pve), "pve1", 9900, "vzstart", start, wait_s=60, sleep=naps.append)
    assert got == late and sent == ["POST"] and pve.looks == 4 and len(naps) == 3

    sent.clear()
    with pytest.raises(MaybeApplied, match="could not be read"):
        start_once(cast(Any, Pve(None)), "pve1", 9900, "vzstart", start, sleep=naps.append)
    assert sent == ["POST"]


def test_a_resent_request_whose_answer_is_lost_again_is_watched_again() -> None:
    """The resend after an empty task list can lose its answer too (a flaky link): the list is
    watched again before a third send; after the last send lost, MaybeApplied is raised."""
    from labops.errors import MaybeApplied
    from labops.models.pve import PveTaskItem
    from tasks.pve import start_once

    class Pve:
        looks = 0

        def tasks(self, node: str, **_: Any) -> list[PveTaskItem]:
            self.looks += 1
            return []  # none of the lost requests reached the node

    def starter(lost: int) -> tuple[list[str], Any]:
        sent: list[str] = []

        def start() -> str:
            sent.append("POST")
            if len(sent) <= lost:
                raise MaybeApplied("proxmox", "answer lost")
            return "UPID:landed"

        return sent, start

    sent, start = starter(lost=2)
    pve = Pve()
    got = start_once(cast(Any, pve), "pve1", 116, "vzsnapshot", start, wait_s=0.05, sleep=noop)
    assert got == "UPID:landed" and sent == ["POST"] * 3 and pve.looks >= 2

    sent, start = starter(lost=3)
    with pytest.raises(MaybeApplied, match="answer lost"):
        start_once(cast(Any, Pve()), "pve1", 116, "vzsnapshot", start, wait_s=0.05, sleep=noop)
    assert sent == ["POST"] * 3


def noop(_: float) -> None:
    """A sleep that does not sleep: the deadline still bounds the watch."""
