"""Orchestration cost: flow runs of 10, 100 and 1,000 task runs on SQLite and PostgreSQL servers.

    .venv/bin/python -m bench.bench_orchestration [--quick] [--sizes 10 100 1000]
                                                   [--databases sqlite postgres]

For each database a Prefect server of its own is started (temporary PREFECT_HOME, free port;
the PostgreSQL database is dropped at the end). For each size a child process runs

1. the floor: the same unit of work (a SHA-256 of 16 KiB) in a plain Python loop, and
2. a flow calling one task per unit, sequentially (the per-entity pattern of the flows),

and reports wall and CPU seconds of the flow call. The parent samples the peak RSS of the server's
process tree and of the child (psutil, every 50 ms) and the server's CPU, and waits until the
server holds all task runs as COMPLETED (task states travel as batched events, so the server lags
the client). An empty flow (0 tasks) gives the fixed cost of a flow run; the marginal cost of a
task run is ``(wall(n) - wall(0)) / n``. Linear growth means the marginal cost at 1,000 is about
the one at 100 (goal: ratio <= 1.5).
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
    goal_met,
    tree_cpu_seconds,
)

BENCHMARK = "orchestration"
CHILD_PREFIX = "ORCH-CHILD "
WORK_BYTES = 16 * 1024
FLOOR_ROUNDS = 2000
LINEAR_GOAL = 1.5
MARGINAL_GOAL_MS = 30.0


class ChildReport(BaseModel):
    """What the child process measured about itself."""

    tasks: int
    floor_s_per_task: float
    flow_wall_s: float
    flow_cpu_s: float
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
    def many(count: int) -> str:
        for i in range(count):
            unit(i)
        return str(flow_run.id)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    run_id = many(tasks)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return ChildReport(
        tasks=tasks,
        floor_s_per_task=floor,
        flow_wall_s=wall,
        flow_cpu_s=cpu,
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


def measure(info: Any, database: str, tasks: int, peak: PeakRss) -> Measurement:
    env = client_env(info.api_url)
    cmd = [sys.executable, "-m", "bench.bench_orchestration", "--child", str(tasks)]
    server_cpu0 = tree_cpu_seconds(info.pid)
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
    catch_up = wait_for_catch_up(info.api_url, report) if tasks else 0.0
    return Measurement(
        database=database,
        tasks=tasks,
        child=report,
        flow_peak_mb=max(peak.peak_mb("flow"), report.child_maxrss_mb),
        server_peak_mb=peak.peak_mb("server"),
        server_cpu_s=tree_cpu_seconds(info.pid) - server_cpu0,
        catch_up_s=catch_up,
    )


def measure_database(database: str, sizes: list[int], work: Path) -> list[Measurement]:
    results: list[Measurement] = []
    with bench_server(work / f"prefect-{database}", database) as info:
        pid = info.pid  # type: ignore[attr-defined]
        with PeakRss({"server": pid}) as peak:
            # warm-up: the first flow run of a fresh server pays for registering the flow
            measure(info, database, 0, peak)
            for tasks in [0, *sizes]:
                m = measure(info, database, tasks, peak)
                results.append(m)
                print_measurement(m, results[0])
    return results


def marginal_ms(m: Measurement, empty: Measurement) -> float:
    return (m.child.flow_wall_s - empty.child.flow_wall_s) / m.tasks * 1000


def print_measurement(m: Measurement, empty: Measurement) -> None:
    c = m.child
    if m.tasks == 0:
        print(
            f"[{m.database}] empty flow run: {c.flow_wall_s:.2f} s wall, {c.flow_cpu_s:.2f} s CPU;"
            f" flow process peak {m.flow_peak_mb:.0f} MB, server peak {m.server_peak_mb:.0f} MB",
            flush=True,
        )
        return
    per_task = c.flow_wall_s / m.tasks * 1000
    floor = c.floor_s_per_task * 1000
    catch_up = "never (90 s)" if m.catch_up_s is None else f"{m.catch_up_s:.1f} s"
    print(
        f"[{m.database}] {m.tasks:>5} task runs: {per_task:7.2f} ms/task wall "
        f"({marginal_ms(m, empty):6.2f} marginal), {c.flow_cpu_s / m.tasks * 1000:6.2f} ms/task "
        f"CPU; plain loop {floor:.4f} ms/task -> Prefect overhead {per_task - floor:.2f} ms/task "
        f"({per_task / floor:,.0f}x the floor); server CPU {m.server_cpu_s / m.tasks * 1000:.2f} "
        f"ms/task; peaks: flow process {m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB;"
        f" server complete {catch_up} after the flow returned",
        flush=True,
    )


def results_for(measurements: list[Measurement]) -> list[BenchResult]:
    empty = measurements[0]
    runs = [m for m in measurements if m.tasks]
    db = empty.database
    out: list[BenchResult] = []
    for m in runs:
        c = m.child
        marginal = marginal_ms(m, empty)
        catch_up = "never (90 s)" if m.catch_up_s is None else f"{m.catch_up_s:.1f} s"
        result = compare(
            BENCHMARK,
            "per task run, wall",
            c.flow_wall_s / m.tasks * 1000,
            c.floor_s_per_task * 1000,
            size=f"{m.tasks} tasks, {db}",
            unit="ms",
            contender_label="flow",
            baseline_label="plain loop",
            notes=(
                f"marginal {marginal:.1f} ms/task (flow fixed cost {empty.child.flow_wall_s:.2f}"
                f" s); CPU {c.flow_cpu_s / m.tasks * 1000:.1f} ms/task; peak RSS flow process "
                f"{m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB; server CPU "
                f"{m.server_cpu_s / m.tasks * 1000:.1f} ms/task; server complete {catch_up} later"
            ),
        )
        result.goal = f"marginal <= {MARGINAL_GOAL_MS:g} ms"
        result.met = marginal <= MARGINAL_GOAL_MS
        out.append(result)
    by_size = {m.tasks: m for m in runs}
    if 1000 in by_size and 100 in by_size:
        big, small = marginal_ms(by_size[1000], empty), marginal_ms(by_size[100], empty)
        out.append(
            compare(
                BENCHMARK,
                "growth: marginal cost per task run",
                big,
                small,
                at_most=LINEAR_GOAL,
                size=f"1000 vs 100 tasks, {db}",
                unit="ms",
                contender_label="1000",
                baseline_label="100",
                notes="~1 means linear in the number of task runs",
            )
        )
    if len(runs) >= 2:
        lo, hi = runs[0], runs[-1]
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
    sq, pg = by_db["sqlite"], by_db["postgres"]
    size = max(m.tasks for m in sq)
    sq_big = next(m for m in sq if m.tasks == size)
    pg_big = next((m for m in pg if m.tasks == size), None)
    if pg_big is None or size == 0:
        return None
    return compare(
        BENCHMARK,
        "PostgreSQL vs SQLite, marginal per task run",
        marginal_ms(pg_big, pg[0]),
        marginal_ms(sq_big, sq[0]),
        size=f"{size} tasks",
        unit="ms",
        contender_label="postgres",
        baseline_label="sqlite",
        notes="client-side orchestration: the database should barely matter",
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
    sizes = args.sizes or ([10, 50] if args.quick else [10, 100, 1000])
    databases = args.databases or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    by_db: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="labops-bench-orch-") as tmp:
        for database in databases:
            print(f"starting a Prefect server on {database} ...", flush=True)
            by_db[database] = measure_database(database, sorted(sizes), Path(tmp))
    results = [r for db in databases for r in results_for(by_db[db])]
    across = compare_databases(by_db)
    if across is not None:
        results.append(across)
    for db, ms in by_db.items():
        runs = {m.tasks: m for m in ms if m.tasks}
        if 1000 in runs and 100 in runs:
            growth = marginal_ms(runs[1000], ms[0]) / marginal_ms(runs[100], ms[0])
            verdict = "linear" if goal_met(growth, at_most=LINEAR_GOAL) else "NOT linear"
            print(f"[{db}] marginal cost per task run, 1000 vs 100: {growth:.2f}x -> {verdict}")
    for result in results:
        emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
