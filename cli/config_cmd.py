"""``labops config check|example``: validate the config and test every system; show every key."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import add_config_option, load, progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("config", help="validate the config and check every system")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate, then test reach + auth of every configured system and the TLS "
        "handshake of every configured certificate endpoint",
        description="Exit status: 0 all fine (skipped systems are counted apart, as skipped), "
        "1 a system or an endpoint failed, 2 the config is invalid.",
    )
    add_config_option(check)
    check.add_argument(
        "--offline", action="store_true", help="only validate the file, contact nothing"
    )
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds per system, and per endpoint for connect and for handshake (default 10)",
    )
    check.set_defaults(handler=handle_check)
    example = actions.add_parser(
        "example",
        help="print a commented example documenting every key",
        description="Generated from the config models: labops config example > labops.yaml",
    )
    example.set_defaults(handler=handle_example)


def handle_example(args: argparse.Namespace) -> int:
    from labops.config.example import render_example

    print(render_example(), end="")
    return 0


def handle_check(args: argparse.Namespace) -> int:
    from cli.checks import Status, check_all

    path, config = load(args)
    progress(f"labops: {path}: valid")
    if args.offline:
        return 0
    progress("labops: checking every configured system...")
    results = check_all(config, timeout_s=args.timeout)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
    else:
        print(render_table([[r.system, r.endpoint, r.status.value, r.detail] for r in results]))
    bad = [r for r in results if r.bad]
    fine = sum(1 for r in results if r.status is Status.OK)
    skipped = sum(1 for r in results if r.status is Status.SKIPPED)
    progress(
        f"labops: {fine} fine, {skipped} skipped, {len(bad)} failed"
        + (f": {', '.join(r.name for r in bad)}" if bad else "")
    )
    return 1 if bad else 0


def render_table(rows: list[list[str]]) -> str:
    header = ["SYSTEM", "ENDPOINT", "STATUS", "DETAIL"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:3], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[3])]).rstrip())
    return "\n".join(lines)
