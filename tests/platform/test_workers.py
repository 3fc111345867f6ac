"""Worker mode: two real ``prefect worker start`` processes share the runs of one work pool.

Every run starts with labops' flow-run command (``python -m prefect.engine``), not Prefect's
workspace supervisor, which imports Prefect twice per run: the runs completing here prove that
the engine started directly finds, loads and runs the flow from the deployment's source.

Which worker ran a run is read from the server, not from logs: a worker labels every flow run it
takes with ``prefect.worker.name`` before starting it. Each worker runs one flow at a time
(``--limit 1``), so while one is busy the other must take the next run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.deploy import ensure_process_pool
from deployments.definitions import deploy_to_pool, deployment_specs, flow_run_command
from labops import prefect_server
from labops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
RUNS = 4


@pytest.fixture
def workers(prefect_server: prefect_server.ServerInfo, tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    pool = f"labops-test-{tag}"
    names = [f"worker-a-{tag}", f"worker-b-{tag}"]
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        # Poll every 2 s instead of 10 s: the test waits less, the sharing is the same.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name in names:
            log = (tmp_path / f"{name}.log").open("wb")
            logs.append(log)
            command = [
                str(Path(sys.executable).with_name("prefect")), "worker", "start",
                "--pool", pool, "--type", "process", "--name", name, "--limit", "1",
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(
                    command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        yield {"pool": pool, "names": names, "tmp": tmp_path, "procs": procs}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def test_two_workers_share_one_pool(workers: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client

    tmp: Path = workers["tmp"]
    config = tmp / "labops.yaml"
    config.write_text(yaml.safe_dump({"lab": {"name": "poollab", "state_dir": str(tmp / "st")}}))
    # The pool may already exist: the workers create it when they start first (--type process).
    ensure_process_pool(workers["pool"])
    specs = deployment_specs(load_config(config), config)
    spec = next(s for s in specs if s.flow == "housekeeping")
    # Housekeeping never overlaps itself in production (a second run is cancelled); here the
    # same flow runs four times at once so that both workers get some.
    spec = spec.model_copy(
        update={
            "no_overlap": False,
            "name": f"housekeeping-{workers['pool']}",
            "cron": None,
            "parameters": {**spec.parameters, "dry_run": True},
        }
    )
    [deployment_id] = deploy_to_pool([spec], workers["pool"], ROOT)

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        runs = [
            client.create_flow_run_from_deployment(uuid.UUID(deployment_id), tags=["pool-test"])
            for _ in range(RUNS)
        ]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            current = [client.read_flow_run(r.id) for r in runs]
            if all(r.state is not None and r.state.is_final() for r in current):
                break
            time.sleep(1)
        deployment = client.read_deployment(uuid.UUID(deployment_id))
    elapsed = time.monotonic() - started
    logs = "".join((tmp / f"{n}.log").read_text(errors="replace")[-1500:] for n in workers["names"])
    assert [r.state_name for r in current] == ["Completed"] * RUNS, logs
    assert deployment.job_variables == {"command": flow_run_command()}
    by_worker = Counter(r.labels.get("prefect.worker.name") for r in current)
    print(f"{RUNS} runs on 2 workers in {elapsed:.1f} s: {dict(by_worker)}")
    assert set(by_worker) == set(workers["names"]), (by_worker, logs)
    assert sum(by_worker.values()) == RUNS  # each run taken by exactly one worker
    assert all(r.parameters["dry_run"] is True for r in current)
