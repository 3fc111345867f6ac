"""One process that serves every labops deployment of one lab (the small-lab way to run labops).

``labops serve`` (or ``python -m deployments.serve``) registers each of the config's lab's
deployments (``<flow>/<lab>``) with its schedule and runs its flow runs in this process (each lab
sharing the server serves its own); a lab that outgrows one machine uses a work pool and
``prefect worker start`` instead (``labops deploy --pool``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deployments.definitions import deployment_specs, retire_old_deployments, runner_deployments
from deployments.poll import serve_poll_s
from labops.config import config_path, load_config
from tasks.prefect_admin import ensure_zombie_automation


def serve(config: str | None = None, only: list[str] | None = None, limit: int = 4) -> None:
    """Serve the lab's deployments (all, or ``only`` these flows') until interrupted."""
    from prefect import serve as prefect_serve

    path = config_path(config)
    cfg = load_config(path)
    specs = [s for s in deployment_specs(cfg, Path(path)) if not only or s.flow in only]
    deployments = runner_deployments(specs)
    # the lab's deployments named after the flow would still be scheduled, served by nobody
    retire_old_deployments(specs, cfg.lab.name)
    # A killed run must not hold "Running" (and the no-overlap slot) until housekeeping first runs.
    ensure_zombie_automation.fn(cfg.platform.zombie_after_seconds)
    # pause_on_shutdown=False: a restart (upgrade, reboot) must not silently pause schedules.
    # query_seconds: API and MQTT runs start within about a second (deployments/poll.py).
    prefect_serve(
        *deployments,
        limit=limit,
        pause_on_shutdown=False,
        print_starting_message=True,
        query_seconds=serve_poll_s(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="labops serve", description=__doc__)
    parser.add_argument("--config", help="labops config file")
    parser.add_argument("--only", nargs="*", help="serve only these flows' deployments")
    parser.add_argument("--limit", type=int, default=4, help="flow runs at once")
    args = parser.parse_args(argv)
    serve(args.config, args.only, args.limit)


if __name__ == "__main__":
    main()
