"""The flow ``bench_trigger`` starts: its first task writes ``time.time()`` to a file.

Stand-alone on purpose (imports only prefect): a process worker loads it with
``Flow.from_source(source=<bench dir>, entrypoint="trigger_flow.py:triggered")``.

    python -m bench.trigger_flow serve NAME    # serve it as deployment bench-trigger/NAME
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow, task


@task(name="stamp")
def stamp(path: str) -> float:
    """Writes the moment the first task started to ``path``; changes nothing else."""
    now = time.time()
    Path(path).write_text(repr(now))
    return now


@flow(name="bench-trigger")
def triggered(path: str) -> float:
    """The benchmark's tiny flow: one task recording when it started."""
    return stamp(path)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: python -m bench.trigger_flow serve NAME")
    triggered.serve(name=sys.argv[2], pause_on_shutdown=False, print_starting_message=False)
