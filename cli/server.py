"""``labops server start|stop|status``: the local Prefect server (API + UI).

``start`` runs the server in the background (pid and state files in its ``PREFECT_HOME``);
``start --foreground`` becomes the server (what systemd runs: deploy/systemd/labops-server.service).
Both refuse a non-loopback address without ``PREFECT_SERVER_API_AUTH_STRING`` unless
``--insecure``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from cli.common import progress
from labops import prefect_server
from labops.errors import ConfigError


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("server", help="start, stop or check the local Prefect server")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="PREFECT_HOME of the server (default: ./.prefect; with --foreground: "
        "$PREFECT_HOME, else ./.prefect)",
    )
    parser.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default: ${prefect_server.HOST_ENV}, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: ${prefect_server.PORT_ENV}, else 4200)",
    )
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="start: run the server in this process's place, with this environment (the "
        "systemd unit's way: the database, auth string and retention come from its env file); "
        "no pid file, stop it as its supervisor does",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="PostgreSQL URL (default: $PREFECT_API_DATABASE_CONNECTION_URL, else SQLite); "
        "the database is created if missing",
    )
    parser.add_argument("--no-ui", action="store_true", help="serve the API only")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help=f"allow a non-loopback --host without {prefect_server.SERVER_AUTH_ENV} (warned "
        "about on stderr and in the server log); without it such a start is refused",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="labops config whose platform.retention_days sets how long the server keeps flow "
        "runs (default: $LABOPS_CONFIG or ./labops.yaml when present, else 30 days)",
    )
    parser.set_defaults(handler=handle)


def _retention_days(args: argparse.Namespace) -> int:
    """``platform.retention_days`` of the config; the policy default when there is none."""
    from labops.config import config_path, load_config
    from labops.config.policies.platform import PlatformPolicy
    from labops.errors import ConfigError

    try:
        path = config_path(args.config)
    except ConfigError:
        return PlatformPolicy().retention_days
    return load_config(path, check_secrets=False).platform.retention_days


def _announce(info: prefect_server.ServerInfo) -> None:
    print(f"Prefect server running (pid {info.pid}, {info.database})")
    print(f"  UI:   {info.ui_url}")
    print(f"  API:  {info.api_url}")
    print(f"  log:  {info.log_file}")
    if info.auth:
        print(f"  auth: basic auth ({prefect_server.SERVER_AUTH_ENV}); /api/health stays open")
    if info.home == prefect_server.default_home().resolve():  # where commands look for it
        print(f"  labops commands started in {info.home.parent} report to it; from elsewhere:")
    print(f"export PREFECT_API_URL={info.api_url}")
    if info.auth:
        # the variable's name, never its value: this output ends up in terminals and logs
        client, server = prefect_server.CLIENT_AUTH_ENV, prefect_server.SERVER_AUTH_ENV
        print(f'export {client}="${server}"   # clients send the same user:password')


def _foreground(args: argparse.Namespace, host: str, port: int) -> NoReturn:
    """Become the server (``os.execve``): systemd supervises Prefect's own process."""
    home = args.home or Path(os.environ.get("PREFECT_HOME") or prefect_server.default_home())
    if args.postgres:
        prefect_server.ensure_postgres_database(prefect_server.with_database(args.postgres))
    wanted = prefect_server.vacuum_env(0)
    # retention from the config only where the env file does not set it
    defaults = (
        {}
        if all(k in os.environ for k in wanted)
        else prefect_server.vacuum_env(_retention_days(args))
    )
    database = prefect_server.with_database(args.postgres) if args.postgres else None
    argv, env = prefect_server.foreground_command(
        home.resolve(), host, port, ui=not args.no_ui, database_url=database, defaults=defaults
    )
    progress(f"labops: the Prefect server takes over this process, on {host}:{port}")
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def handle(args: argparse.Namespace) -> int:
    home = args.home or prefect_server.default_home()
    if args.action == "start":
        host, port = prefect_server.bind_address(args.host, args.port)
        auth = os.environ.get(prefect_server.SERVER_AUTH_ENV) or None
        refusal = prefect_server.bind_refusal(host, auth is not None)
        note = None
        if refusal and not args.insecure:
            raise ConfigError(refusal)
        if refusal:
            note = prefect_server.insecure_warning(host, port)
            print(note, file=sys.stderr, flush=True)
        if args.foreground:
            _foreground(args, host, port)
        database = args.postgres or prefect_server.database_url_from_env()
        progress(f"labops: starting the Prefect server in {home} (this takes 15-30 s)...")
        days = _retention_days(args)
        info = prefect_server.start(
            home,
            host=host,
            port=port,
            database_url=database,
            ui=not args.no_ui,
            extra_env=prefect_server.vacuum_env(days),
            auth_string=auth,
            log_note=note,
        )
        _announce(info)
        print(f"  retention: flow runs, logs and artifacts pruned after {days} days")
        return 0
    if args.action == "stop":
        stopped = prefect_server.stop(home)
        print("Prefect server stopped" if stopped else f"no Prefect server running from {home}")
        return 0
    running = prefect_server.status(home)
    if running is None:
        print(f"no Prefect server running from {home}")
        return 1
    healthy = prefect_server.is_healthy(running.api_url)
    _announce(running)
    print(f"  health: {'ok' if healthy else 'not answering'}")
    if healthy and running.auth:
        problem = prefect_server.access_problem(running.api_url)
        print(f"  this shell: {problem}" if problem else "  this shell: credentials accepted")
    if os.environ.get("PREFECT_API_URL") not in (None, running.api_url):
        print(f"note: PREFECT_API_URL is {os.environ['PREFECT_API_URL']}, not this server")
    return 0 if healthy else 1
