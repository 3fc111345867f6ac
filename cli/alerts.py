"""``labops alerts``: the vmalert/Prometheus rules of the dead-man's switch, from the config.

Two rules per flow in ``platform.heartbeat_max_age_hours``: LabopsFlowSilent (no heartbeat at all
in the window) and LabopsFlowStale (last success too old), for the config's lab only (``lab``
label). Load the file into vmalert
(``-rule=/etc/vmalert/labops-rules.yml``) or Prometheus (``rule_files``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.common import RawDescriptionFormatter, add_config_option
from labops.config import config_path, load_config
from labops.errors import LabopsError


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "alerts",
        help="print or write the vmalert rules that alert when a flow stops succeeding",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=RawDescriptionFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write the rules here (default: stdout)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from deployments.alerts import render

    # Rules need no secrets: they can be rendered on the monitoring host, without the env file.
    config = load_config(config_path(args.config), check_secrets=False)
    text = render(config.platform, config.lab.name)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LabopsError(f"--output {args.output}: {exc.strerror}") from None
    print(f"wrote {len(config.platform.heartbeat_max_age_hours) * 2} rules to {args.output}")
    return 0
