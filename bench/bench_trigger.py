"""API trigger to running: ``POST /api/deployments/{id}/create_flow_run`` to the first task.

    .venv/bin/python -m bench.bench_trigger [--quick] [--reps 3] [--tuned-poll 1]

Against a Prefect server of its own (SQLite, temporary PREFECT_HOME), for

- a serve process (``python -m bench.trigger_flow serve NAME``: ``flow.serve``), and
- a process worker (``prefect worker start --pool P --type process``; the flow deployed to the
  pool with ``Flow.from_source(source=<bench dir>, entrypoint="trigger_flow.py:triggered")``),

each first with Prefect's default poll interval and then with a shortened one
(``PREFECT_RUNNER_POLL_FREQUENCY`` for serve, ``PREFECT_WORKER_QUERY_SECONDS`` for the worker),
a few runs each, one after the other. The flow's first task writes ``time.time()`` to a file
named by a parameter; latency = that stamp - the moment before the POST. The run's state
history splits it into: waiting to be picked up (SCHEDULED -> PENDING: the poll interval),
starting the flow process (PENDING -> RUNNING: interpreter, imports, loading the flow) and
running -> first task. The floor is what any runner starting a fresh process pays: a Python
process that imports prefect and the flow module and writes the stamp.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from bench.common import (
    REPO,
    BenchResult,
    bench_parser,
    bench_server,
    client_env,
    emit,
    median_max,
)

BENCHMARK = "trigger"
FLOW_NAME = "bench-trigger"
POOL = "bench-trigger-pool"
DEFAULT_POLL_S = 10.0  # PREFECT_RUNNER_POLL_FREQUENCY and PREFECT_WORKER_QUERY_SECONDS, 3.9.1
TUNED_GOAL_S = 5.0


class Trial(BaseModel):
    """One triggered run: seconds from the POST to each milestone."""

    latency_s: float
    picked_up_s: float | None
    running_s: float | None


class Series(BaseModel):
    runner: str
    poll_s: float
    trials: list[Trial]


# --- talking to the server ---------------------------------------------------------------------


def wait_for_deployment(api: str, name: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{api}/deployments/name/{FLOW_NAME}/{name}", timeout=10)
        if response.status_code == 200:
            return str(response.json()["id"])
        time.sleep(0.3)
    raise RuntimeError(f"deployment {FLOW_NAME}/{name} did not appear within {timeout_s:.0f} s")


def state_times(api: str, flow_run_id: str) -> dict[str, float]:
    """First time the run entered each state type, as epoch seconds."""
    response = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=10)
    response.raise_for_status()
    first: dict[str, float] = {}
    for state in response.json():
        stamp = _epoch(state["timestamp"])
        first[state["type"]] = min(first.get(state["type"], stamp), stamp)
    return first


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_until_final(api: str, flow_run_id: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    state = "?"
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        state = (run.get("state") or {}).get("type", "?")
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return str(state)
        time.sleep(0.2)
    return str(state)


def trigger_once(api: str, deployment_id: str, stamp_file: Path, timeout_s: float) -> Trial:
    stamp_file.unlink(missing_ok=True)
    posted = time.time()
    response = httpx.post(
        f"{api}/deployments/{deployment_id}/create_flow_run",
        json={"parameters": {"path": str(stamp_file)}},
        timeout=30,
    )
    response.raise_for_status()
    run_id = str(response.json()["id"])
    deadline = time.monotonic() + timeout_s
    while not stamp_file.exists() or not stamp_file.read_text().strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {run_id}: first task did not start in {timeout_s:.0f} s")
        time.sleep(0.02)
    started = float(stamp_file.read_text())
    final = wait_until_final(api, run_id)
    if final != "COMPLETED":
        print(f"  note: flow run {run_id} ended {final}", flush=True)
    states = state_times(api, run_id)
    pending, running = states.get("PENDING"), states.get("RUNNING")
    return Trial(
        latency_s=started - posted,
        picked_up_s=None if pending is None else pending - posted,
        running_s=None if running is None else running - posted,
    )


# --- the runners -------------------------------------------------------------------------------


def start_process(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # so stopping it also stops the flow processes it started
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def deploy_to_pool(pool: str, name: str) -> None:
    """Child mode: create the process pool if missing and deploy the flow to it from source."""
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    flow: Any = Flow.from_source(source=str(REPO / "bench"), entrypoint="trigger_flow.py:triggered")
    flow.deploy(name=name, work_pool_name=pool, print_next_steps=False, ignore_warnings=True)


def run_series(
    runner: str, poll_s: float, reps: int, api: str, work: Path, timeout_s: float
) -> Series:
    name = f"{runner}-{poll_s:g}s-{uuid.uuid4().hex[:6]}"
    log = work / f"{name}.log"
    env = client_env(api)
    if runner == "serve":
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = str(max(1, round(poll_s)))
        proc = start_process([sys.executable, "-m", "bench.trigger_flow", "serve", name], env, log)
    else:
        subprocess.run(
            [sys.executable, "-m", "bench.bench_trigger", "--deploy", POOL, name],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        env["PREFECT_WORKER_QUERY_SECONDS"] = f"{poll_s:g}"
        worker = Path(sys.executable).with_name("prefect")
        cmd = [str(worker), "worker", "start", "--pool", POOL, "--type", "process"]
        proc = start_process(cmd, env, log)
    trials: list[Trial] = []
    try:
        deployment_id = wait_for_deployment(api, name)
        time.sleep(2)  # let the runner settle into its polling rhythm
        for rep in range(reps):
            if proc.poll() is not None:
                raise RuntimeError(f"{runner} exited {proc.returncode}; see {log}")
            # start at a random phase of the poll interval, as an operator would
            time.sleep(random.uniform(0, min(poll_s, 3.0)))
            trial = trigger_once(api, deployment_id, work / f"{name}-{rep}.stamp", timeout_s)
            trials.append(trial)
            print(
                f"  {runner} (poll {poll_s:g} s) run {rep + 1}: {trial.latency_s:5.2f} s "
                f"(picked up {_s(trial.picked_up_s)}, running {_s(trial.running_s)})",
                flush=True,
            )
    finally:
        stop_process(proc)
    return Series(runner=runner, poll_s=poll_s, trials=trials)


def _s(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def process_floor(work: Path, reps: int = 3) -> float:
    """Median seconds for a fresh Python process to import prefect and the flow and stamp."""
    stamp = work / "floor.stamp"
    code = (
        "import sys, time; from pathlib import Path; import bench.trigger_flow; "
        "Path(sys.argv[1]).write_text(repr(time.time()))"
    )
    times = []
    for _ in range(reps):
        started = time.time()
        subprocess.run(
            [sys.executable, "-c", code, str(stamp)],
            cwd=REPO,
            env=client_env("http://127.0.0.1:9/api"),
            check=True,
            timeout=120,
        )
        times.append(float(stamp.read_text()) - started)
    return sorted(times)[len(times) // 2]


def results_for(series: Series, floor: float) -> BenchResult:
    latencies = [t.latency_s for t in series.trials]
    median, worst = median_max(latencies)
    picked = [t.picked_up_s for t in series.trials if t.picked_up_s is not None]
    running = [
        t.running_s - t.picked_up_s
        for t in series.trials
        if t.running_s is not None and t.picked_up_s is not None
    ]
    default = series.poll_s == DEFAULT_POLL_S
    setting = (
        "PREFECT_RUNNER_POLL_FREQUENCY"
        if series.runner == "serve"
        else ("PREFECT_WORKER_QUERY_SECONDS")
    )
    notes = (
        f"max {worst:.1f} s; waiting to be picked up median {median_max(picked)[0]:.1f} s, "
        f"flow process start {median_max(running)[0]:.1f} s"
        if picked and running
        else f"max {worst:.1f} s"
    )
    return BenchResult(
        benchmark=BENCHMARK,
        name=f"create_flow_run -> first task, {series.runner}",
        size=f"{setting}={series.poll_s:g}{' (default)' if default else ''}, {len(latencies)} runs",
        contender=median,
        contender_label="median",
        baseline=floor,
        baseline_label="fresh process floor",
        ratio=median / floor,
        goal="-" if default else f"median <= {TUNED_GOAL_S:g} s",
        met=None if default else median <= TUNED_GOAL_S,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--reps", type=int, help="triggered runs per setting (default 3)")
    parser.add_argument("--tuned-poll", type=float, default=1.0, help="shortened poll, seconds")
    parser.add_argument("--runners", nargs="+", choices=["serve", "worker"])
    parser.add_argument("--deploy", nargs=2, metavar=("POOL", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deploy:
        deploy_to_pool(*args.deploy)
        return 0
    reps = args.reps or (2 if args.quick else 3)
    runners = args.runners or (["serve"] if args.quick else ["serve", "worker"])
    polls = [args.tuned_poll] if args.quick else [DEFAULT_POLL_S, args.tuned_poll]
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="labops-bench-trigger-") as tmp:
        work = Path(tmp)
        floor = process_floor(work)
        print(f"fresh process floor (python + import prefect + the flow module): {floor:.2f} s")
        with bench_server(work / "prefect-home") as info:
            api: str = info.api_url  # type: ignore[attr-defined]
            for runner in runners:
                for poll in polls:
                    series = run_series(runner, poll, reps, api, work, timeout_s=poll * 3 + 60)
                    result = results_for(series, floor)
                    results.append(result)
                    print(
                        f"{result.name} [{result.size}]: median {result.contender:.2f} s, "
                        f"{result.notes}",
                        flush=True,
                    )
    print(
        "Dominant cost: the poll interval (runs are found by polling, on average half an "
        "interval late), then starting a fresh flow process (interpreter + imports). "
        f"Recommended: PREFECT_RUNNER_POLL_FREQUENCY={max(1, round(args.tuned_poll))} for serve "
        f"and PREFECT_WORKER_QUERY_SECONDS={args.tuned_poll:g} for workers where a run started "
        "from the API should start within seconds; the cost is one cheap query per interval.",
        flush=True,
    )
    for result in results:
        emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
