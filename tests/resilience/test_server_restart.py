"""The orchestration platform goes away under a running flow: the Prefect server is restarted, or
its PostgreSQL database is. The run must end (Completed, or marked Crashed/Failed), never stay
Running, and the flow process must not hang.

Each drill uses a private server (and a private PostgreSQL cluster): the session server and the
machine's PostgreSQL stay untouched for everyone else.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labops import prefect_server as server
from tests.resilience.platform import (
    FINAL,
    PG_BIN,
    PostgresCluster,
    run_state,
    start_slow_flow,
    task_states,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
STEPS, STEP_S = 12, 1.0  # ~12 s of work; the outage lands in the middle
FLOW_EXIT_S = 150  # the flow process's own bound: client retries must give up or succeed by then


def _drill(api_url: str, work: Path, outage: Callable[[], None]) -> tuple[str | None, str]:
    """Run the slow flow, cause ``outage`` 3 s in, return (final state type, flow output)."""
    proc = start_slow_flow(api_url, work, STEPS, STEP_S)
    try:
        run_id = wait_for(
            lambda: (work / "run-id").exists() and (work / "run-id").read_text(),
            60,
            "the flow run never started",
        )
        wait_for(lambda: run_state(api_url, run_id)[0] == "RUNNING", 30, "run never Running")
        time.sleep(3)
        outage()
        try:
            proc.wait(FLOW_EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the flow process hung after the outage: {(work / 'flow.log').read_text()}"
            )
        # the server may still be applying the last state the client sent
        state = wait_state(api_url, run_id, FINAL, 60, f"run {run_id} still not final")
        if state == "COMPLETED":
            # task states travel as events: after the outage none may be left Running (#19594).
            # The server records them in the background, after its database is back; on a
            # loaded machine that takes a while, so the bound is generous (it only ends a hang).
            try:
                wait_for(
                    lambda: task_states(api_url, run_id) == ["COMPLETED"] * STEPS, 120, "task runs"
                )
            except AssertionError:
                pytest.fail(f"run Completed but its task runs are {task_states(api_url, run_id)}")
        return state, (work / "flow.log").read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_prefect_server_restarted_mid_run(tmp_path: Path) -> None:
    home, port = tmp_path / "server-home", server.free_port()
    info = server.start(home, port=port, ui=False, timeout_s=180)
    try:

        def restart() -> None:
            server.stop(home)
            time.sleep(2)  # an outage, not a blip
            server.start(home, port=port, ui=False, timeout_s=180)

        state, output = _drill(info.api_url, tmp_path, restart)
    finally:
        server.stop(home)
    print(f"run ended {state}; flow said: {output.strip().splitlines()[-1:]}")
    assert state in ("COMPLETED", "CRASHED"), f"ended {state}; flow output:\n{output[-3000:]}"


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries not installed")
    cluster = PostgresCluster.create()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
def test_postgres_restarted_under_running_flow(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    home = tmp_path / "server-home"
    info = server.start(
        home, port=server.free_port(), database_url=postgres_cluster.url, ui=False, timeout_s=180
    )
    try:

        def restart_database() -> None:
            postgres_cluster.stop("immediate")  # as if the database host lost power
            time.sleep(3)
            postgres_cluster.start()

        state, output = _drill(info.api_url, tmp_path, restart_database)
        assert server.is_healthy(info.api_url), "the server did not survive its database restart"
    finally:
        server.stop(home)
    print(f"run ended {state}; flow said: {output.strip().splitlines()[-1:]}")
    assert state in ("COMPLETED", "CRASHED"), f"ended {state}; flow output:\n{output[-3000:]}"
