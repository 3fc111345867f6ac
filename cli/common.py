"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from labops.config import LabopsConfig, config_path, load_config
from labops.errors import LabopsError


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
    """The Prefect API this process reports to: ``PREFECT_API_URL``, which ``cli.main`` sets to
    the server ``labops server start`` recorded when it was not exported; None when there is
    none (Prefect then starts a temporary server, and the run vanishes with it).

    A server that refuses this client's basic auth (``PREFECT_API_AUTH_STRING`` missing or not
    the server's) is a LabopsError here, before any flow run or deployment is half-made.
    """
    from labops import prefect_server

    api = os.environ.get(prefect_server.API_URL_ENV) or None
    if api is None:
        return None
    problem = prefect_server.access_problem(api)
    if problem:
        raise LabopsError(problem)
    return api


class HelpFormatter(argparse.HelpFormatter):
    """Help wrapped at spaces only: an operation name (``restore-drill``, ``patch-apply``) or an
    option is never cut at its hyphen across two lines."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        text = " ".join(text.split())
        return textwrap.fill(
            text,
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


class RawDescriptionFormatter(HelpFormatter):
    """The description and epilog as written (examples, tables); the rest as HelpFormatter."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class ArgumentParser(argparse.ArgumentParser):
    """labops' parsers: :class:`HelpFormatter` unless a command asks for another one (the
    sub-command parsers are of this class too: argparse makes them of their parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
