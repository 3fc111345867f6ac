"""Benchmark of the backups flow against the sandbox: ratios measured in one run.

    .venv/bin/python bench/bench_backups.py [--time-scale 0.1] [--big 500] [--big-scale 0.002]

1. The 53-guest lab, per-node limit 1: the flow's wall time against the ideal schedule, i.e. the
   longest node's sum of vzdump durations (the sandbox's own vzdump timing, read from each
   task's log, scaled; the task list's whole-second start/end times are shown as a cross-check).
   Goal: wall <= 1.1 x ideal + a few seconds of fixed cost (flow start, discovery, audit,
   artifacts). The fixed cost is measured in the same run: a flow run with nothing to back up.
2. A 500-guest lab (vzdumps of a few milliseconds): orchestration overhead per guest,
   (wall - fixed cost - ideal) / guests. Goal: < 30 ms. Measured twice on the same sandbox and
   server: quiet, then with one core kept busy by a background busy loop (a nightly run shares
   its host with other jobs), each with its own fixed cost and ideal schedule.

Both runs use a Prefect server started for the benchmark (SQLite, like the test fixture), or
the one PREFECT_API_URL names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_DURATION = re.compile(r"Duration: ([0-9.]+)s|Finished Backup of VM \d+ \((\d+):(\d+):(\d+)\)")


def start_sandbox(directory: Path, containers: int, time_scale: float) -> dict[str, Any]:
    from tests.fixtures.sandbox import free_port_range

    args = [
        sys.executable,
        "-m",
        "sandbox",
        "start",
        "--dir",
        str(directory),
        "--base-port",
        str(free_port_range(containers + 80)),
        "--time-scale",
        str(time_scale),
        "--containers",
        str(containers),
        "--timeout",
        "120",
    ]
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, timeout=180)
    ready: dict[str, Any] = json.loads((directory / "ready").read_text())
    if ready.get("failed"):
        stop_sandbox(directory)
        raise SystemExit(f"sandbox services failed to start: {ready['failed']}")
    return ready


def stop_sandbox(directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "sandbox", "stop", "--dir", str(directory)],
        cwd=REPO,
        check=False,
        capture_output=True,
        timeout=60,
    )


def write_config(ready: dict[str, Any], directory: Path, scope: str, rpo: str) -> str:
    cfg = yaml.safe_load(Path(ready["config"]).read_text())
    cfg["backups"] = {
        "tiers": {"bench": {"rpo": rpo}},
        "default_tier": "bench",
        "tier_tags": {},
        "per_node_limit": 1,
        "per_storage_limit": 8,
        "poll_interval": 0.05,
        "task_timeout": 600,
        "limits_scope": scope,
    }
    cfg["lab"]["state_dir"] = str(directory / "state")
    path = directory / f"{scope}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def pve(ready: dict[str, Any], directory: Path) -> Any:
    from proxmoxer import ProxmoxAPI

    return ProxmoxAPI(
        "127.0.0.1",
        port=ready["ports"]["pve"][0],
        user="root@pam",
        token_name="labops",
        token_value=(directory / "secrets" / "pve_token").read_text().strip(),
        verify_ssl=str(directory / "ca.pem"),
        timeout=30,
    )


def ideal_schedule(
    client: Any, since: float, time_scale: float
) -> tuple[dict[str, float], dict[str, float], int]:
    """Per node: the sum of vzdump durations (task logs, scaled) and of (end - start) as the
    task list reports them (whole seconds)."""
    by_log: dict[str, float] = defaultdict(float)
    by_list: dict[str, float] = defaultdict(float)
    count = 0
    for node in ("pve1", "pve2", "pve3", "pve4"):
        try:
            tasks = client.nodes(node).tasks.get(
                typefilter="vzdump", since=int(since), source="all", limit=100000
            )
        except Exception:  # an offline node has no tasks of this run
            continue
        for t in tasks:
            count += 1
            by_list[node] += float(t.get("endtime", t["starttime"]) - t["starttime"])
            lines = client.nodes(node).tasks(t["upid"]).log.get(limit=0)
            for line in lines:
                m = _DURATION.search(line["t"])
                if m and m.group(1):
                    by_log[node] += float(m.group(1)) * time_scale
                    break
    return dict(by_log), dict(by_list), count


def run_flow(config: str, **kw: Any) -> tuple[float, float, Any]:
    """Wall time, this process's CPU time (the flow's own orchestration work), the report."""
    from flows.backups import backups

    t0, c0 = time.perf_counter(), time.process_time()
    state = backups(config=config, return_state=True, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, state.result(raise_on_failure=False)


SERVER_PID: int | None = None
"""The Prefect server this benchmark started (its CPU per guest is shown), if any."""


def server_cpu() -> float:
    """CPU seconds of the benchmark's Prefect server and its children so far (0 when unknown)."""
    import psutil

    if SERVER_PID is None:
        return 0.0
    try:
        root = psutil.Process(SERVER_PID)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def busy_loop() -> subprocess.Popen[bytes]:
    """One core kept busy for the loaded variant (killed by the caller)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(
    ready: dict[str, Any], directory: Path, label: str, time_scale: float
) -> dict[str, Any]:
    """One fixed-cost run and one backup run of every guest, on a running sandbox."""
    client = pve(ready, directory)
    load_before = os.getloadavg()[0]
    # Fixed cost: the same flow with nothing due (RPO of a year).
    fixed_wall, fixed_cpu, fixed = run_flow(write_config(ready, directory, f"{label}-f", "365d"))
    assert fixed.vzdump_started == 0, fixed.headline()
    # Only this run's vzdumps count (an earlier variant's ended before it began).
    time.sleep(1.1)
    since = time.time()
    s0 = server_cpu()
    wall, cpu, report = run_flow(write_config(ready, directory, f"{label}-b", "1s"))
    s1 = server_cpu()
    by_log, by_list, count = ideal_schedule(client, since, time_scale)
    return {
        "wall": wall,
        "fixed": fixed_wall,
        "cpu": cpu,
        "fixed_cpu": fixed_cpu,
        "report": report,
        "by_log": by_log,
        "by_list": by_list,
        "tasks": count,
        "server_cpu": s1 - s0,
        "load_before": load_before,
        "load": os.getloadavg()[0],
    }


def scenario(
    directory: Path, containers: int, time_scale: float, label: str, loaded: bool = False
) -> list[dict[str, Any]]:
    """The quiet measurement, then (``loaded``) the same under a background busy loop."""
    ready = start_sandbox(directory, containers, time_scale)
    busy: subprocess.Popen[bytes] | None = None
    try:
        runs = [measure(ready, directory, label, time_scale)]
        if loaded:
            busy = busy_loop()
            runs.append(measure(ready, directory, f"{label}x", time_scale))
        return runs
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        stop_sandbox(directory)


def report_big(
    big: dict[str, Any], args: argparse.Namespace, variant: str, quiet_ms: float | None
) -> float:
    """Print and emit the orchestration overhead per guest of one large-lab run."""
    from bench.common import BenchResult, emit

    report = big["report"]
    guests = report.counts()["backed-up"]
    ideal = max(big["by_log"].values())
    overhead = big["wall"] - big["fixed"] - ideal
    lanes = len(big["by_log"])
    load = f"load avg {big['load_before']:.1f} before, {big['load']:.1f} after"
    print(
        f"{args.big}-guest lab, {variant} (time scale {args.big_scale}, per-node limit 1, "
        f"{lanes} node lanes)"
    )
    print(
        f"  guests backed up:   {guests} ({big['tasks']} vzdump tasks, "
        f"{len(report.failures)} failures)"
    )
    print(
        f"  ideal schedule:     {ideal:.2f} s; fixed cost {big['fixed']:.2f} s; "
        f"wall {big['wall']:.2f} s"
    )
    per_guest = overhead / max(1, guests) * 1000
    print(
        f"  orchestration overhead per guest = (wall - fixed - ideal) / guests = "
        f"{per_guest:.1f} ms   (goal < 30 ms)"
    )
    cpu_ms = (big["cpu"] - big["fixed_cpu"]) / max(1, guests) * 1000
    server_ms = big["server_cpu"] / max(1, guests) * 1000
    print(
        f"  flow process CPU per guest = {cpu_ms:.1f} ms (Prefect task runs, HTTP, "
        f"planning; {load} on {os.cpu_count()} CPUs)"
    )
    print(f"  Prefect server CPU per guest (whole backup run) = {server_ms:.1f} ms")
    busiest = max(big["by_log"], key=lambda n: big["by_log"][n])
    per_lane = sum(1 for r in report.guests if r.node == busiest and r.upid)
    print(
        f"  gap between two backups on the busiest lane ({busiest}, {per_lane} "
        f"guests) = {overhead / max(1, per_lane) * 1000:.1f} ms"
    )
    than_quiet = f"; {per_guest / quiet_ms:.2f}x the quiet run's" if quiet_ms else ""
    emit(
        BenchResult(
            benchmark="backups",
            name="orchestration overhead per guest"
            + (", one core busy" if variant != "quiet" else ""),
            size=f"{guests} guests, time scale {args.big_scale:g}",
            contender=per_guest,
            contender_label="(wall - fixed - ideal) / guests",
            unit="ms",
            goal="< 30 ms",
            met=per_guest < 30,
            notes=f"ideal {ideal:.2f} s, fixed {big['fixed']:.2f} s, wall "
            f"{big['wall']:.2f} s; CPU per guest: flow process {cpu_ms:.1f} ms, server "
            f"{server_ms:.1f} ms; {load}{than_quiet}",
        )
    )
    return per_guest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        help="sandbox time scale of the 53-guest run (vzdumps of 0.2-8 s)",
    )
    parser.add_argument("--big", type=int, default=500, help="containers of the large lab")
    parser.add_argument("--big-scale", type=float, default=0.002)
    parser.add_argument("--no-big", action="store_true", help="skip the 500-guest run")
    parser.add_argument("--no-small", action="store_true", help="skip the 53-guest run")
    parser.add_argument(
        "--no-loaded",
        action="store_true",
        help="skip the large lab's second run under a background busy loop",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the 53-guest lab at time scale 0.01, no large lab",
    )
    args = parser.parse_args()
    if args.quick:
        args.time_scale, args.no_big = 0.01, True
    from bench.common import BenchResult, emit

    tmp = Path(tempfile.mkdtemp(prefix="bench-backups-"))
    home = tmp / "prefect"
    started_server = False
    if not os.environ.get("PREFECT_API_URL"):
        from labops import prefect_server

        home.mkdir()
        info = prefect_server.start(home, port=prefect_server.free_port(), ui=False, timeout_s=180)
        os.environ["PREFECT_API_URL"] = info.api_url
        global SERVER_PID
        SERVER_PID = info.pid
        started_server = True
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        if not args.no_small:
            small = scenario(tmp / "lab53", 52, args.time_scale, f"b{os.getpid()}s")[0]
            ideal = max(small["by_log"].values())
            ideal_list = max(small["by_list"].values())
            report = small["report"]
            print(f"53-guest lab (time scale {args.time_scale}, per-node limit 1)")
            print(
                f"  guests backed up:   {report.counts()['backed-up']} "
                f"({small['tasks']} vzdump tasks, {len(report.failures)} failures)"
            )
            print(
                "  per node (s, log):  "
                + ", ".join(f"{n} {v:.1f}" for n, v in sorted(small["by_log"].items()))
            )
            print(
                f"  ideal schedule:     {ideal:.2f} s "
                f"(task list, whole seconds: {ideal_list:.0f} s)"
            )
            print(f"  fixed cost:         {small['fixed']:.2f} s (same flow, nothing due)")
            print(f"  flow wall time:     {small['wall']:.2f} s")
            ratio = (small["wall"] - small["fixed"]) / ideal
            print(f"  ratio (wall - fixed) / ideal = {ratio:.3f}   (goal <= 1.1)")
            print(
                f"  ratio wall / (1.1 x ideal + fixed) = "
                f"{small['wall'] / (1.1 * ideal + small['fixed']):.3f}   (goal <= 1.0)"
            )
            emit(
                BenchResult(
                    benchmark="backups",
                    name="wall vs ideal schedule (per-node limit 1)",
                    size=f"{report.counts()['backed-up']} guests, time scale {args.time_scale:g}",
                    contender=small["wall"] - small["fixed"],
                    contender_label="flow - fixed cost",
                    baseline=ideal,
                    baseline_label="ideal schedule",
                    ratio=ratio,
                    goal="<= 1.1",
                    met=ratio <= 1.1,
                    notes=f"fixed cost {small['fixed']:.2f} s; whole flow {small['wall']:.2f} s",
                )
            )
        if not args.no_big:
            runs = scenario(
                tmp / "lab500", args.big, args.big_scale, f"b{os.getpid()}l", not args.no_loaded
            )
            quiet_ms: float | None = None
            for big, variant in zip(runs, ["quiet", "one core busy"], strict=False):
                per_guest = report_big(big, args, variant, quiet_ms)
                quiet_ms = per_guest if quiet_ms is None else quiet_ms
    finally:
        if started_server:
            from labops import prefect_server

            prefect_server.stop(home)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
