"""Off-site copies per guest: sync jobs (pull, push, namespaces, group filters), their last
runs (a partial failure names its groups), and each guest's newest copy against its RPO."""

from __future__ import annotations

from typing import Any

from labops.backups.models import BackupGuest
from labops.backups.offsite import (
    OffsiteStatus,
    filter_allows,
    offsite_rows,
    parse_target,
    sync_run,
    target_of,
    unchecked_rows,
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


def test_each_guest_is_covered_by_a_job_reading_a_namespace_its_backups_are_in() -> None:
    policy = OffsitePolicy(targets=["pbs2:offsite"])
    root_only = job(**{"max-depth": 0})  # store1's root namespace, nothing below
    guests = [guest(101), guest(102), guest(103)]
    where = {101: ["store1"], 102: ["store1/home"], 103: ["store1", "store1/home"]}
    fresh = {"pbs2:offsite": {f"ct/{v}": NOW - 60 for v in (101, 102, 103)}}
    rows = {
        r.vmid: r
        for r in offsite_rows(guests, "store1", [root_only], {}, fresh, policy, NOW, where=where)
    }
    assert rows[101].problem is None and rows[103].problem is None
    assert rows[102].problem == "no sync job copies ct/102 to pbs2:offsite"
    # a job on namespace home reaches only the guests with backups there
    home = job(id="s-home", ns="home")
    rows = {
        r.vmid: r
        for r in offsite_rows(guests, "store1", [home], {}, fresh, policy, NOW, None, where)
    }
    assert [v for v, r in sorted(rows.items()) if r.jobs == ["s-home"]] == [102, 103]


def test_target_names_parse_back_into_remote_store_and_namespace() -> None:
    assert parse_target("pbs2:offsite/home/lab") == ("pbs2", "offsite", "home/lab")
    assert parse_target("pbs2:offsite") == ("pbs2", "offsite", None)
    assert parse_target("offsite/lab") == (None, "offsite", "lab")
    assert parse_target("store2") == (None, "store2", None)


def test_each_row_says_which_problem_and_a_failed_run_reaches_every_group() -> None:
    policy = OffsitePolicy(rpo=7 * DAY)
    guests = [guest(101), guest(102), guest(103), guest(100, kind="qemu")]
    jobs = [job(**{"group-filter": ["type:ct"]})]
    fresh = {"pbs2:offsite": {"ct/101": NOW - DAY, "ct/102": NOW - 8 * DAY}}
    rows = {r.vmid: r for r in offsite_rows(guests, "store1", jobs, {}, fresh, policy, NOW)}
    assert rows[101].status is OffsiteStatus.OK and rows[101].problem is None
    assert rows[102].status is OffsiteStatus.STALE
    assert rows[103].status is OffsiteStatus.NO_COPY
    assert rows[100].status is OffsiteStatus.NO_JOB

    # A run that failed outright (not partial) is a problem of every group the job covers,
    # even one whose copy is still fresh, and known even when the target cannot be read.
    down = sync_run(job(**{"last-run-state": "remote unreachable"}))
    rows = {
        r.vmid: r
        for r in offsite_rows(
            guests, "store1", jobs, {"s-offsite": down}, {}, policy, NOW, {"pbs2:offsite": "tls"}
        )
    }
    assert rows[101].status is OffsiteStatus.SYNC_FAILED
    assert rows[101].problem == "sync job s-offsite failed: remote unreachable"
    assert rows[101].unknown == "pbs2:offsite could not be read: tls"


def test_unreadable_sync_jobs_leave_every_watched_guest_unknown() -> None:
    policy = OffsitePolicy(targets=["pbs2:offsite", "offsite"])
    guests = [guest(101), guest(102, tags=["no-offsite"])]
    rows = unchecked_rows(guests, policy, "sync jobs unreadable: 403")
    assert [(r.vmid, r.target, r.status) for r in rows] == [
        (101, "pbs2:offsite", OffsiteStatus.UNKNOWN),
        (101, "offsite", OffsiteStatus.UNKNOWN),
    ]
    assert all(r.problem is None and r.unknown for r in rows)
    assert [r.target for r in unchecked_rows(guests, OffsitePolicy(), "x")] == ["?"]


def test_report_table_metrics_and_digest_carry_each_offsite_row() -> None:
    from datetime import UTC, datetime

    from labops.backups.report import BackupReport
    from labops.digest.sources import labops_row_findings

    policy = OffsitePolicy(rpo=7 * DAY)
    guests = [guest(101), guest(102), guest(103)]
    partial = sync_run(
        job(**{"last-run-state": "sync failed with some errors."}),
        ["sync group ct/102 failed - connection reset by peer"],
    )
    newest = {"pbs2:offsite": {"ct/101": NOW - DAY, "ct/102": NOW - 9 * DAY}}
    report = BackupReport(lab="t")
    report.offsite = offsite_rows(
        guests, "store1", [job()], {"s-offsite": partial}, newest, policy, NOW
    )
    report.offsite += offsite_rows(
        [guest(101)],
        "store1",
        [job(id="s2", **{"remote-store": "cold"})],
        {},
        {},
        policy,
        NOW,
        {"pbs2:cold": "connection refused"},
    )
    found = " ".join(f.what for f in report.found())
    assert "guest 102 (g102) on pbs2:offsite" in found and "guest 103" in found
    assert "guest 101 (g101) on pbs2:offsite" not in found
    assert report.unchecked() == [
        "off-site copies on pbs2:cold: pbs2:cold could not be read: connection refused"
    ]
    assert report.failed  # could not check is never clean

    metrics = {(m.name, m.labels.get("vmid"), m.labels.get("target")): m for m in report.metrics()}
    age = metrics[("labops_backup_offsite_age_seconds", "101", "pbs2:offsite")]
    assert age.value == DAY and age.labels["guest"] == "g101"
    assert ("labops_backup_offsite_age_seconds", "101", "pbs2:cold") not in metrics
    assert metrics[("labops_backup_offsite_unknown", "101", "pbs2:cold")].value == 1.0
    assert metrics[("labops_backup_offsite_unknown", "101", "pbs2:offsite")].value == 0.0
    assert metrics[("labops_backup_offsite_problem", "102", "pbs2:offsite")].value == 1.0

    md = report.markdown()
    assert "## Off-site copies" in md and "sync job s-offsite failed for ct/102" in md

    said = labops_row_findings("backups", report.table(), datetime(2026, 5, 1, tzinfo=UTC))
    assert "backups|101 g101 off-site pbs2:offsite" in said.checked
    assert "backups|101 g101 off-site pbs2:cold" in said.unknown
    titles = {f.entity: f.title for f in said.findings}
    assert titles["102 g102 off-site pbs2:offsite"] == "backups: off-site sync-failed"
    assert titles["103 g103 off-site pbs2:offsite"] == "backups: off-site no-copy"
