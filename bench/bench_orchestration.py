"""Orchestration cost: flow runs of 10, 100 and 1,000 task runs on SQLite and PostgreSQL servers.

    .venv/bin/python -m bench.bench_orchestration [--quick] [--sizes 10 100 1000]
                                                   [--databases sqlite postgres]

For each database a Prefect server of its own is started (temporary PREFECT_HOME, free port;
the PostgreSQL database is dropped at the end). For each size a child process runs

1. the floor: the same unit of work (a SHA-256 of 16 KiB) in a plain Python loop, and
2. a flow calling one task per unit, sequentially (the per-entity pattern of the flows),

after a warm-up flow run (the first flow and task run of a process pay for imports). The flow
times its own body (wall, and CPU of the whole flow process) so the ~1 s fixed cost of a flow run
(mostly the heartbeat thread's join at exit) is reported apart from the cost per task run. The
parent samples the peak RSS of the server's process tree and of the child (psutil, every 50 ms)
and the server's CPU (minus its idle rate, measured first), and waits until the server holds all
task runs as COMPLETED (task states travel as batched events, so the server lags the client).
Linear growth means the wall per task run at 1,000 is about the one at 100 (goal: <= 1.5x).
Goal per task run: <= 30 ms (the budget docs/architecture.md plans with).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from bench.common import (
    REPO,
    BenchResult,
    PeakRss,
    bench_parser,
    bench_server,
    client_env,
    compare,
    emit,
    tree_cpu_seconds,
)

BENCHMARK = "orchestration"
CHILD_PREFIX = "ORCH-CHILD "
WORK_BYTES = 16 * 1024
FLOOR_ROUNDS = 2000
LINEAR_GOAL = 1.5
PER_TASK_GOAL_MS = 30.0


class ChildReport(BaseModel):
    """What the child process measured about itself."""

    tasks: int
    floor_s_per_task: float
    flow_wall_s: float
    tasks_wall_s: float
    tasks_cpu_s: float
    flow_run_id: str
    flow_end_epoch: float
    child_maxrss_mb: float


class Measurement(BaseModel):
    database: str
    tasks: int
    child: ChildReport
    flow_peak_mb: float
    server_peak_mb: float
    server_cpu_s: float
    catch_up_s: float | None


# --- the child: runs in its own process so its memory is its own ---------------------------


def run_child(tasks: int) -> ChildReport:
    import hashlib
    import resource

    payload = b"x" * WORK_BYTES

    def unit_of_work(i: int) -> str:
        return hashlib.sha256(payload + i.to_bytes(4, "little")).hexdigest()

    # the floor is timed over many rounds: ten calls are too short to time alone
    started = time.perf_counter()
    for i in range(FLOOR_ROUNDS):
        unit_of_work(i)
    floor = (time.perf_counter() - started) / FLOOR_ROUNDS

    from prefect import flow, task
    from prefect.runtime import flow_run

    @task(name="unit-of-work")
    def unit(i: int) -> str:
        return unit_of_work(i)

    @flow(name="bench-orchestration")
    def many(count: int) -> tuple[str, float, float]:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(count):
            unit(i)
        return str(flow_run.id), time.perf_counter() - wall0, time.process_time() - cpu0

    many(1)  # warm-up: the first flow and task run of a process pay for imports and setup
    wall0 = time.perf_counter()
    run_id, body_wall, body_cpu = many(tasks)
    wall = time.perf_counter() - wall0
    return ChildReport(
        tasks=tasks,
        floor_s_per_task=floor,
        flow_wall_s=wall,
        tasks_wall_s=body_wall,
        tasks_cpu_s=body_cpu,
        flow_run_id=run_id,
        flow_end_epoch=time.time(),
        child_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


# --- the parent ------------------------------------------------------------------------------


def completed_task_runs(api_url: str, flow_run_id: str) -> int:
    body = {
        "flow_runs": {"id": {"any_": [flow_run_id]}},
        "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    response = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=30)
    response.raise_for_status()
    return int(response.json())


def wait_for_catch_up(api_url: str, report: ChildReport, timeout_s: float = 90) -> float | None:
    """Seconds from the flow's return until the server holds all its task runs as COMPLETED."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if completed_task_runs(api_url, report.flow_run_id) >= report.tasks:
            return max(0.0, time.time() - report.flow_end_epoch)
        time.sleep(0.1)
    return None


def measure(info: Any, database: str, tasks: int, peak: PeakRss, idle_cpu: float) -> Measurement:
    """One child process running a flow of ``tasks`` task runs; ``idle_cpu`` in CPU-s per s."""
    env = client_env(info.api_url)
    cmd = [sys.executable, "-m", "bench.bench_orchestration", "--child", str(tasks)]
    server_cpu0, started = tree_cpu_seconds(info.pid), time.monotonic()
    peak.reset()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak.track("flow", proc.pid)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    lines = [line for line in out.splitlines() if line.startswith(CHILD_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"flow child ({tasks} tasks, {database}) exited {proc.returncode}:\n{err[-3000:]}"
        )
    report = ChildReport.model_validate_json(lines[-1][len(CHILD_PREFIX) :])
    catch_up = wait_for_catch_up(info.api_url, report)
    busy = tree_cpu_seconds(info.pid) - server_cpu0 - idle_cpu * (time.monotonic() - started)
    return Measurement(
        database=database,
        tasks=tasks,
        child=report,
        flow_peak_mb=max(peak.peak_mb("flow"), report.child_maxrss_mb),
        server_peak_mb=peak.peak_mb("server"),
        server_cpu_s=max(0.0, busy),
        catch_up_s=catch_up,
    )


def idle_cpu_rate(pid: int, seconds: float = 3.0) -> float:
    """CPU seconds per second the server spends on its own (loop services) with no client."""
    cpu0 = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (tree_cpu_seconds(pid) - cpu0) / seconds


def measure_database(
    database: str, sizes: list[int], work: Path, idle_s: float = 3.0
) -> list[Measurement]:
    results: list[Measurement] = []
    with bench_server(work / f"prefect-{database}", database) as info:
        pid: int = info.pid  # type: ignore[attr-defined]
        with PeakRss({"server": pid}) as peak:
            # the first flow run on a fresh server pays for registering the flow: not measured
            measure(info, database, 1, peak, 0.0)
            idle = idle_cpu_rate(pid, idle_s)
            print(f"[{database}] server idle CPU: {idle * 100:.1f}% of a core", flush=True)
            for tasks in sizes:
                m = measure(info, database, tasks, peak, idle)
                results.append(m)
                print_measurement(m)
    return results


def per_task_ms(m: Measurement) -> float:
    return m.child.tasks_wall_s / m.tasks * 1000


def catch_up_text(m: Measurement) -> str:
    return "not within 90 s" if m.catch_up_s is None else f"{m.catch_up_s:.1f} s"


def print_measurement(m: Measurement) -> None:
    c = m.child
    per_task, floor = per_task_ms(m), c.floor_s_per_task * 1000
    print(
        f"[{m.database}] {m.tasks:>5} task runs: {per_task:6.2f} ms/task wall, "
        f"{c.tasks_cpu_s / m.tasks * 1000:5.2f} ms/task CPU (flow process); plain loop "
        f"{floor:.4f} ms -> Prefect overhead {per_task - floor:.2f} ms/task "
        f"({per_task / floor:,.0f}x the floor); flow run {c.flow_wall_s:.2f} s of which "
        f"{c.flow_wall_s - c.tasks_wall_s:.2f} s fixed; server CPU "
        f"{m.server_cpu_s / m.tasks * 1000:.2f} ms/task; peak RSS flow process "
        f"{m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB; server has every task "
        f"state {catch_up_text(m)} after the flow returned",
        flush=True,
    )


def results_for(measurements: list[Measurement]) -> list[BenchResult]:
    db = measurements[0].database
    out: list[BenchResult] = []
    for m in measurements:
        c = m.child
        result = compare(
            BENCHMARK,
            "per task run, wall",
            per_task_ms(m),
            c.floor_s_per_task * 1000,
            size=f"{m.tasks} tasks, {db}",
            unit="ms",
            contender_label="flow",
            baseline_label="plain loop",
            notes=(
                f"overhead {per_task_ms(m) - c.floor_s_per_task * 1000:.1f} ms/task; CPU "
                f"{c.tasks_cpu_s / m.tasks * 1000:.1f} ms/task flow process, "
                f"{m.server_cpu_s / m.tasks * 1000:.1f} ms/task server; flow run fixed cost "
                f"{c.flow_wall_s - c.tasks_wall_s:.2f} s; peak RSS flow process "
                f"{m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB; server complete "
                f"{catch_up_text(m)} after the flow"
            ),
        )
        result.goal = f"<= {PER_TASK_GOAL_MS:g} ms/task"
        result.met = per_task_ms(m) <= PER_TASK_GOAL_MS and m.catch_up_s is not None
        out.append(result)
    by_size = {m.tasks: m for m in measurements}
    big, small = max(by_size), sorted(by_size)[-2] if len(by_size) > 1 else 0
    if small:
        out.append(
            compare(
                BENCHMARK,
                "growth: wall per task run",
                per_task_ms(by_size[big]),
                per_task_ms(by_size[small]),
                at_most=LINEAR_GOAL,
                size=f"{big} vs {small} tasks, {db}",
                unit="ms",
                contender_label=str(big),
                baseline_label=str(small),
                notes="~1 means the cost grows linearly with the number of task runs",
            )
        )
        lo, hi = by_size[min(by_size)], by_size[big]
        for label, big_mb, small_mb in (
            ("peak RSS, server", hi.server_peak_mb, lo.server_peak_mb),
            ("peak RSS, flow process", hi.flow_peak_mb, lo.flow_peak_mb),
        ):
            out.append(
                compare(
                    BENCHMARK,
                    label,
                    big_mb,
                    small_mb,
                    size=f"{hi.tasks} vs {lo.tasks} tasks, {db}",
                    unit="MB",
                    contender_label=str(hi.tasks),
                    baseline_label=str(lo.tasks),
                )
            )
    return out


def compare_databases(by_db: dict[str, list[Measurement]]) -> BenchResult | None:
    if "sqlite" not in by_db or "postgres" not in by_db:
        return None
    size = max(m.tasks for m in by_db["sqlite"])
    sq = next(m for m in by_db["sqlite"] if m.tasks == size)
    pg = next((m for m in by_db["postgres"] if m.tasks == size), None)
    if pg is None:
        return None
    return compare(
        BENCHMARK,
        "PostgreSQL vs SQLite, wall per task run",
        per_task_ms(pg),
        per_task_ms(sq),
        size=f"{size} tasks",
        unit="ms",
        contender_label="postgres",
        baseline_label="sqlite",
        notes="task runs are orchestrated client-side: the database should barely matter",
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="task runs per flow run")
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgres"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(CHILD_PREFIX + run_child(args.child).model_dump_json(), flush=True)
        return 0
    sizes = sorted(args.sizes or ([10, 50] if args.quick else [10, 100, 1000]))
    databases = args.databases or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    by_db: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="labops-bench-orch-") as tmp:
        for database in databases:
            print(f"starting a Prefect server on {database} ...", flush=True)
            by_db[database] = measure_database(
                database, sizes, Path(tmp), 1.0 if args.quick else 3.0
            )
    results = [r for db in databases for r in results_for(by_db[db])]
    across = compare_databases(by_db)
    if across is not None:
        results.append(across)
    for r in results:
        if r.name.startswith("growth"):
            verdict = "linear" if r.met else "NOT linear"
            print(f"{r.size}: wall per task run grows {r.ratio:.2f}x -> {verdict}", flush=True)
    for result in results:
        emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
