"""Helpers of the platform drills: a private PostgreSQL cluster, a private Mosquitto, a flow run in
a subprocess, and reading a run's state straight from the server's REST API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from labops import prefect_server as server

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = Path("/usr/sbin/mosquitto")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def client_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a flow process talking to ``api_url`` (no settings of this process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def run_state(api_url: str, run_id: str) -> tuple[str | None, str | None]:
    """(state type, state name) of a flow run; (None, None) while the server does not answer."""
    try:
        data = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None, None
    state = data.get("state") or {}
    return state.get("type"), state.get("name")


def wait_state(api_url: str, run_id: str, done: set[str], timeout: float, what: str) -> str:
    """Wait until the run's state type is one of ``done``; returns it."""

    def reached() -> str | None:
        state = run_state(api_url, run_id)[0]
        return state if state in done else None

    result: str = wait_for(reached, timeout, f"{what} (last: {run_state(api_url, run_id)})")
    return result


def task_states(api_url: str, run_id: str) -> list[str]:
    """State types of the flow run's task runs as the server knows them (events are async)."""
    try:
        runs = httpx.post(
            f"{api_url}/task_runs/filter",
            timeout=10,
            json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200},
        ).json()
    except (httpx.HTTPError, ValueError):
        return []
    return sorted((r.get("state") or {}).get("type") or "NONE" for r in runs)


def start_slow_flow(api_url: str, work: Path, steps: int, step_s: float) -> subprocess.Popen[bytes]:
    log = (work / "flow.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.resilience.slow_flow",
            "--steps",
            str(steps),
            "--step-s",
            str(step_s),
            "--id-file",
            str(work / "run-id"),
        ],
        cwd=ROOT,
        env=client_env(api_url, work / "client-home"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL 15 cluster (trust auth on 127.0.0.1) owned by the postgres user."""

    dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/prefect"

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                *args,
            ],
            check=check,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._pg_ctl(
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    @classmethod
    def create(cls) -> PostgresCluster:
        # initdb refuses root; the postgres user must reach the directory (not under /root)
        directory = Path(tempfile.mkdtemp(prefix="labops-pg-", dir="/tmp"))
        shutil.chown(directory, "postgres", "postgres")
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(directory / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return cls(dir=directory, port=server.free_port())

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Mosquitto:
    """A private mosquitto (anonymous, loopback only) that can be stopped and started."""

    def __init__(self, work: Path) -> None:
        from tests.fixtures.sandbox import free_port_range

        self.port = free_port_range(1)
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.log = work / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import socket

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 10, f"mosquitto on port {self.port}", step=0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
