"""A local Prefect server for labops: start it in the background, check it, stop it.

SQLite under a project-local ``PREFECT_HOME`` by default; PostgreSQL when a database URL is given
(``--postgres URL`` or ``PREFECT_API_DATABASE_CONNECTION_URL``), the database created if missing.
The server runs in its own session, so stopping it ends its worker processes too; a pid file and a
state file in ``PREFECT_HOME`` say what runs where, the log goes to ``PREFECT_HOME/server.log``.
With an auth string the server requires Prefect's basic auth on every API call but
``/api/health`` and ``/api/ready``; :func:`api_headers` is how labops's own raw HTTP calls to
the API authenticate (Prefect's client does it by itself from ``PREFECT_API_AUTH_STRING``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel

from labops.errors import LabopsError

PID_FILE = "labops-server.pid"
STATE_FILE = "labops-server.json"
LOG_FILE = "server.log"
DB_URL_ENV = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
API_URL_ENV = "PREFECT_API_URL"
NO_TELEMETRY_ENV = {
    # the server's telemetry heartbeat (a temporary server's too)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the client's SDK analytics (and the usual opt-out any other tool may honour)
    "DO_NOT_TRACK": "1",
    # orchestration telemetry is a Prefect Cloud feature; off in case a profile points there
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
}
"""Set in every labops process and every server it starts: no telemetry attempt, ever (the
machine may have no internet; an attempt logs an error and waits on DNS)."""


class ServerError(LabopsError):
    """The server did not start, or a database could not be prepared."""


class ServerInfo(BaseModel):
    """Where a started server answers and what it runs on."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 4200
    pid: int | None = None
    database: str = "sqlite"
    log_file: Path | None = None
    started_at: datetime | None = None
    auth: bool = False
    """Started with ``PREFECT_SERVER_API_AUTH_STRING`` (basic auth); the string itself is never
    stored."""

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def default_home() -> Path:
    """``<project>/.prefect``: the project is the working directory."""
    return Path.cwd() / ".prefect"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``. Any other
    name counts as reachable from the network: it is not resolved."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, auth: bool) -> str | None:
    """Why a server must not listen on ``host`` without basic auth, or None when it may.

    Anyone who reaches an unauthenticated API can start every flow, read every run and every
    Secret block: only a loopback address may go without ``PREFECT_SERVER_API_AUTH_STRING``."""
    if auth or is_loopback(host):
        return None
    return (
        f"--host {host}: refusing to serve the Prefect API beyond this machine without "
        f"{SERVER_AUTH_ENV} (anyone reaching it could start any flow and read every Secret "
        "block); set it to user:password, or pass --insecure"
    )


def insecure_warning(host: str, port: int) -> str:
    """The line ``--insecure`` prints on stderr and writes into the server log."""
    return (
        f"WARNING: insecure: the Prefect API on {host}:{port} has no authentication "
        f"({SERVER_AUTH_ENV} unset, --insecure): anyone who reaches it can start any flow"
    )


def is_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """``GET /api/health`` answers 200; Prefect leaves it open when basic auth is on."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def client_auth_string() -> str | None:
    """The ``user:password`` Prefect's own client sends (``PREFECT_API_AUTH_STRING`` from the
    environment, ``.env``, ``prefect.toml`` or the profile), or None."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().api.auth_string
    return (secret.get_secret_value() or None) if secret is not None else None


def api_headers(auth_string: str | None = None) -> dict[str, str]:
    """Headers for a raw HTTP call to the Prefect API, as Prefect's client sends them: basic auth
    when an auth string is configured (``auth_string`` or else :func:`client_auth_string`).

    Every labops request to the API that bypasses Prefect's client must use this.
    """
    auth = auth_string if auth_string is not None else client_auth_string()
    if not auth:
        return {}
    token = base64.b64encode(auth.encode("utf-8")).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def access_problem(api_url: str, timeout_s: float = 5.0) -> str | None:
    """Why the API at ``api_url`` refuses this client's credentials, or None when it accepts
    them (or cannot be asked: an unreachable server is reported by whoever calls it next)."""
    try:
        response = httpx.get(f"{api_url}/admin/version", headers=api_headers(), timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if response.status_code != 401:
        return None
    if client_auth_string() is None:
        return (
            f"the Prefect server at {api_url} requires basic auth (401 Unauthorized): "
            f"set {CLIENT_AUTH_ENV} to the server's {SERVER_AUTH_ENV} (user:password)"
        )
    return (
        f"the Prefect server at {api_url} refused {CLIENT_AUTH_ENV} (401 Unauthorized): "
        f"it must equal the server's {SERVER_AUTH_ENV}"
    )


def asyncpg_url(url: str) -> str:
    """The URL Prefect wants (``postgresql+asyncpg://``) for any ``postgres(ql)://`` spelling."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ServerError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql+asyncpg://{rest}"


def with_database(url: str, default: str = "labops") -> str:
    """``url`` naming ``default`` as its database when it names none."""
    parts = urlsplit(url)
    if parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/{default}"))


def _plain_pg(url: str, database: str | None = None) -> tuple[str, str]:
    """(URL for asyncpg.connect with the given database, name of the URL's database)."""
    parts = urlsplit(asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql://", 1))
    name = parts.path.lstrip("/") or "postgres"
    path = "/" + (database if database is not None else name)
    return urlunsplit(parts._replace(path=path)), name


def ensure_postgres_database(url: str) -> str:
    """Create the URL's database when missing; returns its name."""
    admin, name = _plain_pg(url, "postgres")

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin, timeout=10)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, ImportError) as exc:
        raise ServerError(f"PostgreSQL at {_safe(admin)}: {exc}") from None
    except Exception as exc:  # asyncpg's errors share no useful base to name here
        raise ServerError(f"PostgreSQL: cannot create database {name}: {exc}") from None
    return name


def drop_postgres_database(url: str) -> None:
    admin, name = _plain_pg(url, "postgres")

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def _safe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or 5432}"


def database_url_from_env() -> str | None:
    for name in DB_URL_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _prefect_executable() -> list[str]:
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("prefect")
    if found:
        return [found]
    raise ServerError("the prefect command is not installed in this environment")


def vacuum_env(retention_days: int) -> dict[str, str]:
    """Server settings that prune flow runs (with their logs and artifacts) older than
    ``retention_days``; without them Prefect 3.9's vacuum service prunes only events."""
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(retention_days * 86400),
    }


def server_env(
    home: Path,
    host: str,
    port: int,
    database_url: str | None,
    ui: bool,
    extra_env: dict[str, str] | None = None,
    auth_string: str | None = None,
) -> dict[str, str]:
    """The server's environment: none of the caller's ``PREFECT_*`` settings (a shell pointed at
    another server, or holding production secrets, must not shape a test server), basic auth only
    when ``auth_string`` (or ``extra_env``) gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(NO_TELEMETRY_ENV)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
        PREFECT_API_URL=f"http://{host}:{port}/api",
    )
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = asyncpg_url(database_url)
    if auth_string:
        env[SERVER_AUTH_ENV] = auth_string
    env.update(extra_env or {})
    if env.get(SERVER_AUTH_ENV):
        # the server's own client settings: anything in it calling its API authenticates too
        env[CLIENT_AUTH_ENV] = env[SERVER_AUTH_ENV]
    return env


HOST_ENV = "PREFECT_SERVER_API_HOST"
PORT_ENV = "PREFECT_SERVER_API_PORT"


def bind_address(host: str | None, port: int | None) -> tuple[str, int]:
    """Where the server will listen: ``host``/``port`` when given, else Prefect's own settings
    from the environment (``PREFECT_SERVER_API_HOST``/``_PORT``), else 127.0.0.1:4200. The
    server is then started with exactly this address, so the bind rule judges what is bound."""
    chosen_host = host or os.environ.get(HOST_ENV, "").strip() or "127.0.0.1"
    raw_port = os.environ.get(PORT_ENV, "").strip()
    try:
        chosen_port = port if port is not None else int(raw_port or 4200)
    except ValueError:
        raise ServerError(f"{PORT_ENV}={raw_port!r}: not a port number") from None
    return chosen_host, chosen_port


def foreground_command(
    home: Path,
    host: str,
    port: int,
    *,
    ui: bool = True,
    database_url: str | None = None,
    defaults: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a server that runs in this process's place (systemd's
    ``labops server start --foreground``): this process's environment (the unit's env file:
    database, auth string, UI URL, retention) with ``PREFECT_HOME`` and the address set, analytics
    off, and ``defaults`` for what the environment leaves unset."""
    env = dict(os.environ)
    for key, value in (defaults or {}).items():
        env.setdefault(key, value)
    env.update(NO_TELEMETRY_ENV)
    env.update(PREFECT_HOME=str(home), **{HOST_ENV: host, PORT_ENV: str(port)})
    if not ui:
        env["PREFECT_SERVER_UI_ENABLED"] = "false"
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = asyncpg_url(database_url)
    if env.get(SERVER_AUTH_ENV):
        env.setdefault(CLIENT_AUTH_ENV, env[SERVER_AUTH_ENV])
    return _server_argv(host, port), env


def _server_argv(host: str, port: int) -> list[str]:
    return [
        *_prefect_executable(),
        *("server", "start", "--host", host, "--port", str(port), "--analytics-off"),
    ]


def start(
    home: Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 4200,
    database_url: str | None = None,
    ui: bool = True,
    timeout_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
    auth_string: str | None = None,
    log_note: str | None = None,
) -> ServerInfo:
    """Start ``prefect server start`` in the background and wait for ``/api/health``.

    ``log_note``: a line written into the server log before the server's own output (the
    ``--insecure`` warning).

    ``auth_string`` (``user:password``) turns on Prefect's basic auth
    (``PREFECT_SERVER_API_AUTH_STRING``); ``/api/health`` stays open, so readiness needs no
    credentials. Already running (pid file of a live server answering health): returns it
    unchanged.
    """
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    running = status(home)
    if running is not None and is_healthy(running.api_url):
        return running
    if is_healthy(f"http://{host}:{port}/api", timeout_s=1.0):
        raise ServerError(f"port {port} already serves a Prefect server not started from {home}")
    database = "sqlite"
    if database_url:
        database_url = with_database(database_url)
        ensure_postgres_database(database_url)
        database = "postgresql " + _safe(database_url) + "/" + _plain_pg(database_url)[1]
    log_file = home / LOG_FILE
    env = server_env(home, host, port, database_url, ui, extra_env, auth_string)
    with log_file.open("ab") as log:
        if log_note:
            log.write(f"{log_note}\n".encode())
            log.flush()
        proc = subprocess.Popen(
            _server_argv(host, port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    info = ServerInfo(
        home=home,
        host=host,
        port=port,
        pid=proc.pid,
        started_at=datetime.now(UTC),
        database=database,
        log_file=log_file,
        auth=bool(env.get(SERVER_AUTH_ENV)),
    )
    (home / PID_FILE).write_text(str(proc.pid))
    (home / STATE_FILE).write_text(info.model_dump_json())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _forget(home)
            raise ServerError(
                f"prefect server exited with status {proc.returncode}; see {log_file}:\n"
                + _tail(log_file)
            )
        if is_healthy(info.api_url):
            return info
        time.sleep(0.5)
    stop(home)
    raise ServerError(f"prefect server not healthy after {timeout_s:.0f}s; see {log_file}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # a recycled pid must not be taken for our server
    return b"prefect" in cmdline and b"server" in cmdline


def status(home: Path | None = None) -> ServerInfo | None:
    """The server started from ``home`` if its process still runs, else None."""
    home = (home or default_home()).resolve()
    try:
        info = ServerInfo.model_validate(json.loads((home / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None
    if info.pid is None or not _alive(info.pid):
        return None
    return info


def recorded_server(home: Path | None = None) -> tuple[ServerInfo | None, str | None]:
    """The server ``labops server start`` recorded in ``home`` (default ``./.prefect``) if it
    answers, else None and why its record is ignored (None when there is no record at all).

    A record whose process is gone is removed, so the reason is given once.
    """
    home = (home or default_home()).resolve()
    path = home / STATE_FILE
    try:
        info = ServerInfo.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return None, f"ignoring {path}: not a server record"
    if info.pid is None or not _alive(info.pid):
        _forget(home)
        return None, f"ignoring {path}: its server (pid {info.pid}) is gone"
    if not is_healthy(info.api_url):
        why = f"its server (pid {info.pid}) does not answer on {info.api_url}"
        return None, f"ignoring {path}: {why}"
    return info, None


def client_environment(environ: MutableMapping[str, str], home: Path | None = None) -> list[str]:
    """Prepare ``environ`` (a labops process's, before Prefect reads it) and return the notes
    to print: telemetry off; ``PREFECT_API_URL`` the recorded server's when not set already (an
    exported one wins)."""
    environ.update(NO_TELEMETRY_ENV)
    if environ.get(API_URL_ENV):
        return []
    info, why_not = recorded_server(home)
    if info is not None:
        environ[API_URL_ENV] = info.api_url
    return [why_not] if why_not else []


def _forget(home: Path) -> None:
    for name in (PID_FILE, STATE_FILE):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()


def stop(home: Path | None = None, timeout_s: float = 20.0) -> bool:
    """Stop the server started from ``home``; False when none was running."""
    home = (home or default_home()).resolve()
    info = status(home)
    if info is None or info.pid is None:
        _forget(home)
        return False
    pid = info.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    _forget(home)
    return True


def _reap(pid: int) -> None:
    # the server is our child when started in this process: collect it, or it stays a zombie
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
