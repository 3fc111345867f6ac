"""Runs land on the server ``labops server start`` recorded; without one, one line says so.

Each labops command here is its own process, as a user's would be: Prefect reads its settings
once, at import, so only a process that is started fresh shows what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from cli.run import NO_SERVER
from labops import prefect_server

ROOT = Path(__file__).resolve().parents[2]
# `labops` with the tests' demo operation added before anything imports Prefect
LABOPS = (
    "import sys\n"
    "from deployments.catalog import FLOWS\n"
    "FLOWS['demo'] = 'tests.core.demo_flow:demo'\n"
    "from cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no Prefect setting, no telemetry opt-out (labops must set it itself)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PREFECT_HOME"] = str(tmp_path / "client-home")  # a temporary server's database
    # a temporary server migrates a fresh database first: slow on a loaded 2-core machine
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    return env


def _labops(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LABOPS, *args],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=240,
    )


def _project(tmp_path: Path) -> Path:
    (tmp_path / "labops.yaml").write_text(
        f"lab:\n  name: recordtest\n  state_dir: {tmp_path / 'state'}\n"
    )
    return tmp_path


def test_a_run_lands_on_the_recorded_server_and_without_one_says_so(tmp_path: Path) -> None:
    project = _project(tmp_path)
    port = prefect_server.free_port()
    api = f"http://127.0.0.1:{port}/api"
    try:
        started = _labops(project, "server", "start", "--port", str(port), "--no-ui")
        assert started.returncode == 0, started.stderr
        record = json.loads((project / ".prefect" / prefect_server.STATE_FILE).read_text())
        assert record["port"] == port and record["pid"] and record["started_at"]

        ran = _labops(project, "run", "demo", "--set", "count=2")
        assert ran.returncode == 0, ran.stderr
        assert "temporary" not in ran.stderr and "telemetry" not in ran.stderr.lower()
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        assert [run["state"]["type"] for run in runs] == ["COMPLETED"]
        assert "lab:recordtest" in runs[0]["tags"]
        assert "telemetry" not in (project / ".prefect" / "server.log").read_text().lower()
    finally:
        stopped = _labops(project, "server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not (project / ".prefect" / prefect_server.STATE_FILE).exists()

    alone = _labops(project, "run", "demo")
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr.count(NO_SERVER) == 1
    assert "telemetry" not in alone.stderr.lower()  # the temporary server sends none either


def test_a_stale_record_is_ignored_with_one_line(tmp_path: Path) -> None:
    home = tmp_path / ".prefect"
    home.mkdir()
    # above the kernel's largest pid (2**22): certainly no process
    info = prefect_server.ServerInfo(home=home, port=prefect_server.free_port(), pid=2**22 + 1)
    (home / prefect_server.STATE_FILE).write_text(info.model_dump_json())
    environ: dict[str, str] = {}
    notes = prefect_server.client_environment(environ, home)
    assert len(notes) == 1 and "is gone" in notes[0]
    assert prefect_server.API_URL_ENV not in environ
    assert not (home / prefect_server.STATE_FILE).exists()  # said once, not at every command
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and environ["DO_NOT_TRACK"] == "1"


def test_an_exported_api_url_wins(tmp_path: Path) -> None:
    environ = {prefect_server.API_URL_ENV: "http://prefect.lan:4200/api"}
    assert prefect_server.client_environment(environ, tmp_path / ".prefect") == []
    assert environ[prefect_server.API_URL_ENV] == "http://prefect.lan:4200/api"
    assert environ["DO_NOT_TRACK"] == "1"
