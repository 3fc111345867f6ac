"""A patch check's flow process imports only what a check uses.

Every run starts a fresh process that imports its flow's module (issue #17: fixed cost per run
<= 1.5 s, of which ``import prefect`` alone is ~0.7 s). Patch apply's own steps (the backup gate,
node drains, the phone approval) and the Proxmox tasks behind the check core's guest-agent path
are imported where they are used, not when the check loads. Checked in a fresh interpreter's
``sys.modules``: no timing. That apply still finds them is what tests/patching/test_apply_*.py and
test_phone_approval.py run end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_patch_check_flow_does_not_import_apply_only_steps() -> None:
    modules = loaded_after("import flows.patching")
    assert "flows.patching" in modules and "tasks.ssh" in modules
    apply_only = {"flows.patch_gate", "flows.patch_drain", "flows.patch_phone", "tasks.telegram"}
    assert not apply_only & modules, sorted(apply_only & modules)


def test_the_ssh_check_core_does_not_import_the_proxmox_tasks() -> None:
    # what the patch benchmark's labops process imports (bench/bench_patch.py)
    modules = loaded_after("import flows, blocks.ssh, labops.ssh, tasks.ssh")
    assert "tasks.ssh" in modules
    assert not {"tasks.pve", "labops.config"} & modules
