"""A flow that takes a while (tasks sleeping), run as a subprocess by the server-restart drills.

``python -m tests.resilience.slow_flow --steps 10 --step-s 1 --id-file F`` writes the flow run id
to F as soon as the run starts, then runs the steps one task each and exits 0 when it Completed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run


@task(name="slow-step")
def slow_step(i: int, seconds: float) -> int:
    """Sleeps; changes nothing."""
    time.sleep(seconds)
    return i


@flow(name="labops-slow-drill")
def slow_drill(steps: int, step_s: float, id_file: str) -> int:
    """Announce the run id, then run ``steps`` sleeping tasks one after the other."""
    Path(id_file).write_text(str(flow_run.get_id()))
    return sum(slow_step(i, step_s) for i in range(steps))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-s", type=float, default=1.0)
    parser.add_argument("--id-file", required=True)
    args = parser.parse_args()
    state = slow_drill(args.steps, args.step_s, args.id_file, return_state=True)
    print(f"final state: {state.type.value} {state.name}", flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    raise SystemExit(main())
