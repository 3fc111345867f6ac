"""The benchmark harness: the result contract, the table, and one quick real benchmark run.

No timed assertions: benchmarks measure, these tests check that they run and report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bench_orchestration as orch
from bench import bench_trigger as trig
from bench.common import RESULT_PREFIX, BenchResult, compare, emit, markdown_table, parse_results
from bench.run_all import discover, select
from cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_result_lines_round_trip_and_garbage_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    result = compare(
        "patch", "sweep wall", 4.0, 10.0, at_most=0.5, size="200 hosts", baseline_label="ansible"
    )
    emit(result)
    printed = capsys.readouterr().out
    assert printed.startswith(RESULT_PREFIX)
    noisy = "starting...\n" + printed + RESULT_PREFIX + "{not json\nRESULT {}\n"
    assert parse_results(noisy) == [result]
    assert result.ratio == pytest.approx(0.4)
    assert result.met is True
    assert result.goal == "<= 0.5"


def test_a_missed_goal_and_a_missing_baseline_show_in_the_table() -> None:
    missed = compare("certs", "flow vs loop", 3.0, 1.0, at_most=1.5, size="1000 endpoints")
    alone = BenchResult(
        benchmark="trigger", name="latency", contender=2.5, contender_label="median"
    )
    table = markdown_table([missed, alone])
    rows = table.splitlines()
    assert rows[0].startswith("| benchmark | measure | size |")
    assert "| 3x |" in rows[2] and "**no**" in rows[2]
    assert "median: 2.5 s" in rows[3] and "| - |" in rows[3]


def test_discovery_finds_every_benchmark_module_and_rejects_unknown_names() -> None:
    names = discover()
    assert {"orchestration", "trigger"} <= set(names)
    assert "trigger_flow" not in names
    assert select(names, ["bench_trigger"]) == ["trigger"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        select(names, ["nope"])


def test_the_bench_command_takes_its_options() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--only", "orchestration", "trigger"])
    assert args.quick and args.only == ["orchestration", "trigger"]


def _orchestration(tasks: int, end_to_end_s: float | None) -> orch.Measurement:
    child = orch.ChildReport(
        tasks=tasks,
        floor_s_per_task=0.00001,
        flow_wall_s=1.0 + tasks * 0.003,
        tasks_wall_s=tasks * 0.003,
        tasks_cpu_s=tasks * 0.002,
        flow_run_id="run",
        catch_up_s=None if end_to_end_s is None else 1.0,
        end_to_end_s=end_to_end_s,
        child_maxrss_mb=90,
    )
    return orch.Measurement(
        database="sqlite",
        tasks=tasks,
        child=child,
        flow_peak_mb=95,
        server_peak_mb=230,
        server_cpu_s=tasks * 0.02,
    )


def test_orchestration_growth_is_judged_on_the_cost_until_recorded() -> None:
    linear = orch.results_for([_orchestration(100, 2.5), _orchestration(1000, 25.0)])
    growth = next(r for r in linear if r.name.startswith("growth"))
    assert growth.ratio == pytest.approx(1.0) and growth.met is True
    worse = orch.results_for([_orchestration(100, 2.5), _orchestration(1000, 80.0)])
    assert next(r for r in worse if r.name.startswith("growth")).met is False
    # a server that never recorded every task run fails the per-task goal however fast the flow
    lagging = orch.results_for([_orchestration(100, 2.5), _orchestration(1000, None)])
    per_task = [r for r in lagging if r.name == "per task run, wall"]
    assert [r.met for r in per_task] == [True, False]
    assert not any(r.name.startswith("growth") for r in lagging)


def test_trigger_result_splits_the_median_run() -> None:
    trials = [
        trig.Trial(latency_s=latency, picked_up_s=latency - 2.0, running_s=latency - 0.1)
        for latency in (9.0, 3.0, 5.0)
    ]
    result = trig.results_for(trig.Series(runner="worker", poll_s=10.0, trials=trials), 1.0)
    assert result.contender == 5.0 and result.ratio == 5.0
    assert "QUERY_SECONDS=10 (Prefect default)" in result.size
    assert "3.0 s until picked up" in result.notes and "max 9.0 s" in result.notes
    short = trig.results_for(trig.Series(runner="serve", poll_s=1.0, trials=trials), 1.0)
    assert short.size.startswith("PREFECT_RUNNER_POLL_FREQUENCY=1 (labops default)")


@pytest.mark.slow
def test_quick_orchestration_benchmark_writes_a_table_with_ratios(tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run_all",
            "--quick",
            "--only",
            "orchestration",
            "--output",
            str(output),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = output.read_text()
    assert "Machine: " in text and "Prefect " in text
    rows = [line for line in text.splitlines() if line.startswith("| orchestration |")]
    per_task = [row for row in rows if "per task run, wall" in row]
    assert len(per_task) == 2  # the two quick sizes
    assert all(re.search(r"\| [0-9.,e+]+x \|", row) for row in per_task)
    assert any("growth" in row for row in rows)
    assert (tmp_path / "orchestration.log").read_text().count(RESULT_PREFIX) == len(rows)


def test_trigger_rows_name_the_bus_the_labops_flow_and_the_worker_launcher() -> None:
    trials = [
        trig.Trial(latency_s=2.0, picked_up_s=0.6, running_s=1.9, created_s=0.1),
        trig.Trial(latency_s=1.5, picked_up_s=0.3, running_s=1.4, created_s=0.05),
        trig.Trial(latency_s=3.0, picked_up_s=1.0, running_s=2.9, created_s=0.2),
    ]
    bus = trig.results_for(
        trig.Series(runner="labops-worker", poll_s=1.0, trials=trials, channel="mqtt"), 1.0
    )
    assert bus.name == "MQTT publish -> first task, labops housekeeping, worker"
    assert bus.size.startswith("PREFECT_WORKER_QUERY_SECONDS=1 (labops default)")
    assert "0.1 s until the bridge created it" in bus.notes
    assert "`labops worker`: runs forked from its warm starter" in bus.notes
    plain = trig.results_for(trig.Series(runner="worker", poll_s=1.0, trials=trials), 1.0)
    assert "labops' (python -m labops.warm_start) command" in plain.notes
    posted = [t.model_copy(update={"created_s": None}) for t in trials]
    rest = trig.results_for(
        trig.Series(runner="worker", poll_s=10.0, trials=posted, command="prefect"), 1.0
    )
    assert rest.name == "create_flow_run -> first task, worker"
    assert "Prefect's command" in rest.notes and "bridge" not in rest.notes
    served = trig.results_for(trig.Series(runner="labops-serve", poll_s=1.0, trials=trials), 1.0)
    assert served.size.startswith("PREFECT_RUNNER_POLL_FREQUENCY=1")
    assert "command" not in served.notes
