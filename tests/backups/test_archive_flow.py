"""The backups flow end to end on a sandbox lab of its own: the seeded orphan, listed in
``backups.archived``, is archived (no coverage gap); deleting one of its backups on PBS is
reported once, as a warning, by the next run."""

from __future__ import annotations

from pathlib import Path

from tests.backups.test_flow import config, lab, report_of  # noqa: F401  (lab: the fixture)
from tests.fixtures.sandbox import SandboxHandle


def test_archived_orphan_is_quiet_until_it_changes(lab: SandboxHandle, tmp_path: Path) -> None:  # noqa: F811
    from flows.backups import backups

    seed = lab.state()["services"]["pbs"]["seed"]
    orphan = int(seed["orphan_vmid"])
    fresh = next(v for v in (101, 102, 103, 104) if v not in seed["stale_vmids"])
    cfg = config(
        lab,
        tmp_path,
        default_tier="7d",
        archived=[{"vmid": orphan, "note": "old wiki", "keep_until": "2099-01-01"}],
    )
    first = report_of(backups(config=cfg, vmids=[fresh], return_state=True))
    assert [a.vmid for a in first.archived] == [orphan]
    assert not any(f"guest {orphan}" in g for g in first.gaps)
    assert first.archive_changes == [] and first.vzdump_started == 0

    ds = lab.pbs().admin.datastore("store1")
    snaps = [s for s in ds.snapshots.get() if s["backup-id"] == str(orphan)]
    oldest = min(int(s["backup-time"]) for s in snaps)
    ds.snapshots.delete(**{"backup-type": "ct", "backup-id": str(orphan), "backup-time": oldest})

    second = report_of(backups(config=cfg, vmids=[fresh], return_state=True))
    assert second.archive_changes == [
        f"archived backups of guest {orphan} on pbs: 1 deleted ({len(snaps) - 1} left)"
    ]
    assert any("archived backup change" in f.what for f in second.found())
    third = report_of(backups(config=cfg, vmids=[fresh], return_state=True))
    assert third.archive_changes == []  # told once
