"""The flow the patch-check bench runs: labops' batched SSH check of every host in a spec file.

Both labops contenders of ``bench/bench_patch.py`` run it: the cold one calls it in a fresh
process (its imports timed), the warm one as a deployment (``Flow.from_source(<repo>,
"bench/patch_flow.py:bench_patch_check")``) whose run ``labops worker``'s starter forks.
Reads hosts only (the check command); changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

from prefect import flow, task
from prefect.utilities.annotations import quote

import flows  # noqa: F401  (what every labops flow process imports: the heartbeat fix)
from blocks.ssh import SshCredentials
from labops.ssh import SshTarget
from labops.ssh_settings import SshSettings
from tasks.ssh import CheckOptions, HostAccess, check_hosts


@task(name="bench-inventory")
def inventory(n: int) -> int:
    """Stands in for the patch flow's inventory tasks."""
    return n


@flow(name="bench-patch-check")
def bench_patch_check(spec_file: str, result_file: str = "") -> dict[str, Any]:
    """Check every host of the spec over SSH (the check-mode core); only reads."""
    spec = json.loads(Path(spec_file).read_text())
    creds = SshCredentials(
        settings=SshSettings(
            user="root",
            key_file=spec["key_file"],
            known_hosts=spec["known_hosts"],
            parallel=spec["parallel"],
        )
    )
    hosts = [
        HostAccess(
            name=h["name"], ssh=SshTarget(name=h["name"], address=h["address"], port=h["port"])
        )
        for h in spec["hosts"]
    ]
    # The patch flow runs its inventory tasks before the check: the process's first task run
    # starts the API clients and the events worker, a one-time cost that belongs to the fixed
    # cost, not to the sweep.
    inventory(len(hosts))
    t, c = time.perf_counter(), time.process_time()
    quoted = cast(list[HostAccess], quote(hosts))  # as flows.patch_steps passes them
    checked = check_hosts(creds, quoted, CheckOptions(), spec["parallel"])
    out: dict[str, Any] = {
        "task_s": time.perf_counter() - t,
        "task_cpu_s": time.process_time() - c,
        "ok": sum(1 for r in checked if r.run.state == "ok" and r.facts and not r.facts.problem),
        # the slowest host's own time: tells a straggler from orchestration
        "slowest_s": max((r.run.duration_s or 0.0 for r in checked), default=0.0),
    }
    if result_file:
        Path(result_file).write_text(json.dumps(out))
    return out
