"""PBS namespaces in the backups audit: where each storage's backups are, and whether the verify
and prune jobs reach each namespace that holds some (the job's ``ns`` and ``max-depth``)."""

from __future__ import annotations

from typing import Any

import pytest

from labops.backups.models import BackupCopy
from labops.backups.namespaces import (
    JobKind,
    JobsRead,
    backup_namespaces,
    covers,
    guest_locations,
    guest_places,
    namespace_coverage,
    normal_ns,
    pbs_locations,
    unknown_coverage,
)
from labops.models.pbs import PbsJobStatus
from labops.models.pve import PveStorageConfig

# As PVE's GET /storage returns them (pbs storages: datastore, namespace, server...).
CONFIGS = [
    PveStorageConfig.model_validate(c)
    for c in (
        {"storage": "local", "type": "dir", "content": "backup,iso,vztmpl", "path": "/var/lib/vz"},
        {
            "storage": "pbs",
            "type": "pbs",
            "content": "backup",
            "datastore": "store1",
            "server": "pbs.lab.internal",
            "username": "pve@pbs",
            "digest": "1f0c",
        },
        {
            "storage": "pbs-home",
            "type": "pbs",
            "content": "backup",
            "datastore": "store1",
            "namespace": "home",
            "server": "pbs.lab.internal",
        },
        {
            "storage": "pbs-deep",
            "type": "pbs",
            "datastore": "store1",
            "namespace": "/home/media/",
            "disable": 1,
        },
        {"storage": "pbs-other", "type": "pbs", "datastore": "store2", "namespace": "home"},
        {"storage": "pbs-broken", "type": "pbs"},
    )
]


def job(
    ns: str | None = None, depth: int | None = None, store: str = "store1", **kw: str
) -> PbsJobStatus:
    data: dict[str, Any] = {"id": kw.get("id", f"j-{ns or 'root'}-{depth}"), "store": store}
    if ns is not None:
        data["ns"] = ns
    if depth is not None:
        data["max-depth"] = depth
    return PbsJobStatus.model_validate(data)


def test_locations_name_datastore_and_namespace() -> None:
    locations = pbs_locations(CONFIGS)
    assert sorted(locations) == ["pbs", "pbs-deep", "pbs-home", "pbs-other"]
    assert locations["pbs"].label == "pbs (store1)"
    assert locations["pbs-home"].label == "pbs-home (store1/home)"
    assert locations["pbs-deep"].namespace == "home/media"
    assert CONFIGS[3].disable is True


def test_guest_locations_label_each_storage_once() -> None:
    def copy(vmid: int, storage: str, t: float) -> BackupCopy:
        return BackupCopy(
            volid=f"{storage}:backup/ct/{vmid}/{t}", storage=storage, vmid=vmid, ctime=t
        )

    copies = [
        copy(101, "pbs", 1),
        copy(101, "pbs-home", 2),
        copy(101, "pbs", 3),
        copy(102, "local", 1),
    ]
    located = guest_locations(copies, pbs_locations(CONFIGS))
    assert located == {101: ["pbs (store1)", "pbs-home (store1/home)"], 102: ["local"]}


def test_guest_places_are_the_pbs_datastores_and_namespaces_of_its_copies() -> None:
    def copy(vmid: int, storage: str) -> BackupCopy:
        return BackupCopy(volid=f"{storage}:x", storage=storage, vmid=vmid, ctime=1)

    copies = [copy(101, "pbs"), copy(101, "pbs-home"), copy(102, "local"), copy(103, "pbs-home")]
    places = guest_places(copies, pbs_locations(CONFIGS))
    assert places == {101: ["store1", "store1/home"], 103: ["store1/home"]}


@pytest.mark.parametrize(
    ("ns", "depth", "target", "expected"),
    [
        (None, None, "", True),  # root, all levels
        (None, None, "home", True),
        (None, None, "home/media/old", True),
        (None, 0, "", True),  # depth 0: its own namespace only
        (None, 0, "home", False),
        (None, 1, "home", True),
        (None, 1, "home/media", False),
        ("home", None, "home", True),
        ("home", None, "home/media", True),
        ("home", 0, "home/media", False),
        ("home", 1, "home/media", True),
        ("home", None, "", False),  # never upwards
        ("home", None, "homelab", False),  # a prefix of the name is not a parent
        ("home/", None, "home", True),  # written with slashes, compared as a path
        ("", 0, "", True),
    ],
)
def test_a_job_covers_its_namespace_and_max_depth_levels_below(
    ns: str | None, depth: int | None, target: str, expected: bool
) -> None:
    assert covers(job(ns, depth), "store1", target) is expected


def test_a_job_of_another_datastore_covers_nothing_here() -> None:
    assert not covers(job(store="store2"), "store1", "")
    assert covers(job(store="store2"), "store2", "home")


def test_normal_ns() -> None:
    assert normal_ns(None) == normal_ns("") == normal_ns("/") == ""
    assert normal_ns("/a//b/") == "a/b"


def test_coverage_finds_the_namespace_no_job_reaches() -> None:
    where = backup_namespaces(["pbs", "pbs-home", "local"], pbs_locations(CONFIGS))
    assert where == {("store1", ""): ["pbs"], ("store1", "home"): ["pbs-home"]}
    jobs: dict[tuple[JobKind, str], JobsRead] = {
        ("verify", "store1"): [job(None, 0, id="v-daily")],
        ("prune", "store1"): [job(None, None, id="p-daily"), job("home", 0, id="p-home")],
    }
    rows = {(r.kind, r.namespace): r for r in namespace_coverage(where, jobs)}
    assert rows["verify", ""].ok and rows["verify", ""].jobs == ["v-daily"]
    home = rows["verify", "home"]
    assert not home.ok and home.unknown is None
    assert home.gap == "PBS verify: no job covers namespace home (store1)"
    assert rows["prune", "home"].jobs == ["p-daily", "p-home"] and rows["prune", "home"].gap is None
    assert [r.unchecked for r in rows.values()] == [None] * 4


def test_no_job_at_all_is_a_gap_for_every_namespace() -> None:
    where = backup_namespaces(["pbs", "pbs-home"], pbs_locations(CONFIGS))
    rows = namespace_coverage(where, {("verify", "store1"): [], ("prune", "store1"): []})
    assert [r.gap for r in rows] == [
        "PBS verify: no job covers namespace root (store1)",
        "PBS prune: no job covers namespace root (store1)",
        "PBS verify: no job covers namespace home (store1)",
        "PBS prune: no job covers namespace home (store1)",
    ]


def test_an_empty_namespace_needs_no_job_yet_one_not_listed_does() -> None:
    where = backup_namespaces(["pbs", "pbs-home"], pbs_locations(CONFIGS))
    none: dict[tuple[JobKind, str], JobsRead] = {("verify", "store1"): [], ("prune", "store1"): []}
    rows = namespace_coverage(where, none, {("store1", "home"): 0})  # the root was not listed
    assert [(r.namespace, r.groups, r.gap is not None) for r in rows] == [
        ("", None, True),
        ("", None, True),
        ("home", 0, False),
        ("home", 0, False),
    ]


def test_unreadable_jobs_leave_the_namespace_unknown_never_covered() -> None:
    where = backup_namespaces(["pbs-home", "pbs-other"], pbs_locations(CONFIGS))
    jobs: dict[tuple[JobKind, str], JobsRead] = {
        ("verify", "store1"): "jobs unreadable: 500 Internal Server Error",
        ("prune", "store1"): [job()],
        # store2's jobs were never read: unknown as well
    }
    rows = {(r.kind, r.datastore): r for r in namespace_coverage(where, jobs)}
    verify = rows["verify", "store1"]
    assert not verify.ok and verify.gap is None
    assert verify.unchecked == (
        "PBS verify coverage of namespace home (store1): jobs unreadable: 500 Internal Server Error"
    )
    assert rows["prune", "store1"].ok
    assert rows["verify", "store2"].unknown == "verify jobs of store2 not read"
    assert not rows["prune", "store2"].ok


def test_unreadable_storage_configs_are_unknown_for_each_kind() -> None:
    rows = unknown_coverage(["pbs", "pbs"], "storage configs unreadable: 403", "store1")
    assert [(r.kind, r.namespace, r.ok, r.gap) for r in rows] == [
        ("verify", None, False, None),
        ("prune", None, False, None),
    ]
    assert rows[0].storages == ["pbs"]
    assert rows[0].unchecked == (
        "PBS verify coverage of namespace unknown (store1): storage configs unreadable: 403"
    )


def test_no_pbs_storage_needs_no_job() -> None:
    assert namespace_coverage(backup_namespaces(["local"], pbs_locations(CONFIGS)), {}) == []
