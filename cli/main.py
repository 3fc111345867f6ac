"""``labops`` entry point: one argparse sub-command per module in ``COMMANDS``.

To add a command group, write ``cli/<name>.py`` with ``add_parser(subparsers)`` that registers its
parser and sets ``handler=<function(args) -> int>``, then add the module to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from cli.common import ArgumentParser
from labops import prefect_server
from labops.errors import ConfigError, LabopsError, one_line
from labops.outcome import EXIT_CONFIG, EXIT_FAILED
from labops.redact import install_log_filter, redact

COMMANDS: dict[str, str] = {
    "run": "cli.run",
    "config": "cli.config_cmd",
    "init": "cli.init_cmd",
    "server": "cli.server",
    "sandbox": "cli.sandbox",
    "deploy": "cli.deploy",
    "serve": "cli.serve",
    "worker": "cli.worker",
    "bridge": "cli.bridge",
    "approvals": "cli.approvals",
    "alerts": "cli.alerts",
    "healthchecks": "cli.healthchecks",
    "bench": "cli.bench",
}
"""Command name -> module providing ``add_parser(subparsers)``."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="labops", description="Operations of a self-hosted Proxmox homelab, as Prefect flows."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any command module imports Prefect, which reads its settings once, at import:
    # telemetry off, and the API of the server `labops server start` recorded (unless exported).
    touched = (prefect_server.API_URL_ENV, *prefect_server.NO_TELEMETRY_ENV)
    saved = {key: os.environ.get(key) for key in touched}
    for note in prefect_server.client_environment(os.environ):
        print(f"labops: {note}", file=sys.stderr)
    try:
        return _main(argv)
    finally:  # called in-process (tests): leave the caller's environment as it was
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    install_log_filter()  # expected errors as one line, secrets masked, from the first record
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except LabopsError as exc:
        print(redact(f"error: {one_line(exc)}"), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
