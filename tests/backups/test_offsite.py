"""Off-site copies per guest: sync jobs (pull, push, namespaces, group filters), their last
runs (a partial failure names its groups), and each guest's newest copy against its RPO."""

from __future__ import annotations

from typing import Any

from labops.backups.models import BackupGuest
from labops.backups.offsite import (
    filter_allows,
    offsite_rows,
    sync_run,
    target_of,
)
from labops.config.policies.backups import OffsitePolicy
from labops.models.pbs import PbsSyncJob

NOW = 1_780_000_000.0
DAY = 86400.0


def job(**fields: Any) -> PbsSyncJob:
    base: dict[str, Any] = {
        "id": "s-offsite",
        "store": "store1",
        "remote": "pbs2",
        "remote-store": "offsite",
        "sync-direction": "push",
        "last-run-state": "OK",
        "last-run-endtime": int(NOW - 3600),
    }
    return PbsSyncJob.model_validate({**base, **fields})


def guest(vmid: int, kind: str = "lxc", tags: list[str] | None = None) -> BackupGuest:
    return BackupGuest(vmid=vmid, name=f"g{vmid}", node="pve1", type=kind, tags=tags or [])  # type: ignore[arg-type]


def test_group_filters_follow_pbs_rules() -> None:
    assert filter_allows([], "ct/101")
    assert filter_allows(["type:ct"], "ct/101") and not filter_allows(["type:ct"], "vm/100")
    assert filter_allows(["group:vm/100", "regex:^ct/1[0-9]{2}$"], "ct/150")
    assert not filter_allows(["type:ct", "exclude:group:ct/150"], "ct/150")
    assert not filter_allows(["exclude:regex:^vm/"], "vm/100")
    assert not filter_allows(["regex:(unclosed"], "ct/101")  # a bad regex matches nothing


def test_targets_of_push_and_pull_jobs_with_namespaces() -> None:
    assert target_of(job()) == "pbs2:offsite"
    assert target_of(job(**{"remote-ns": "home/lab"})) == "pbs2:offsite/home/lab"
    pull = job(
        **{
            "sync-direction": "pull",
            "store": "offsite",
            "ns": "lab",
            "remote": "pbs1",
            "remote-store": "store1",
        }
    )
    assert target_of(pull) == "offsite/lab"


def test_partial_failure_names_the_failed_groups() -> None:
    log = [
        "Starting datastore sync job 'pbs2:offsite:store1:s-offsite'",
        "sync group ct/101 failed - owner check failed (sync@pbs != root@pam)",
        "sync group vm/100 failed - connection reset by peer",
        "TASK ERROR: sync failed with some errors.",
    ]
    run = sync_run(job(**{"last-run-state": "sync failed with some errors."}), log)
    assert run.state == "partial"
    assert run.failed_groups == {
        "ct/101": "owner check failed (sync@pbs != root@pam)",
        "vm/100": "connection reset by peer",
    }
    assert sync_run(job()).state == "ok"
    assert sync_run(job(**{"last-run-state": "remote unreachable"})).state == "failed"
    assert sync_run(job(**{"last-run-state": None, "last-run-endtime": None})).state == "never"


def test_each_guest_on_each_target_against_its_offsite_rpo() -> None:
    policy = OffsitePolicy(rpo=7 * DAY, tier_tags={"offsite-daily": 26 * 3600}, guests={103: 1.0})
    guests = [
        guest(101, tags=["offsite-daily"]),
        guest(102),
        guest(103),
        guest(104, tags=["no-offsite"]),
        guest(100, kind="qemu"),
    ]
    jobs = [job(**{"group-filter": ["type:ct"]})]
    partial = sync_run(
        jobs[0].model_copy(update={"last_run_state": "sync failed with some errors."}),
        ["sync group ct/102 failed - unable to acquire lock"],
    )
    newest = {"pbs2:offsite": {"ct/101": NOW - 2 * DAY, "ct/102": NOW - DAY, "ct/103": NOW - 10}}
    rows = {
        r.vmid: r
        for r in offsite_rows(guests, "store1", jobs, {"s-offsite": partial}, newest, policy, NOW)
    }
    assert 104 not in rows  # excluded by tag
    assert rows[101].problem and "2d0h old" in rows[101].problem  # daily tier: too old
    assert rows[102].problem == "sync job s-offsite failed for ct/102: unable to acquire lock"
    assert rows[103].problem and "old" in rows[103].problem  # per-guest RPO of 1 s
    assert rows[100].problem == "no sync job copies vm/100 to pbs2:offsite"  # filtered out
    assert rows[100].jobs == [] and rows[102].jobs == ["s-offsite"]


def test_namespaces_and_unreadable_targets() -> None:
    policy = OffsitePolicy(targets=["pbs2:offsite"])
    ns_job = job(ns="lab", **{"max-depth": 0})
    guests = [guest(101)]
    # the guest's backups live in store1/lab/child: a depth-0 job on store1/lab misses them
    (row,) = offsite_rows(guests, "store1/lab/child", [ns_job], {}, {}, policy, NOW)
    assert row.problem == "no sync job copies ct/101 to pbs2:offsite"
    (row,) = offsite_rows(guests, "store1/lab", [ns_job], {}, {}, policy, NOW)
    assert row.problem is None and row.age_s is None  # target not read: no claim either way
    assert row.unknown == "pbs2:offsite could not be read"
    (row,) = offsite_rows(guests, "store1/lab", [ns_job], {}, {"pbs2:offsite": {}}, policy, NOW)
    assert row.problem == "no copy of ct/101 on pbs2:offsite"
