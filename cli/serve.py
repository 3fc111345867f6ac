"""``labops serve``: not implemented yet (placeholder for its owner to fill)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve (not yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    print("labops serve: not yet", flush=True)
    return 1
