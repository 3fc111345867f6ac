"""``labops bench``: run the benchmarks under ``bench/`` and write the markdown table.

The benchmarks live in the source checkout (they start sandboxes and Prefect servers of their
own), so the command runs ``python -m bench.run_all`` from the checkout this package sits in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from labops.errors import LabopsError

CHECKOUT = Path(__file__).resolve().parents[1]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "bench",
        help="run the benchmarks and write bench/results/latest.md",
        description="Runs every bench/bench_*.py (see bench/README.md) one after the other; "
        "about ten minutes on a 2-core machine, under two with --quick.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="only these, e.g. --only orchestration trigger"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="markdown file for the table (default: bench/results/latest.md)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per benchmark (default 300)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not (CHECKOUT / "bench" / "run_all.py").is_file():
        raise LabopsError(f"labops bench needs the source checkout; no bench/ under {CHECKOUT}")
    cmd = [sys.executable, "-m", "bench.run_all"]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", *args.only]
    if args.output is not None:
        cmd += ["--output", str(args.output.resolve())]
    if args.timeout is not None:
        cmd += ["--timeout", str(args.timeout)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(cmd, cwd=CHECKOUT, env=env, check=False).returncode
