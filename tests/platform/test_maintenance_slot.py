"""Backups and patch apply never change the lab at the same time: they share the lab's
maintenance slot (a Prefect global concurrency limit named after ``lab.name``). While one holds
it the other waits (``platform.maintenance_wait_minutes``), then reports it could not start."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.limits import maintenance_limit, maintenance_slot
from tests.patching.helpers import derived_config, report_of

OPEN = [
    {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
]


def with_platform(path: str, **platform: Any) -> str:
    cfg = yaml.safe_load(Path(path).read_text())
    cfg["platform"] = {**cfg.get("platform", {}), **platform}
    Path(path).write_text(yaml.safe_dump(cfg))
    return path


def lab_name(config: str) -> str:
    return str(yaml.safe_load(Path(config).read_text())["lab"]["name"])


@contextmanager
def held(lab: str) -> Iterator[None]:
    """The slot taken, as another labops run of this lab would hold it."""
    with maintenance_slot(lab, 1, "test"):
        yield


def test_backups_report_could_not_start_while_patch_apply_holds_the_slot(
    prefect_server: Any, sandbox: Any, tmp_path: Path
) -> None:
    from flows.backups import backups
    from labops.backups.report import BackupReport

    guest = next(g for g in sandbox.pve().cluster.resources.get(type="vm") if not g.get("template"))
    cfg = derived_config(sandbox, tmp_path)
    raw = yaml.safe_load(Path(cfg).read_text())
    raw["backups"] = {"tiers": {"short": {"rpo": "1m"}}, "default_tier": "short", "tier_tags": {}}
    Path(cfg).write_text(yaml.safe_dump(raw))
    with_platform(cfg, maintenance_wait_minutes=0.02)  # about a second
    mark = sandbox.journal_mark()
    with held(lab_name(cfg)):
        state = backups(config=cfg, vmids=[int(guest["vmid"])], return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, BackupReport), report
    assert state.is_failed()
    assert report.vzdump_started == 0
    failed = [f.reason for f in report.failures if str(guest["vmid"]) in f.entity]
    assert failed and "could not start" in failed[0], report.failures
    assert maintenance_limit(lab_name(cfg)) in failed[0]
    writes = [e for e in sandbox.journal(mark) if "vzdump" in str(e)]
    assert writes == [], writes


def test_patch_apply_waits_for_the_slot_then_applies(
    prefect_server: Any, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.patching as patching

    monkeypatch.setattr(patching, "_is_scheduled", lambda: True)
    reached = threading.Event()
    real_slot = patching.maintenance_slot

    @contextmanager
    def spied(*args: Any, **kwargs: Any) -> Iterator[None]:
        reached.set()
        with real_slot(*args, **kwargs):
            yield

    monkeypatch.setattr(patching, "maintenance_slot", spied)
    host = "it-tools"
    sandbox.control("fleet", "set_pending", host=host, packages=[{"name": "tzdata"}], held=[])
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canary_count=0,
        preapproved_scheduled=True,
        delete_snapshots_after_h=0,
    )
    with_platform(cfg, maintenance_wait_minutes=10)
    out: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        out["state"] = patching.patch_apply(config=cfg, hosts=[host], return_state=True)

    with held(lab_name(cfg)):
        thread = threading.Thread(target=lambda: context.run(run), daemon=True)
        thread.start()
        assert reached.wait(120), "patch apply never reached the maintenance slot"
        mark = sandbox.journal_mark()
        deadline = time.monotonic() + 3  # a window long enough to see it would have gone on
        while time.monotonic() < deadline:
            assert thread.is_alive(), "patch apply did not wait for the slot"
            assert sandbox.control("fleet", "state", host=host)["pending"], "patched while held"
            time.sleep(0.2)
        assert sandbox.journal(mark) == []
    thread.join(180)
    assert not thread.is_alive()
    report = report_of(out["state"])
    assert [a.outcome for a in report.applied] == ["patched"], report
    assert not sandbox.control("fleet", "state", host=host)["pending"]
