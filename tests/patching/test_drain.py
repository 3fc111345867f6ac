"""Draining a node before its reboot and the jobs overlapping a patch window, without I/O
(labops/patching/drain.py, labops/patching/overlap.py)."""

from __future__ import annotations

from datetime import datetime

from labops.patching.drain import DrainGuest, NodeRoom, pinned_by, plan_drain
from labops.patching.overlap import Job, overlaps, starts_of

G = 1024**3


def vm(vmid: int, mem_g: int, pinned: str = "") -> DrainGuest:
    return DrainGuest(vmid=vmid, name=f"g{vmid}", type="qemu", mem=mem_g * G, pinned=pinned)


def ct(vmid: int, mem_g: int, pinned: str = "") -> DrainGuest:
    return DrainGuest(vmid=vmid, name=f"g{vmid}", type="lxc", mem=mem_g * G, pinned=pinned)


ROOM = [NodeRoom(name="pve2", free_mem=10 * G), NodeRoom(name="pve4", free_mem=6 * G)]


def test_migrate_vms_live_containers_by_restart_to_the_roomiest_node_and_back() -> None:
    plan = plan_drain("pve1", [vm(300, 8), ct(101, 4), ct(102, 2)], ROOM, "migrate")
    moves = {m.vmid: (m.target, m.online) for m in plan.moves}
    assert moves == {300: ("pve2", True), 101: ("pve4", False), 102: ("pve2", False)}
    assert not plan.refused and not plan.shutdowns
    back = plan.back()
    assert [m.vmid for m in back] == [102, 101, 300]
    assert all(m.target == "pve1" for m in back)


def test_no_room_refuses_the_reboot_rather_than_take_a_guest_down() -> None:
    plan = plan_drain("pve1", [vm(300, 12)], ROOM, "migrate")
    assert plan.refused == "no online node has room for qemu 300 (g300)" and not plan.shutdowns


def test_offline_nodes_and_the_node_itself_get_nothing() -> None:
    others = [
        NodeRoom(name="pve2", online=False, free_mem=99 * G),
        NodeRoom(name="pve1", free_mem=99 * G),
    ]
    assert plan_drain("pve1", [ct(101, 1)], others, "migrate").refused


def test_pinned_guests_per_policy() -> None:
    guests = [vm(300, 1, pinned="hostpci0: 0000:01:00.0"), ct(101, 1)]
    shut = plan_drain("pve1", guests, ROOM, "migrate", "shutdown")
    assert [g.vmid for g in shut.shutdowns] == [300] and [m.vmid for m in shut.moves] == [101]
    assert "pinned (hostpci0: 0000:01:00.0)" in shut.pinned[0]
    refuse = plan_drain("pve1", guests, ROOM, "migrate", "refuse")
    assert refuse.refused.startswith("qemu 300 (g300) is pinned")


def test_shutdown_and_none_modes() -> None:
    guests = [vm(300, 1), ct(101, 1)]
    assert {g.vmid for g in plan_drain("pve1", guests, ROOM, "shutdown").shutdowns} == {300, 101}
    none = plan_drain("pve1", guests, ROOM, "none")
    assert not none.moves and not none.shutdowns and not none.refused


def test_pinned_by_reads_the_guest_config() -> None:
    assert pinned_by("lxc", {"mp0": "/mnt/media,mp=/media", "rootfs": "local-lvm:vm-1"}).startswith(
        "bind mount mp0"
    )
    assert pinned_by("lxc", {"mp0": "local-lvm:vm-101-disk-1,mp=/data"}) == ""
    assert pinned_by("lxc", {"dev0": "/dev/dri/renderD128"}).startswith("device dev0")
    assert pinned_by("qemu", {"hostpci0": "0000:01:00.0"}).startswith("hostpci0")
    assert pinned_by("qemu", {"usb0": "spice"}) == ""


SAT_0200 = datetime(2026, 12, 5, 2, 0)  # a Saturday
SAT_0500 = datetime(2026, 12, 5, 5, 0)


def test_calendar_event_forms() -> None:
    assert starts_of("sat 03:00", SAT_0200, SAT_0500) == [datetime(2026, 12, 5, 3, 0)]
    assert datetime(2026, 12, 5, 1, 30) in (starts_of("mon..sat 01:30", SAT_0200, SAT_0500) or [])
    assert starts_of("*-*-* 04:15", SAT_0200, SAT_0500)[-1] == datetime(2026, 12, 5, 4, 15)  # type: ignore[index]
    assert starts_of("daily", SAT_0200, SAT_0500) is not None
    assert starts_of("sat *-12-05 03:00:00", SAT_0200, SAT_0500) is None  # not read: say so


def test_overlaps_refuse_a_backup_of_a_patched_node_and_list_the_rest() -> None:
    jobs = [
        Job(kind="pve-backup", name="backup-pve1", schedule="sat 03:00", nodes=["pve1"]),
        Job(kind="pve-backup", name="backup-pve9", schedule="sat 03:00", nodes=["pve9"]),
        Job(kind="pve-backup", name="all-nodes", schedule="sun 03:00"),
        Job(kind="pbs-verify", name="verify-main", schedule="01:30", minutes=60),
        Job(kind="pbs-gc", name="gc", schedule="12:00"),
        Job(kind="pve-backup", name="odd", schedule="Sat *-*-1..7 03:00"),
        Job(kind="labops", name="backups", schedule="0 4 * * *", starts=[datetime(2026, 12, 5, 4)]),
    ]
    found = {o.job.name: o for o in overlaps(jobs, SAT_0200, SAT_0500, ["pve1", "pve2"])}
    assert found["backup-pve1"].refused and found["backup-pve1"].at == datetime(2026, 12, 5, 3)
    assert not found["backup-pve9"].refused
    assert "all-nodes" not in found and "gc" not in found
    assert (
        found["verify-main"].at == datetime(2026, 12, 5, 1, 30) and not found["verify-main"].refused
    )
    assert found["odd"].refused and found["odd"].at is None  # cannot tell: refused
    assert "schedule cannot be read" in found["odd"].line()
    assert found["backups"].at == datetime(2026, 12, 5, 4)
