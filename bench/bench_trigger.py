"""API trigger to running: ``POST /api/deployments/{id}/create_flow_run`` to the first task.

    .venv/bin/python -m bench.bench_trigger [--quick] [--reps 3] [--tuned-poll 1]

Against a Prefect server of its own (SQLite, temporary PREFECT_HOME), for

- a serve process (``python -m bench.trigger_flow serve NAME``: ``flow.serve``), and
- a process worker (``prefect worker start --pool P --type process``; the flow deployed to the
  pool with ``Flow.from_source(source=<bench dir>, entrypoint="trigger_flow.py:triggered")``),

each with Prefect's default poll interval (10 s) and with labops' default for its serve and
worker units (``deployments/poll.py``, 1 s: ``PREFECT_RUNNER_POLL_FREQUENCY`` for serve,
``PREFECT_WORKER_QUERY_SECONDS`` for the worker; a pool per worker); ``--quick`` measures both at
labops' default only. All runners are
started at once - their idle CPU and the server's, polling, is measured - then runs are triggered
one at a time, round-robin over the runners, a few each. The flow's first task writes
``time.time()`` to a file named by a parameter; latency = that stamp - the moment before the
POST. The run's state history splits it: waiting to be picked up (SCHEDULED -> PENDING: the poll
interval), starting the flow process (PENDING -> RUNNING: interpreter, imports, loading the flow)
and running -> first task. The baseline is the floor any runner that starts a fresh process
pays: a Python process importing prefect and the flow module and writing the stamp.
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
    tree_cpu_seconds,
)
from deployments.poll import POLL_S, SERVE_SETTING, WORKER_SETTING

BENCHMARK = "trigger"
FLOW_NAME = "bench-trigger"
POOL = "bench-trigger-pool"
DEFAULT_POLL_S = 10.0  # PREFECT_RUNNER_POLL_FREQUENCY and PREFECT_WORKER_QUERY_SECONDS, 3.9.1


class Trial(BaseModel):
    """One triggered run: seconds from the POST to each milestone."""

    latency_s: float
    picked_up_s: float | None
    running_s: float | None


class Series(BaseModel):
    runner: str
    poll_s: float
    trials: list[Trial]
    idle_cpu: float | None = None  # share of a core the idle runner uses, polling


# --- talking to the server ---------------------------------------------------------------------

RETRIES = 4


def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One API call, retried on connection errors and 5xx (SQLite servers answer 503 under load)."""
    for attempt in range(RETRIES + 1):
        try:
            response = httpx.request(method, url, timeout=30, **kwargs)
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
        else:
            if response.status_code < 500 or attempt == RETRIES:
                return response
            print(f"  note: {method} {url.split('/api', 1)[-1]} -> {response.status_code}, retry")
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def wait_for_deployment(api: str, name: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = call("GET", f"{api}/deployments/name/{FLOW_NAME}/{name}")
        if response.status_code == 200:
            return str(response.json()["id"])
        time.sleep(0.3)
    raise RuntimeError(f"deployment {FLOW_NAME}/{name} did not appear within {timeout_s:.0f} s")


def state_times(api: str, flow_run_id: str) -> dict[str, float]:
    """First time the run entered each state type, as epoch seconds."""
    response = call("GET", f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id})
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
        run = call("GET", f"{api}/flow_runs/{flow_run_id}").json()
        state = (run.get("state") or {}).get("type", "?")
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return str(state)
        time.sleep(0.2)
    return str(state)


def trigger_once(api: str, deployment_id: str, stamp_file: Path, timeout_s: float) -> Trial:
    stamp_file.unlink(missing_ok=True)
    posted = time.time()
    # a retried POST counts from the first attempt: the caller waited for it too
    response = call(
        "POST",
        f"{api}/deployments/{deployment_id}/create_flow_run",
        # the key makes a retried POST return the run the first one may have created
        json={"parameters": {"path": str(stamp_file)}, "idempotency_key": uuid.uuid4().hex},
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


class Runner:
    """One serve process or process worker with its own deployment (and pool, for a worker)."""

    def __init__(self, kind: str, poll_s: float, api: str, work: Path) -> None:
        self.kind, self.poll_s, self.api = kind, poll_s, api
        self.name = f"{kind}-{poll_s:g}s-{uuid.uuid4().hex[:6]}"
        self.log = work / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.deployment_id = ""

    def start(self) -> None:
        env = client_env(self.api)
        if self.kind == "serve":
            env[SERVE_SETTING] = str(max(1, round(self.poll_s)))
            cmd = [sys.executable, "-m", "bench.trigger_flow", "serve", self.name]
        else:
            pool = f"{POOL}-{self.name}"  # a pool per worker: two workers would race for runs
            subprocess.run(
                [sys.executable, "-m", "bench.bench_trigger", "--deploy", pool, self.name],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                timeout=180,
            )
            env[WORKER_SETTING] = f"{self.poll_s:g}"
            prefect = Path(sys.executable).with_name("prefect")
            cmd = [str(prefect), "worker", "start", "--pool", pool, "--type", "process"]
        self.proc = start_process(cmd, env, self.log)

    def ready(self, timeout_s: float = 120) -> None:
        self.deployment_id = wait_for_deployment(self.api, self.name)
        if self.kind != "worker":
            return  # serve creates its deployment once it is up
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # the deployment predates the worker: wait for it
            workers = call("POST", f"{self.api}/work_pools/{POOL}-{self.name}/workers/filter")
            if workers.status_code == 200 and workers.json():
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} did not register within {timeout_s:.0f} s")

    def trigger(self, stamp_file: Path) -> Trial:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} is not running; see {self.log}")
        return trigger_once(self.api, self.deployment_id, stamp_file, self.poll_s * 3 + 60)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def cpu_rates(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Share of a core each process tree used over ``seconds``."""
    before = {label: tree_cpu_seconds(pid) for label, pid in pids.items()}
    time.sleep(seconds)
    return {label: (tree_cpu_seconds(pid) - before[label]) / seconds for label, pid in pids.items()}


def run_trials(
    runners: list[Runner], reps: int, work: Path, server_pid: int, idle_s: float = 4.0
) -> list[Series]:
    """Every runner started at once (idle pollers cost little: measured), then one trial at a
    time, round-robin over the runners so that a change of machine load hits all alike."""
    series = {id(r): Series(runner=r.kind, poll_s=r.poll_s, trials=[]) for r in runners}
    try:
        server_alone = cpu_rates({"server": server_pid}, idle_s)["server"]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.ready()
        time.sleep(2)  # let the pollers settle into their rhythm
        pids = {r.name: r.proc.pid for r in runners if r.proc is not None}
        idle = cpu_rates({"server": server_pid, **pids}, idle_s)
        print(
            f"idle cost of polling: server {server_alone * 100:.1f}% of a core alone, "
            f"{idle['server'] * 100:.1f}% with the {len(runners)} runners polling",
            flush=True,
        )
        for runner in runners:
            series[id(runner)].idle_cpu = idle.get(runner.name)
        for rep in range(reps):
            for runner in runners:
                # runs are created at arbitrary moments of the poll cycle, as an operator would
                time.sleep(random.uniform(0, 1))
                trial = runner.trigger(work / f"{runner.name}-{rep}.stamp")
                series[id(runner)].trials.append(trial)
                print(
                    f"  {runner.kind} (poll {runner.poll_s:g} s) run {rep + 1}: "
                    f"{trial.latency_s:5.2f} s (picked up {_s(trial.picked_up_s)}, running "
                    f"{_s(trial.running_s)})",
                    flush=True,
                )
    finally:
        for runner in runners:
            runner.stop()
    return list(series.values())


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
    default = {DEFAULT_POLL_S: " (Prefect default)", float(POLL_S): " (labops default)"}
    setting = SERVE_SETTING if series.runner == "serve" else WORKER_SETTING
    notes = f"max {worst:.1f} s"
    if series.idle_cpu is not None:
        notes += f"; idle, the {series.runner} process uses {series.idle_cpu * 100:.1f}% of a core"
    typical = sorted(series.trials, key=lambda t: t.latency_s)[(len(series.trials) - 1) // 2]
    if typical.picked_up_s is not None and typical.running_s is not None:
        notes += (
            f"; the median run: {typical.picked_up_s:.1f} s until picked up (polling), "
            f"{typical.running_s - typical.picked_up_s:.1f} s starting the flow process, "
            f"{typical.latency_s - typical.running_s:.1f} s from running to the first task"
        )
    return BenchResult(
        benchmark=BENCHMARK,
        name=f"create_flow_run -> first task, {series.runner}",
        size=f"{setting}={series.poll_s:g}{default.get(series.poll_s, '')}, {len(latencies)} runs",
        contender=median,
        contender_label="median",
        baseline=floor,
        baseline_label="fresh process floor",
        ratio=median / floor,
        notes=notes,
    )


def recommendation(results: list[BenchResult], tuned_poll: float) -> str:
    lines = [
        "The poll interval dominates (a run waits on average half an interval to be picked up), "
        "then starting a fresh flow process (interpreter + imports, the floor).",
    ]
    for r in results:
        if "(Prefect default)" not in r.size:
            lines.append(
                f"  {r.name} with {r.size.split(',')[0]}: median {r.contender:.1f} s; "
                + r.notes.split("; the median run")[0]
            )
    lines.append(
        f"labops' serve and worker units poll every {POLL_S} s by default (deployments/poll.py) "
        f"so that API- and event-triggered runs start within seconds; measured here at "
        f"{SERVE_SETTING}={max(1, round(tuned_poll))} for serve and "
        f"{WORKER_SETTING}={tuned_poll:g} for workers (set a few seconds in labops.env if the "
        "idle CPU above is too much for the host)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--reps", type=int, help="triggered runs per setting (default 3)")
    parser.add_argument(
        "--tuned-poll", type=float, default=float(POLL_S), help="short poll (labops' default), s"
    )
    parser.add_argument("--runners", nargs="+", choices=["serve", "worker"])
    parser.add_argument("--deploy", nargs=2, metavar=("POOL", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deploy:
        deploy_to_pool(*args.deploy)
        return 0
    reps = args.reps or (2 if args.quick else 3)
    kinds = args.runners or ["serve", "worker"]
    polls = [args.tuned_poll] if args.quick else [DEFAULT_POLL_S, args.tuned_poll]
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="labops-bench-trigger-") as tmp:
        work = Path(tmp)
        floor = process_floor(work)
        print(f"fresh process floor (python + import prefect + the flow module): {floor:.2f} s")
        with bench_server(work / "prefect-home") as info:
            api: str = info.api_url  # type: ignore[attr-defined]
            runners = [Runner(kind, poll, api, work) for kind in kinds for poll in polls]
            pid: int = info.pid  # type: ignore[attr-defined]
            for series in run_trials(runners, reps, work, pid, 2.0 if args.quick else 4.0):
                result = results_for(series, floor)
                results.append(result)
                print(f"{result.name} [{result.size}]: {result.notes}", flush=True)
    print(recommendation(results, args.tuned_poll), flush=True)
    for result in results:
        emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
