"""``labops sandbox start|stop|status``: the simulated homelab (``python -m sandbox``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

DEFAULT_DIR = ".labops/sandbox"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sandbox",
        help="start, stop or check the sandbox homelab",
        description="The sandbox writes its labops config to DIR/labops.yaml. Every action "
        f"takes {DEFAULT_DIR} (from the current directory) unless --dir names another one.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory ({DEFAULT_DIR})")
    parser.add_argument(
        "--json", action="store_true", help="status: the sandbox's raw state (its ready file)"
    )
    parser.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        help="options for python -m sandbox, e.g. -- --time-scale 0.05 --scenario NAME",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    extra = [a for a in args.extra if a != "--"]
    command = [sys.executable, "-m", "sandbox", args.action, "--dir", args.dir, *extra]
    if args.action != "status" or args.json:
        return subprocess.call(command)
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        ready = json.loads(proc.stdout)
    except ValueError:  # "not running", "starting (pid N)": already one short line
        print(proc.stdout.strip() or proc.stderr.strip())
        return proc.returncode
    print(status_table(ready))
    return proc.returncode


def status_table(ready: dict[str, Any]) -> str:
    """The sandbox's state in a few lines: where it runs, then one row per service."""
    ports: dict[str, list[int]] = ready.get("ports") or {}
    failed: dict[str, str] = ready.get("failed") or {}
    rows = [["SERVICE", "PORTS", "STATE"]]
    for name in sorted(set(ports) | set(failed)):
        listed = ports.get(name) or []
        shown = ", ".join(str(p) for p in listed[:3]) + (
            f" (+{len(listed) - 3})" if len(listed) > 3 else ""
        )
        rows.append([name, shown or "-", f"FAILED: {failed[name]}" if name in failed else "up"])
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [
        f"sandbox running (pid {ready.get('pid')}), control {ready.get('control_url')}, "
        f"ready in {ready.get('startup_s')} s, time scale {ready.get('time_scale')}",
        f"config: {ready.get('config')}",
        "",
    ]
    lines += [f"{r[0].ljust(width[0])}  {r[1].ljust(width[1])}  {r[2]}".rstrip() for r in rows]
    return "\n".join(lines)
