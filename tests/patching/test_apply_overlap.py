"""Jobs overlapping a patch run on the sandbox: the PVE backup job of the nodes being patched
refuses them (never patched, no approval asked for nothing); other jobs are listed."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.patching.helpers import (
    derived_config,
    fleet_as_seeded,  # noqa: F401 (a fixture)
    pending_of,
    prime,
    report_of,
    run_paused_flow,
)

pytestmark = pytest.mark.usefixtures("prefect_server", "fleet_as_seeded")
OPEN = [{"start": "00:00", "end": "23:59"}]


def at(sandbox: Any, hour: int, minute: int) -> datetime:
    lab = yaml.safe_load(Path(sandbox.config_path).read_text())["lab"]
    zone = ZoneInfo(lab.get("timezone") or "UTC")
    return datetime.now(zone).replace(hour=hour, minute=minute, second=0, microsecond=0)


def test_backup_job_of_a_patched_node_refuses_it(
    sandbox_clean: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """01:55, a 10-minute plan: the infra nightly (02:00, PVE backup job) runs on the nodes of
    its guests, so they are refused; nothing is left to approve."""
    import flows.patching as fp

    sb = sandbox_clean
    prime(sb, "dns-primary")
    before = pending_of(sb, "dns-primary")
    monkeypatch.setattr(fp, "now", lambda: at(sb, 1, 55))
    cfg = derived_config(
        sb, tmp_path, windows=OPEN, refresh=False, overlaps="refuse-same-node", canary_count=0
    )
    state, paused = run_paused_flow(
        lambda: fp.patch_apply(config=cfg, hosts=["dns-primary"], return_state=True), cfg, None
    )
    assert paused is None
    report = report_of(state)
    row = next(a for a in report.applied if a.host == "dns-primary")
    assert row.outcome == "skipped"
    assert row.detail.startswith("REFUSED: pve-backup backup-2c5f1e8a-91d3 (*-*-* 02:00)")
    assert any("backup-2c5f1e8a-91d3" in o for o in report.overlaps)
    assert any(f.entity == "host dns-primary" for f in report.failures)
    assert pending_of(sb, "dns-primary") == before
    assert "## Jobs in the window" in report.markdown()


def test_list_mode_names_the_job_and_goes_on(
    sandbox_clean: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.patching as fp

    sb = sandbox_clean
    prime(sb, "dns-primary")
    monkeypatch.setattr(fp, "now", lambda: at(sb, 1, 55))
    cfg = derived_config(sb, tmp_path, windows=OPEN, refresh=False, canary_count=0)
    state, paused = run_paused_flow(
        lambda: fp.patch_apply(config=cfg, hosts=["dns-primary"], return_state=True),
        cfg,
        {"approve": True},
    )
    assert paused is not None
    report = report_of(state)
    assert any(o.startswith("overlaps: pve-backup backup-2c5f1e8a-91d3") for o in report.overlaps)
    assert {a.host: a.outcome for a in report.applied} == {"dns-primary": "patched"}


def test_pbs_sync_and_gc_jobs_are_read_for_overlaps(sandbox_clean: Any, tmp_path: Path) -> None:
    """The sandbox PBS's sync job (``/admin/sync``) and garbage collection (the datastore's
    ``gc-schedule`` in ``/config/datastore``) run daily at 00:00: a window across midnight lists
    them with the verify and prune jobs, a window at noon lists none of them."""
    from blocks.context import LabContext
    from flows.patch_overlap import jobs_of
    from labops.patching.overlap import overlaps
    from labops.patching.report import PatchReport

    sb = sandbox_clean
    ctx = LabContext.load(derived_config(sb, tmp_path, canary_count=0))
    report = PatchReport()

    def pbs_kinds(start: datetime, end: datetime) -> dict[str, str]:
        found = overlaps(jobs_of(ctx, start, end, report), start, end, ["pve1"])
        return {o.job.kind: o.job.name for o in found if o.job.kind.startswith("pbs-")}

    night = at(sb, 23, 50)
    in_window = pbs_kinds(night, night + timedelta(minutes=30))
    assert in_window == {
        "pbs-verify": "v-daily",
        "pbs-prune": "p-daily",
        "pbs-sync": "s-offsite",
        "pbs-gc": "store1",
    }
    noon = at(sb, 12, 0)
    assert pbs_kinds(noon, noon + timedelta(minutes=30)) == {}
    assert report.failures == []
