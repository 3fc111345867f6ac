"""``labops healthchecks``: each scheduled flow's check as Healthchecks expects it.

One line per flow: the check's name, its cron schedule, the lab's time zone and the grace time,
and whether the config already pings it (``platform.external_heartbeat.<flow>.healthchecks``).
Create the checks in Healthchecks with these values (a "Cron" schedule), then put each check's
ping URL in the config as a reference. ``--json`` prints the bodies of Healthchecks' Management
API (``POST /api/v3/checks/`` with ``X-Api-Key``), one per check.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import add_config_option
from labops.config import config_path, load_config


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "healthchecks",
        help="print each flow's schedule as Healthchecks expects it (cron, time zone, grace)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--json", action="store_true", help="the Management API's request bodies, as JSON"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from labops.pings import healthchecks_specs

    # The schedule needs no secrets: print it anywhere, without the env file.
    config = load_config(config_path(args.config), check_secrets=False)
    specs = healthchecks_specs(config)
    if args.json:
        json.dump([s.api_body() for s in specs], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [["check", "schedule", "time zone", "grace", "pinged"]]
    rows += [
        [s.name, s.schedule, s.tz, f"{s.grace // 60} min", "yes" if s.pinged else "no"]
        for s in specs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
