"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from labops.config import LabopsConfig, config_path, load_config


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="config file (default: $LABOPS_CONFIG, ./labops.yaml, .labops/sandbox/labops.yaml)",
    )


def load(args: argparse.Namespace) -> tuple[Path, LabopsConfig]:
    """The config file chosen by ``--config`` and its validated content (ConfigError if bad)."""
    path = config_path(args.config).resolve()
    return path, load_config(path)


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays for results, e.g. ``--json``)."""
    print(message, file=sys.stderr, flush=True)


def use_local_server() -> str | None:
    """Point Prefect at the server ``labops server start`` runs, unless PREFECT_API_URL is set.

    Without an API URL Prefect would start a throwaway server, and the run would vanish with it.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from labops import prefect_server

    info = prefect_server.status()
    if info is not None and prefect_server.is_healthy(info.api_url):
        os.environ["PREFECT_API_URL"] = info.api_url
        return info.api_url
    return None
