"""Flow runs recorded by real Prefect servers (SQLite and PostgreSQL) and the server commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labops import prefect_server
from tests.core.demo_flow import demo


def _config(tmp_path: Path) -> str:
    path = tmp_path / "labops.yaml"
    path.write_text(f"lab:\n  name: servertest\n  state_dir: {tmp_path / 'state'}\n")
    return str(path)


def _run_and_read_back(tmp_path: Path, api_url: str) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client

    state: Any = demo(config=_config(tmp_path), count=2, fail=True, return_state=True)
    assert state.is_failed()
    report = state.result(raise_on_failure=False)
    assert report.count == 2 and report.failures[0].entity == "guest 101 (dns)"

    async def recorded() -> Any:
        async with get_client() as client:
            assert str(client.api_url).rstrip("/") == api_url
            return await client.read_flow_run(state.state_details.flow_run_id)

    run = asyncio.run(recorded())
    assert run.state is not None and run.state.is_failed()
    assert "made to fail" in (run.state.message or "")
    artifact: Any = Artifact.get("labops-servertest-demo-summary")
    assert artifact is not None
    assert artifact.flow_run_id == run.id
    assert "2 item(s), 1 failure(s)" in str(artifact.data)


def test_flow_run_recorded_on_sqlite(prefect_server: Any, tmp_path: Path) -> None:
    assert prefect_server.database == "sqlite"
    _run_and_read_back(tmp_path, prefect_server.api_url)


@pytest.mark.postgres
def test_flow_run_recorded_on_postgres(prefect_postgres: Any, tmp_path: Path) -> None:
    assert prefect_postgres.database.startswith("postgresql")
    _run_and_read_back(tmp_path, prefect_postgres.api_url)


def test_postgres_urls() -> None:
    assert (
        prefect_server.asyncpg_url("postgres://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    )
    assert prefect_server.asyncpg_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(prefect_server.ServerError):
        prefect_server.asyncpg_url("mysql://h/db")
    assert prefect_server.with_database("postgresql://u@h:5432") == "postgresql://u@h:5432/labops"
    assert prefect_server.with_database("postgresql://u@h/") == "postgresql://u@h/labops"
    assert prefect_server.with_database("postgresql://u@h/x") == "postgresql://u@h/x"


@pytest.mark.slow
def test_server_commands_start_status_stop(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    port = prefect_server.free_port()
    cli = [sys.executable, "-m", "cli.main", "server"]
    opts = ["--home", str(home), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

    def labops(action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, action, *opts, *extra], capture_output=True, text=True, timeout=240, env=env
        )

    try:
        started = labops("start", "--no-ui")
        assert started.returncode == 0, started.stderr
        assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in started.stdout
        assert prefect_server.is_healthy(f"http://127.0.0.1:{port}/api")
        again = labops("start", "--no-ui")  # idempotent: the same server
        assert again.returncode == 0 and started.stdout.split("pid ")[1][:6] in again.stdout
        status = labops("status")
        assert status.returncode == 0 and "health: ok" in status.stdout
        assert (home / "server.log").exists()
    finally:
        stopped = labops("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not prefect_server.is_healthy(f"http://127.0.0.1:{port}/api")
    assert labops("status").returncode == 1
