"""``labops sandbox start|stop|status``: the simulated homelab (``python -m sandbox``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

DEFAULT_DIR = ".labops/sandbox"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sandbox",
        help="start, stop or check the sandbox homelab",
        description="The sandbox writes its labops config to DIR/labops.yaml.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory ({DEFAULT_DIR})")
    parser.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        help="options for python -m sandbox, e.g. -- --time-scale 0.05 --scenario NAME",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    extra = [a for a in args.extra if a != "--"]
    command = [sys.executable, "-m", "sandbox", args.action, "--dir", args.dir, *extra]
    return subprocess.call(command)
