"""``labops worker``: a Prefect process worker of a labops work pool, with warm flow-run starts.

It runs ``prefect worker start --type process`` and, beside it, a warm starter: one process that
has imported Prefect and every labops flow once and forks each flow run from there
(deployments/warm_starter.py). A run then starts about a second sooner and spends about 0.9 s
less CPU than a cold ``python -m prefect.engine``. If the starter is down or refuses a run (other
settings, code changed on disk), that run starts cold, as with a plain ``prefect worker start``:
the warm path changes how fast runs start, never whether. A stopped starter is started again.

Stopping ``labops worker`` stops the Prefect worker first (its runs end as with a plain worker),
then the starter. Run several, on this host or others with the same checkout
(deploy/systemd/labops-worker@.service).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.common import RawDescriptionFormatter, progress

STARTER_READY_S = 120.0  # importing Prefect and the flows on a loaded machine
RESTART_AFTER_S = 5.0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a process worker of a work pool, with warm flow-run starts (until stopped)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=RawDescriptionFormatter,
    )
    parser.add_argument("--pool", required=True, help="the lab's work pool (labops deploy --pool)")
    parser.add_argument("--name", help="the worker's name (default: Prefect's)")
    parser.add_argument(
        "--limit", type=int, default=4, metavar="N", help="flow runs at once (default 4)"
    )
    parser.add_argument(
        "--cold", action="store_true", help="no warm starter: every run imports Prefect afresh"
    )
    parser.set_defaults(handler=handle)


def starter_command(socket_path: Path) -> list[str]:
    return [sys.executable, "-m", "deployments.warm_starter", "--socket", str(socket_path)]


def worker_command(pool: str, name: str | None, limit: int) -> list[str]:
    prefect = str(Path(sys.executable).with_name("prefect"))
    command = [prefect, "worker", "start", "--pool", pool, "--type", "process"]
    if name:
        command += ["--name", name]
    return [*command, "--limit", str(limit)]


def handle(args: argparse.Namespace) -> int:
    from deployments.poll import worker_env
    from labops.errors import ConfigError
    from labops.warm_start import SOCKET_ENV

    if args.limit < 1:
        raise ConfigError("--limit: must be at least 1")
    env = {**os.environ, **worker_env()}
    env.pop(SOCKET_ENV, None)
    workdir = Path(tempfile.mkdtemp(prefix="labops-warm-"))  # 0700, this user's alone
    socket_path = workdir / "starter.sock"
    starter: subprocess.Popen[bytes] | None = None
    if not args.cold:
        env[SOCKET_ENV] = str(socket_path)
        starter = start_starter(socket_path, env)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    progress(f"labops worker: pool {args.pool}, warm starts {'off' if args.cold else 'on'}")
    worker = subprocess.Popen(worker_command(args.pool, args.name, args.limit), env=env)
    try:
        while worker.poll() is None and not stop["signal"]:
            if starter is not None and starter.poll() is not None:
                progress(f"labops worker: the warm starter ended ({starter.returncode}); again")
                time.sleep(RESTART_AFTER_S)  # until then runs start cold
                starter = start_starter(socket_path, env)
            time.sleep(0.5)
    finally:
        if worker.poll() is None:
            worker.send_signal(stop["signal"] or signal.SIGTERM)
            wait_or_kill(worker, 110)
        if starter is not None and starter.poll() is None:
            starter.terminate()
            wait_or_kill(starter, 30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if stop["signal"] else (worker.returncode or 0)


def start_starter(socket_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the starter and wait until it listens (runs start cold until then anyway)."""
    proc = subprocess.Popen(starter_command(socket_path), env=env)
    deadline = time.monotonic() + STARTER_READY_S
    while time.monotonic() < deadline and proc.poll() is None and not socket_path.exists():
        time.sleep(0.1)
    return proc


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
