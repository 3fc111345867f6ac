"""The backups report's four views: JSON, table/markdown artifacts, notification, metrics."""

from __future__ import annotations

import json

from labops.backups.models import JobCheck, OrphanGroup
from labops.backups.report import BackupReport, GuestRow, GuestStatus, RestoreDrillReport
from labops.metrics import render
from labops.reports import Failure, Severity

NOW = 1_795_770_230.0


def row(vmid: int, status: GuestStatus, age: float | None, **kw: object) -> GuestRow:
    return GuestRow(
        vmid=vmid,
        name=f"ct{vmid}",
        node="pve1",
        tier="24h",
        rpo_s=26 * 3600,
        status=status,
        last_good=None if age is None else NOW - age,
        age_s=age,
        size=2**30,
        **kw,  # type: ignore[arg-type]
    )


def test_clean_report_sends_nothing_and_has_every_column() -> None:
    report = BackupReport(
        guests=[
            row(101, GuestStatus.BACKED_UP, 10.0, verified="ok 1d0h ago"),
            row(102, GuestStatus.FRESH, 3600.0),
        ]
    )
    assert report.notification() is None
    assert not report.failed
    assert list(report.table()[0]) == [
        "guest",
        "node",
        "tier",
        "last good backup",
        "age",
        "size",
        "locations",
        "verified",
        "status",
        "severity",
        "check",
        "could not check",
        "unknown since",
    ]
    assert report.table()[0]["check"] == "ok" and report.table()[0]["severity"] == "ok"
    assert report.table()[0]["size"] == "1.0 GiB" and report.table()[1]["age"] == "1h00m"
    restored = BackupReport.model_validate(json.loads(report.model_dump_json()))
    assert restored.guests == report.guests


def test_failures_stale_and_gaps_make_one_message() -> None:
    report = BackupReport(
        guests=[
            row(101, GuestStatus.FAILED, 3 * 86400.0, reason="exit code 255"),
            row(
                102,
                GuestStatus.FRESH,
                3600.0,
                verified="FAILED 1d ago",
                problems=["verification failed 1d ago (pbs:x)"],
            ),
            row(103, GuestStatus.EXCLUDED, None),
            row(9000, GuestStatus.TEMPLATE, None),
        ],
        failures=[Failure(entity="guest 101 (ct101)", reason="exit code 255")],
        not_in_job=["guest 102 (ct102)"],
        orphans=[OrphanGroup(vmid=199, storage="pbs", count=2, newest=NOW, size=2**30)],
        templates_unprotected=["guest 9000 (ct9000)"],
        pbs_jobs=[JobCheck(job="gc", max_age_s=8 * 86400, ok=False, detail="no record")],
    )
    assert report.failed and [r.vmid for r in report.stale] == [101]
    message = report.notification()
    assert message is not None and message.severity is Severity.CRITICAL
    for text in (
        "exit code 255",
        "Stale:",
        "guest 101 (ct101): last good 3d0h ago",
        "Verification:",
        "orphan backups of guest 199",
        "template without a backup",
        "PBS gc: no record",
        "not in any backup job: guest 102",
    ):
        assert text in message.body, text
    assert message.payload["counts"]["failed"] == 1 and message.payload["stale"] == [101]
    assert "## Coverage gaps" in report.markdown()
    assert "(stale)" in report.table()[0]["status"]


def test_metrics_per_watched_guest() -> None:
    report = BackupReport(
        guests=[row(101, GuestStatus.BACKED_UP, 10.0), row(103, GuestStatus.EXCLUDED, 10.0)]
    )
    text = render(report.metrics())
    assert 'labops_backup_age_seconds{guest="ct101",node="pve1",tier="24h",vmid="101"} 10.0' in text
    assert "labops_backup_last_success_timestamp_seconds{" in text
    assert 'vmid="103"' not in text  # excluded guests are not watched
    assert 'labops_backup_guests{status="backed-up"} 1.0' in text


def test_restore_drill_report_views() -> None:
    ok = RestoreDrillReport(
        vmid=101,
        name="dns",
        volid="pbs:backup/ct/101/x",
        scratch_vmid=9900,
        node="pve2",
        storage="local-lvm",
        ok=True,
        duration_s=42.0,
        steps=["restore", "start", "destroy"],
        checks={"running": True},
    )
    assert ok.notification() is None
    assert "# Restore drill: passed" in ok.markdown()
    assert ok.table()[0]["result"] == "ok"
    assert {m.name for m in ok.metrics()} == {
        "labops_restore_drill_success",
        "labops_restore_drill_last_success_timestamp_seconds",
        "labops_restore_drill_duration_seconds",
    }
    bad = ok.model_copy(
        update={
            "ok": False,
            "failures": [
                Failure(entity="guest 101 (dns)", reason="start failed: CT 9900 is locked")
            ],
        }
    )
    message = bad.notification()
    assert message is not None and "start failed" in message.body


def test_drill_steps_are_numbered_in_order() -> None:
    # the terminal shows the markdown as text: "1. 1. 1." would not count the steps
    report = RestoreDrillReport(vmid=101, name="dns", steps=["restore", "tag", "start"])
    text = report.markdown()
    assert "1. restore\n2. tag\n3. start" in text


def test_job_gaps_by_what_each_job_selects_and_where_it_writes() -> None:
    from labops.backups.models import BackupGuest
    from labops.backups.report_rows import job_gaps, job_includes
    from labops.models.pve import PveBackupJob

    def g(vmid: int, node: str = "pve1", pool: str | None = None) -> BackupGuest:
        return BackupGuest(vmid=vmid, name=f"g{vmid}", node=node, type="lxc", pool=pool)

    def job(id_: str, storage: str, **kw: object) -> PveBackupJob:
        return PveBackupJob.model_validate({"id": id_, "storage": storage, **kw})

    every = job("all", "pbs", all=1, exclude="102", node="pve1")
    assert job_includes(every, g(101)) and not job_includes(every, g(102))
    assert not job_includes(every, g(103, node="pve2"))
    assert job_includes(job("p", "pbs", pool="prod"), g(104, pool="prod"))
    assert not job_includes(job("v", "pbs", vmid="1010,105"), g(101))

    jobs = [
        job("nightly", "pbs", vmid="101"),
        job("old", "pbs", vmid="102", enabled=0),
        job("local", "local", vmid="103,101"),
    ]
    guests = [g(101), g(102), g(103), g(104)]
    assert job_gaps(guests, jobs, ["pbs"], [101, 102, 103, 104]) == [
        "guest 102 (g102) is only in disabled backup job(s): old",
        "guest 103 (g103): its backup job(s) local (to local) write where its backups do not "
        "count (pbs)",
    ]  # 104 is in no job: PVE's own not-backed-up list names it
    assert job_gaps(guests, jobs, ["pbs"], [101]) == []  # only watched guests
