"""Orchestration cost: flow runs of 10, 100 and 1,000 task runs on SQLite and PostgreSQL servers.

    .venv/bin/python -m bench.bench_orchestration [--quick] [--sizes 10 100 1000]
                              [--databases sqlite postgres] [--modes sequential map]

For each database a Prefect server of its own is started (temporary PREFECT_HOME, free port;
the PostgreSQL database is dropped at the end) and one child process ("the flow process") runs

1. the floor: the unit of work (a SHA-256 of 16 KiB) in a plain Python loop, then
2. a warm-up flow run (the first flow and task run of a process pay for imports), then
3. for each size, a flow calling one task per unit sequentially (the per-entity pattern of the
   flows) and a flow fanning out with ``unit.map(...)`` on the default thread pool task runner,
   each timing its own body (wall, and CPU of the whole process) so that the fixed cost of a
   flow run is reported apart, and then waiting until the server holds every task run as
   COMPLETED before the next size. The flows run with labops' heartbeat fix
   (``labops.prefect_patches``), as every labops flow does; without it each flow run would
   cost about a second more.

Task states reach the server as batched events, so the server lags the flow: "until recorded"
is the wall per task run from the first task's start until the server has them all, i.e. the
throughput of flow process + server together. The parent samples the peak RSS of the server's
process tree and of the flow process (psutil, every 50 ms) and the server's CPU (minus its idle
rate, measured first) in each size's window.

Goals: <= 30 ms per task run in the flow process (the budget docs/architecture.md plans with);
linear growth: the cost per task run until recorded at 1,000 within 1.5x of the one at 100.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
PHASE_PREFIX = "ORCH-PHASE "
CATCH_UP_TIMEOUT_S = 120.0
WORK_BYTES = 16 * 1024
FLOOR_ROUNDS = 2000
LINEAR_GOAL = 1.5
PER_TASK_GOAL_MS = 30.0


class ChildReport(BaseModel):
    """What the child process measured about one flow run of ``tasks`` task runs."""

    mode: str = "sequential"
    tasks: int
    floor_s_per_task: float
    flow_wall_s: float
    tasks_wall_s: float
    tasks_cpu_s: float
    flow_run_id: str
    catch_up_s: float | None
    end_to_end_s: float | None
    child_maxrss_mb: float


class Measurement(BaseModel):
    database: str
    mode: str = "sequential"
    tasks: int
    child: ChildReport
    flow_peak_mb: float
    server_peak_mb: float
    server_cpu_s: float


# --- the child: one process per database, its memory sampled by the parent ------------------


def run_child(sizes: list[int], modes: list[str]) -> None:
    """Prints ``PHASE_PREFIX n`` before and ``CHILD_PREFIX <json>`` after each size."""
    import hashlib
    import os
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

    from labops.prefect_patches import apply

    apply()  # as in every labops flow process (flows/__init__.py)

    @task(name="unit-of-work")
    def unit(i: int) -> str:
        return unit_of_work(i)

    api_url = os.environ["PREFECT_API_URL"]
    watcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catch-up")
    catching_up: dict[str, Future[float | None]] = {}

    def finished(
        count: int, body0: float, wall0: float, cpu0: float
    ) -> tuple[str, float, float, float]:
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        run_id = str(flow_run.id)
        # watched from here, not after the flow returns: the ~1 s exit of a flow run would count
        catching_up[run_id] = watcher.submit(wait_for_catch_up, api_url, run_id, count)
        return run_id, body0, wall, cpu

    @flow(name="bench-orchestration")
    def many(count: int) -> tuple[str, float, float, float]:
        """One task per unit, one after the other: the per-entity pattern of the flows."""
        body0, wall0, cpu0 = time.time(), time.perf_counter(), time.process_time()
        for i in range(count):
            unit(i)
        return finished(count, body0, wall0, cpu0)

    @flow(name="bench-orchestration-map")
    def fanned(count: int) -> tuple[str, float, float, float]:
        """``unit.map`` over every unit on the default thread pool task runner."""
        body0, wall0, cpu0 = time.time(), time.perf_counter(), time.process_time()
        unit.map(range(count)).result()
        return finished(count, body0, wall0, cpu0)

    flows = {"sequential": many, "map": fanned}
    for mode in modes:  # the first flow and task run of a process pay for imports and setup
        catching_up[flows[mode](1)[0]].result()
    for mode, tasks in ((m, n) for m in modes for n in sizes):
        print(f"{PHASE_PREFIX}{mode} {tasks}", flush=True)
        wall0 = time.perf_counter()
        run_id, body_start, body_wall, body_cpu = flows[mode](tasks)
        wall, returned = time.perf_counter() - wall0, time.time()
        # the next size starts only when the server has digested this one
        done = catching_up[run_id].result()
        report = ChildReport(
            mode=mode,
            tasks=tasks,
            floor_s_per_task=floor,
            flow_wall_s=wall,
            tasks_wall_s=body_wall,
            tasks_cpu_s=body_cpu,
            flow_run_id=run_id,
            catch_up_s=None if done is None else max(0.0, done - returned),
            end_to_end_s=None if done is None else done - body_start,
            child_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
        print(CHILD_PREFIX + report.model_dump_json(), flush=True)


def completed_task_runs(api_url: str, flow_run_id: str) -> int:
    body = {
        "flow_runs": {"id": {"any_": [flow_run_id]}},
        "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    response = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=30)
    response.raise_for_status()
    return int(response.json())


def wait_for_catch_up(
    api_url: str, flow_run_id: str, tasks: int, timeout_s: float = CATCH_UP_TIMEOUT_S
) -> float | None:
    """Epoch when the server held all task runs of the flow run as COMPLETED (None: not yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if completed_task_runs(api_url, flow_run_id) >= tasks:
            return time.time()
        time.sleep(0.25)
    return None


# --- the parent ------------------------------------------------------------------------------


def measure_sizes(
    info: Any, database: str, sizes: list[int], modes: list[str], peak: PeakRss, idle_cpu: float
) -> list[Measurement]:
    """One child process running a flow per mode and size; ``idle_cpu`` in CPU-s per s."""
    env = client_env(info.api_url)
    cmd = [sys.executable, "-m", "bench.bench_orchestration", "--child", *map(str, sizes),
           "--modes", *modes]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak.track("flow", proc.pid)
    out: list[Measurement] = []
    server_cpu0, phase_start = 0.0, 0.0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(PHASE_PREFIX):
            peak.reset()
            server_cpu0, phase_start = tree_cpu_seconds(info.pid), time.monotonic()
        elif line.startswith(CHILD_PREFIX):
            report = ChildReport.model_validate_json(line[len(CHILD_PREFIX) :])
            own = idle_cpu * (time.monotonic() - phase_start)
            m = Measurement(
                database=database,
                mode=report.mode,
                tasks=report.tasks,
                child=report,
                flow_peak_mb=max(peak.peak_mb("flow"), 0.0),
                server_peak_mb=peak.peak_mb("server"),
                server_cpu_s=max(0.0, tree_cpu_seconds(info.pid) - server_cpu0 - own),
            )
            out.append(m)
            print_measurement(m)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0 or len(out) != len(sizes) * len(modes):
        raise RuntimeError(f"flow child ({database}) exited {proc.returncode}:\n{err[-3000:]}")
    return out


def idle_cpu_rate(pid: int, seconds: float = 3.0) -> float:
    """CPU seconds per second the server spends on its own (loop services) with no client."""
    cpu0 = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (tree_cpu_seconds(pid) - cpu0) / seconds


def measure_database(
    database: str, sizes: list[int], modes: list[str], work: Path, idle_s: float = 3.0
) -> list[Measurement]:
    with bench_server(work / f"prefect-{database}", database) as info:
        pid: int = info.pid  # type: ignore[attr-defined]
        idle = idle_cpu_rate(pid, idle_s)
        print(f"[{database}] server idle CPU: {idle * 100:.1f}% of a core", flush=True)
        with PeakRss({"server": pid}) as peak:
            return measure_sizes(info, database, sizes, modes, peak, idle)


def per_task_ms(m: Measurement) -> float:
    """Wall per task run in the flow process."""
    return m.child.tasks_wall_s / m.tasks * 1000


def recorded_ms(m: Measurement) -> float | None:
    """Wall per task run until the server has recorded it: the throughput of the whole system."""
    end_to_end = m.child.end_to_end_s
    return None if end_to_end is None else end_to_end / m.tasks * 1000


def catch_up_text(m: Measurement) -> str:
    catch_up = m.child.catch_up_s
    return f"not within {CATCH_UP_TIMEOUT_S:.0f} s" if catch_up is None else f"{catch_up:.1f} s"


def print_measurement(m: Measurement) -> None:
    c = m.child
    per_task, floor = per_task_ms(m), c.floor_s_per_task * 1000
    recorded = recorded_ms(m)
    print(
        f"[{m.database}, {m.mode}] {m.tasks:>5} task runs: {per_task:6.2f} ms/task wall, "
        f"{c.tasks_cpu_s / m.tasks * 1000:5.2f} ms/task CPU in the flow process; plain loop "
        f"{floor:.4f} ms -> Prefect overhead {per_task - floor:.2f} ms/task "
        f"({per_task / floor:,.0f}x the floor); flow run {c.flow_wall_s:.2f} s of which "
        f"{c.flow_wall_s - c.tasks_wall_s:.2f} s fixed; server CPU "
        f"{m.server_cpu_s / m.tasks * 1000:.2f} ms/task; the server has every task state "
        f"{catch_up_text(m)} after the flow returned "
        f"({'-' if recorded is None else f'{recorded:.1f}'} ms/task until recorded); "
        f"peak RSS flow process {m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB",
        flush=True,
    )


def results_for(measurements: list[Measurement]) -> list[BenchResult]:
    db = measurements[0].database
    if measurements[0].mode != "sequential":
        db += f", {measurements[0].mode}"
    out: list[BenchResult] = []
    for m in measurements:
        c = m.child
        recorded = recorded_ms(m)
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
                f"{m.server_cpu_s / m.tasks * 1000:.1f} ms/task server; until recorded on the "
                f"server {'-' if recorded is None else f'{recorded:.1f}'} ms/task (complete "
                f"{catch_up_text(m)} after the flow); flow run fixed cost "
                f"{c.flow_wall_s - c.tasks_wall_s:.2f} s; peak RSS flow process "
                f"{m.flow_peak_mb:.0f} MB, server {m.server_peak_mb:.0f} MB"
            ),
        )
        result.goal = f"<= {PER_TASK_GOAL_MS:g} ms/task"
        result.met = per_task_ms(m) <= PER_TASK_GOAL_MS and recorded is not None
        out.append(result)
    by_size = {m.tasks: m for m in measurements}
    if len(by_size) < 2:
        return out
    big, small = by_size[max(by_size)], by_size[sorted(by_size)[-2]]
    big_rec, small_rec = recorded_ms(big), recorded_ms(small)
    cpu = [(m.child.tasks_cpu_s + m.server_cpu_s) / m.tasks * 1000 for m in (big, small)]
    if big_rec is not None and small_rec is not None:
        out.append(
            compare(
                BENCHMARK,
                "growth: per task run until recorded on the server",
                big_rec,
                small_rec,
                at_most=LINEAR_GOAL,
                size=f"{big.tasks} vs {small.tasks} tasks, {db}",
                unit="ms",
                contender_label=str(big.tasks),
                baseline_label=str(small.tasks),
                notes=(
                    "~1 means linear; CPU per task run (flow process + server) "
                    f"{cpu[0]:.1f} vs {cpu[1]:.1f} ms"
                ),
            )
        )
    if measurements[0].mode != "sequential":
        return out  # the same process and server as the sequential rows: memory is theirs
    lo, hi = by_size[min(by_size)], big
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
    sq = next(m for m in by_db["sqlite"] if m.tasks == size and m.mode == "sequential")
    pg = next((m for m in by_db["postgres"] if m.tasks == size and m.mode == "sequential"), None)
    if pg is None:
        return None
    return compare(
        BENCHMARK,
        "PostgreSQL vs SQLite, per task run until recorded",
        recorded_ms(pg) or 0.0,
        recorded_ms(sq),
        size=f"{size} tasks",
        unit="ms",
        contender_label="postgres",
        baseline_label="sqlite",
        notes=(
            f"flow process wall {per_task_ms(pg):.1f} vs {per_task_ms(sq):.1f} ms/task; "
            f"server CPU {pg.server_cpu_s / size * 1000:.1f} vs "
            f"{sq.server_cpu_s / size * 1000:.1f} ms/task"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="task runs per flow run")
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--modes", nargs="+", choices=["sequential", "map"], help="how the flow calls its tasks"
    )
    parser.add_argument("--child", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        run_child(args.child, args.modes or ["sequential"])
        return 0
    sizes = sorted(args.sizes or ([10, 50] if args.quick else [10, 100, 1000]))
    databases = args.databases or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    modes = args.modes or (["sequential"] if args.quick else ["sequential", "map"])
    by_db: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="labops-bench-orch-") as tmp:
        for database in databases:
            print(f"starting a Prefect server on {database} ...", flush=True)
            by_db[database] = measure_database(
                database, sizes, modes, Path(tmp), 1.0 if args.quick else 3.0
            )
    results = [
        r
        for db in databases
        for mode in modes
        for r in results_for([m for m in by_db[db] if m.mode == mode])
    ]
    across = compare_databases(by_db)
    if across is not None:
        results.append(across)
    for r in results:
        if r.name.startswith("growth"):
            verdict = "linear" if r.met else "NOT linear"
            print(f"{r.size}: cost per task run grows {r.ratio:.2f}x -> {verdict}", flush=True)
    for result in results:
        emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
