"""``labops serve``: one process that runs every labops deployment of one lab (the small-lab way).

It registers the lab's deployments (``<flow>/<lab>``) with their schedules (like ``labops
deploy``) and executes their scheduled, UI, API and MQTT-started runs until stopped; a second
lab on the same Prefect server runs a ``labops serve`` of its own, with its own config.
Stopping it does not pause the schedules: runs due while it is down turn Late and start when it
is back. Run it under systemd (deploy/systemd/labops-serve.service).
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import RawDescriptionFormatter, add_config_option, load, progress
from cli.deploy import chosen_specs, require_server
from deployments.catalog import FLOWS


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run every deployment's flow runs in this process (until stopped)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=RawDescriptionFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--only", nargs="+", metavar="FLOW", help=f"serve only these ({', '.join(FLOWS)})"
    )
    parser.add_argument(
        "--limit", type=int, default=4, metavar="N", help="flow runs at once (default 4)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from deployments.overlaps import schedule_warnings
    from deployments.serve import serve

    path, config = load(args)  # a bad config exits 2 before anything is registered
    specs = chosen_specs(config, path, args.only)
    if args.limit < 1:
        from labops.errors import ConfigError

        raise ConfigError("--limit: must be at least 1")
    api = require_server()
    progress(f"labops: serving {len(specs)} deployment(s) from {path} against {api}")
    for line in schedule_warnings(config):
        progress(line)
    serve(str(path), [s.flow for s in specs], args.limit)
    return 0
