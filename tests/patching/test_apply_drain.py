"""Drain-aware node reboots on the sandbox (patching.drain): the node's running guests migrate
away through PVE migration tasks, the node reboots, they come home; a failed migration stops the
node's reboot and puts back what had moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.patching.helpers import (
    apply_approved,
    fleet_as_seeded,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.usefixtures("prefect_server", "fleet_as_seeded")


def on_node(sandbox: Any, node: str) -> dict[int, str]:
    """vmid -> status of the guests on ``node`` (templates left out)."""
    return {
        int(g["vmid"]): g["status"]
        for g in sandbox.pve().cluster.resources.get(type="vm")
        if g.get("node") == node and not g.get("template")
    }


def migrations(sandbox: Any) -> list[str]:
    """The migration tasks every node lists (UPIDs)."""
    pve = sandbox.pve()
    out = []
    for n in pve.nodes.get():
        if n.get("status") == "online":
            out += [
                t["upid"]
                for t in pve.nodes(n["node"]).tasks.get(limit=500)
                if t.get("type") in ("qmigrate", "vzmigrate")
            ]
    return out


def reboot_pve1(sandbox: Any, tmp_path: Path, **patching: Any) -> Any:
    """Patch pve1 as seeded (a new kernel: it asks for a reboot)."""
    return apply_approved(
        sandbox,
        tmp_path,
        ["pve1"],
        reboot="when-required",
        node_boot_timeout_s=60,
        exclusions={"packages": ["ceph-common"]},
        **patching,
    )


def test_guests_migrate_away_and_come_home_after_the_reboot(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    sb = sandbox_clean
    before = on_node(sb, "pve1")
    running = sorted(v for v, s in before.items() if s == "running")
    assert running
    tasks_before = set(migrations(sb))
    report = reboot_pve1(sb, tmp_path, drain={"mode": "migrate"})
    node = next(a for a in report.applied if a.host == "pve1")
    assert node.outcome == "patched" and node.rebooted, (node, report.failures)
    assert not report.failures, report.failures
    assert report.drains[0].startswith("pve1: move ")
    assert report.drains[-1] == "pve1: back; guests returned"
    # there and back again: two migration tasks per running guest, all home and running
    assert len(set(migrations(sb)) - tasks_before) == 2 * len(running)
    assert on_node(sb, "pve1") == before
    assert "## Node drains (patching.drain)" in report.markdown()


def test_a_failed_migration_stops_the_reboot_and_puts_back_what_moved(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    sb = sandbox_clean
    before = on_node(sb, "pve1")
    running = sorted(v for v, s in before.items() if s == "running")
    assert len(running) >= 2
    kernel_before = sb.control("fleet", "state", host="pve1")["kernel_running"]
    sb.set_faults("pve", extra={"failing_migrations": [running[-1]]})
    report = reboot_pve1(sb, tmp_path, drain={"mode": "migrate"})
    node = next(a for a in report.applied if a.host == "pve1")
    assert not node.rebooted and "reboot not done: migration of" in node.detail
    assert "migration aborted" in node.detail
    assert any(f.entity == "node pve1" and f.reason.startswith("drain:") for f in report.failures)
    assert sb.control("fleet", "state", host="pve1")["kernel_running"] == kernel_before
    assert on_node(sb, "pve1") == before  # the guests that had moved are back


def test_shutdown_mode_stops_and_starts_the_guests(sandbox_clean: Any, tmp_path: Path) -> None:
    sb = sandbox_clean
    before = on_node(sb, "pve1")
    report = reboot_pve1(sb, tmp_path, drain={"mode": "shutdown"})
    node = next(a for a in report.applied if a.host == "pve1")
    assert node.rebooted and not report.failures, report.failures
    assert "shut down" in report.drains[0]
    assert on_node(sb, "pve1") == before
