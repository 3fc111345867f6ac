"""PVE storage replication as off-site rows, judged without I/O: age from the last sync against
the guest's off-site RPO, failing and disabled jobs named, an unreadable node never fresh."""

from __future__ import annotations

from typing import Any

from labops.backups.models import BackupGuest
from labops.backups.offsite import OffsiteStatus
from labops.backups.replication import ERROR_MAX, bounded, log_reason, replication_rows
from labops.config.policies.backups import OffsitePolicy
from labops.models.pve import PveReplicationJob, PveReplicationState

NOW = 1_800_000_000.0
DAY = 86400
POLICY = OffsitePolicy(rpo=DAY, tier_tags={"rpo-1h": 3600})


def guest(vmid: int, node: str = "pve1", **kw: Any) -> BackupGuest:
    return BackupGuest(vmid=vmid, node=node, type="lxc", name=f"ct{vmid}", **kw)


def job(vmid: int, target: str = "pve2", **kw: Any) -> PveReplicationJob:
    return PveReplicationJob.model_validate(
        {"id": f"{vmid}-0", "guest": vmid, "jobnum": 0, "target": target, "type": "local", **kw}
    )


def state(j: PveReplicationJob, **kw: Any) -> PveReplicationState:
    return PveReplicationState.model_validate({**j.model_dump(), **kw})


def test_a_recent_sync_is_fresh_and_aged_from_last_sync() -> None:
    j = job(101)
    (row,) = replication_rows(
        [guest(101)], [j], {j.id: state(j, last_sync=int(NOW) - 600)}, POLICY, NOW
    )
    assert row.status is OffsiteStatus.OK and row.problem is None and row.unknown is None
    assert (row.target, row.jobs, row.age_s, row.rpo_s) == ("replication:pve2", ["101-0"], 600, DAY)


def test_the_guests_offsite_tier_sets_the_rpo() -> None:
    j = job(101)
    rows = replication_rows(
        [guest(101, tags=["rpo-1h"])],
        [j],
        {j.id: state(j, last_sync=int(NOW) - 7200)},
        POLICY,
        NOW,
    )
    assert rows[0].status is OffsiteStatus.STALE
    assert rows[0].problem == "last sync to pve2 2h00m ago (off-site RPO 1h00m)"


def test_a_failing_job_is_a_problem_with_its_bounded_error() -> None:
    j = job(103, "pve4")
    error = "command 'pvesm export " + "x" * 2000 + "'\n\x1b[31m failed: exit code 255"
    (row,) = replication_rows(
        [guest(103)],
        [j],
        {j.id: state(j, last_sync=int(NOW) - 3600, fail_count=4, error=error)},
        POLICY,
        NOW,
    )
    assert row.status is OffsiteStatus.SYNC_FAILED and row.age_s == 3600
    assert row.problem is not None
    assert row.problem.startswith("replication job 103-0 to pve4 failed 4 time(s) in a row: ")
    assert "exit code 255" in row.problem and "\x1b" not in row.problem and "\n" not in row.problem
    assert len(row.problem) < ERROR_MAX + 80


def test_an_error_without_a_fail_count_still_fails_the_row() -> None:
    j = job(103)
    (row,) = replication_rows(
        [guest(103)], [j], {j.id: state(j, last_sync=int(NOW), error="boom")}, POLICY, NOW
    )
    assert row.status is OffsiteStatus.SYNC_FAILED
    assert row.problem == "replication job 103-0 to pve2 failed: boom"


def test_a_disabled_job_is_named_beside_its_stale_copy() -> None:
    j = job(104, "pve4", disable=1)
    (row,) = replication_rows(
        [guest(104)], [j], {j.id: state(j, last_sync=int(NOW) - 21 * DAY)}, POLICY, NOW
    )
    assert row.status is OffsiteStatus.DISABLED
    assert row.problem == (
        "replication job 104-0 to pve4 is disabled; last sync to pve4 21d0h ago (off-site RPO 1d0h)"
    )


def test_never_synced_is_no_copy() -> None:
    j = job(105)
    (row,) = replication_rows([guest(105)], [j], {j.id: state(j)}, POLICY, NOW)
    assert row.status is OffsiteStatus.NO_COPY and row.age_s is None and row.newest is None
    assert row.problem == "replication job 105-0 to pve2 never synced"


def test_an_unreadable_node_is_could_not_check_never_fresh() -> None:
    jobs = [job(101), job(102)]
    rows = replication_rows(
        [guest(101, "pve1"), guest(102, "pve3")],
        jobs,
        {},
        POLICY,
        NOW,
        {"pve1": "500 unable to open file\n'/var/lib/pve-manager/pve-replication-state.json'"},
    )
    by = {r.vmid: r for r in rows}
    assert all(r.status is OffsiteStatus.UNKNOWN and r.age_s is None for r in rows)
    assert all(r.problem is None for r in rows)
    assert by[101].unknown == (
        "replication status of pve1 could not be read: "
        "500 unable to open file; '/var/lib/pve-manager/pve-replication-state.json'"
    )
    assert by[102].unknown == "replication job 102-0 is not in pve3's replication status"


def test_only_watched_replicated_guests_get_rows() -> None:
    jobs = [job(101), job(102), job(103), job(999), job(101, "pve4", id="101-1", jobnum=1)]
    guests = [
        guest(101),
        guest(102, tags=["no-offsite"]),
        guest(103, template=True),
        guest(104),  # not replicated: no replication row
    ]
    status = {j.id: state(j, last_sync=int(NOW)) for j in jobs}
    rows = replication_rows(guests, jobs, status, POLICY, NOW)
    assert [(r.vmid, r.target) for r in rows] == [
        (101, "replication:pve2"),
        (101, "replication:pve4"),
    ]


def test_bounded_keeps_short_text_and_cuts_long_text() -> None:
    assert bounded("a\tb\n c") == "a b; c"
    cut = bounded("start " + "y" * 1000 + " exit code 255", limit=50)
    assert len(cut) == 50 and cut.startswith("start ") and cut.endswith(" exit code 255")
    assert "…" in cut


FAILED_LOG = [
    "2026-12-06 05:55:00 101-0: start replication job",
    "2026-12-06 05:55:00 101-0: guest => CT 101, running => 1101",
    "2026-12-06 05:55:00 101-0: volumes => local-zfs:subvol-101-disk-0",
    "2026-12-06 05:55:01 101-0: create snapshot '__replicate_101-0_1765000500__' on "
    "local-zfs:subvol-101-disk-0",
    "2026-12-06 05:55:01 101-0: using secure transmission, rate limit: none",
    "2026-12-06 05:55:01 101-0: incremental sync 'local-zfs:subvol-101-disk-0' "
    "(__replicate_101-0_1764827700__ => __replicate_101-0_1765000500__)",
    "2026-12-06 05:55:02 101-0: ssh: connect to host 10.0.0.14 port 22: No route to host",
    "2026-12-06 05:55:02 101-0: delete previous replication snapshot "
    "'__replicate_101-0_1765000500__' on local-zfs:subvol-101-disk-0",
    "2026-12-06 05:55:02 101-0: end replication job with error: command 'zfs send' failed: "
    "exit code 255",
]


def test_log_reason_names_the_commands_complaint_and_the_error() -> None:
    assert log_reason(FAILED_LOG, "101-0") == (
        "ssh: connect to host 10.0.0.14 port 22: No route to host "
        "(command 'zfs send' failed: exit code 255)"
    )
    # only the last run counts (pvesr rewrites the log; a copy may hold two runs)
    ok_run = [
        "2026-12-06 06:10:00 101-0: start replication job",
        "2026-12-06 06:10:03 101-0: end replication job",
    ]
    assert log_reason(FAILED_LOG + ok_run, "101-0") is None
    # no complaint of its own: the end line's error
    assert log_reason([FAILED_LOG[0], FAILED_LOG[-1]], "101-0") == (
        "command 'zfs send' failed: exit code 255"
    )
    # PVE's answer for a node without the file, another job's log, nothing: no reason
    assert log_reason(["unable to open file - No such file or directory"], "101-0") is None
    assert log_reason(FAILED_LOG, "102-0") is None


def test_a_reason_from_the_log_replaces_the_status_error_in_the_row() -> None:
    guest = BackupGuest(vmid=101, name="dns", node="pve1", type="lxc")
    job = PveReplicationJob(id="101-0", guest=101, target="pve4")
    state = PveReplicationState(
        id="101-0", guest=101, target="pve4", last_sync=1, fail_count=3, error="exit code 255"
    )
    plain = replication_rows([guest], [job], {"101-0": state}, OffsitePolicy(), 100.0)
    assert plain[0].problem is not None and ": exit code 255" in plain[0].problem
    why = {"101-0": "Host key verification failed. (exit code 255)"}
    rows = replication_rows([guest], [job], {"101-0": state}, OffsitePolicy(), 100.0, None, why)
    assert rows[0].status is OffsiteStatus.SYNC_FAILED
    assert "failed 3 time(s) in a row: Host key verification failed. (exit code 255)" in (
        rows[0].problem or ""
    )
