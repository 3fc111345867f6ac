"""Intentional orphans: backups of deleted guests kept on purpose are archived, never a
coverage gap, and alerted only when they change (deleted, unprotected, keep-until passed)."""

from __future__ import annotations

from datetime import date

from labops.backups.archive import ArchiveMemory, audit_archive
from labops.backups.audit import orphans
from labops.backups.models import BackupCopy, OrphanGroup
from labops.backups.report import BackupReport
from labops.config.policies.backups import ArchivedGuest, BackupPolicy
from labops.outcome import Severity

TODAY = date(2026, 12, 5)
NOW = 1_780_000_000.0


def group(vmid: int, count: int = 2, protected: int = 0, storage: str = "pbs") -> OrphanGroup:
    return OrphanGroup(
        vmid=vmid, storage=storage, count=count, newest=NOW, size=2**30, protected=protected
    )


def test_protected_or_listed_orphans_are_archived_the_rest_are_gaps() -> None:
    listed = [ArchivedGuest(vmid=301, note="old wiki, legal hold", keep_until=date(2027, 1, 1))]
    audit = audit_archive([group(199), group(201, protected=1), group(301)], listed, TODAY, None)
    assert [o.vmid for o in audit.orphans] == [199]
    assert [(a.vmid, a.why) for a in audit.archived] == [(201, "protected"), (301, "listed")]
    assert audit.archived[1].note == "old wiki, legal hold"
    assert audit.changes == []  # first run: nothing to compare with
    assert set(audit.memory.groups) == {"201@pbs", "301@pbs"}


def test_orphans_count_protected_copies() -> None:
    copies = [
        BackupCopy(
            volid=f"pbs:backup/ct/199/{i}", storage="pbs", vmid=199, ctime=NOW + i, protected=i == 0
        )
        for i in range(3)
    ]
    (found,) = orphans(copies, existing_vmids=[100])
    assert (found.count, found.protected) == (3, 1)


def test_unchanged_archive_is_silent_then_each_change_is_alerted_once() -> None:
    listed = [ArchivedGuest(vmid=301, keep_until=date(2026, 12, 31))]
    first = audit_archive([group(201, protected=2), group(301, count=3)], listed, TODAY, None)
    again = audit_archive(
        [group(201, protected=2), group(301, count=3)], listed, TODAY, first.memory
    )
    assert again.changes == [] and len(again.archived) == 2

    # one backup deleted from 301, protection removed from 201 (not listed: a gap again)
    changed = audit_archive([group(201), group(301, count=2)], listed, TODAY, again.memory)
    assert "archived backups of guest 301 on pbs: 1 deleted (2 left)" in changed.changes
    assert any("201 on pbs: protection removed from 2" in c for c in changed.changes)
    assert [o.vmid for o in changed.orphans] == [201]
    later = audit_archive([group(201), group(301, count=2)], listed, TODAY, changed.memory)
    assert later.changes == []  # alerted once, not on every run


def test_keep_until_passed_and_everything_deleted() -> None:
    listed = [ArchivedGuest(vmid=301, keep_until=date(2026, 12, 4))]
    before = ArchiveMemory.model_validate(
        {
            "groups": {
                "301@pbs": {"count": 2, "protected": 0},
                "302@nfs": {"count": 4, "protected": 4},
            }
        }
    )
    audit = audit_archive([group(301)], listed, TODAY, before)
    assert "archived backups of guest 301 on pbs: keep-until 2026-12-04 passed" in audit.changes
    assert "archived backups of guest 302 on nfs: all 4 deleted" in audit.changes
    assert [o.vmid for o in audit.orphans] == [301]  # expired and unprotected: a gap again
    # expired but protected: still archived, the expiry told once
    protected = audit_archive([group(301, protected=1)], listed, TODAY, before)
    assert protected.archived[0].why == "protected"
    assert audit_archive([group(301, protected=1)], listed, TODAY, protected.memory).changes == []


def test_report_shows_archive_and_alerts_on_changes_only() -> None:
    archived = audit_archive([group(201, protected=1)], [], TODAY, None).archived
    quiet = BackupReport(lab="home", archived=archived)
    assert quiet.gaps == [] and quiet.found() == [] and quiet.notification() is None
    assert "## Archived" in quiet.markdown() and "guest 201 on pbs" in quiet.markdown()
    loud = quiet.model_copy(update={"archive_changes": ["archived backups of guest 201: x"]})
    (finding,) = loud.found()
    assert finding.severity is Severity.WARNING and "archived" in finding.what
    message = loud.notification()
    assert message is not None and "Archived backups changed" in message.body


def test_policy_reads_archived_entries() -> None:
    policy = BackupPolicy.model_validate(
        {"archived": [{"vmid": 199, "note": "old wiki", "keep_until": "2027-06-30"}]}
    )
    assert policy.archived[0].keep_until == date(2027, 6, 30)
