"""The patch check flow reaches VMs without an SSH address through their QEMU guest agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.patching.helpers import derived_config, report_of

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_vms_checked_through_the_agent_one_without_agent_could_not_check(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    from flows.patching import patch_check

    sb = sandbox_clean
    cfg = derived_config(sb, tmp_path, check_timeout_s=10)
    sb.set_faults("pve", extra={"agent_down": [801]})
    state = patch_check(config=cfg, hosts=["haos", "win11", "opnsense-lab"], return_state=True)
    report = report_of(state)
    rows = {h.host: h for h in report.hosts}
    assert {"haos", "win11", "opnsense-lab"} <= set(rows)
    haos = rows["haos"]
    assert haos.access == "agent" and haos.kind == "vm" and haos.known
    assert haos.package_manager == "apt" and haos.os != "unknown"
    win11 = rows["win11"]
    assert not win11.known and win11.state == "error"
    assert "could not check: guest agent not running" in win11.detail
    assert report._row(win11)["pending"] == "?"  # never "up to date"
    assert "host win11" in {f.entity for f in report.failures}
    assert state.is_failed()
