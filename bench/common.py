"""Shared helpers of the benchmarks, and the contract every ``bench/bench_<name>.py`` follows.

The contract (``bench/run_all.py`` relies on it; ``bench/README.md`` says the same):

1. A benchmark is a module ``bench/bench_<name>.py`` run as ``python -m bench.bench_<name>``
   from the repository root. It accepts ``--quick`` (tiny sizes, a smoke run of well under a
   minute) and needs no other argument; its default sizes fit its share of the ten-minute
   ``labops bench`` budget on a 2-core machine.
2. It measures its baseline in the same run as labops, prints whatever it likes for humans, and
   prints one line per measured comparison::

       BENCH-RESULT {"benchmark": "patch", "name": "sweep wall", "size": "200 hosts", ...}

   i.e. ``RESULT_PREFIX`` followed by the JSON of a :class:`BenchResult` on a single line
   (``emit(result)`` does it). Fields: ``benchmark`` (the ``<name>``), ``name`` (what is
   measured), ``size``, ``contender`` (labops's value) and ``contender_label``, ``baseline``
   and ``baseline_label`` (the same quantity for the tool or loop it is compared with),
   ``unit``, ``ratio`` (``contender / baseline`` unless ``ratio_label`` says otherwise, e.g.
   ``"ansible / labops"``), ``goal`` (text, e.g. ``"<= 1.3"``), ``met`` (true, false, or null
   when there is no goal) and ``notes``.
3. Exit status 0 when it measured (a missed goal is a result, not an error), non-zero when it
   could not measure. ``run_all`` shows a module without result lines as "no result".
4. It cleans up what it started (servers, sandboxes, databases), also when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH-RESULT "
PG_ADMIN_URL = os.environ.get("LABOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


class BenchResult(BaseModel):
    """One comparison: labops (the contender) against a baseline measured in the same run."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str
    name: str
    size: str = ""
    contender: float
    contender_label: str = "labops"
    baseline: float | None = None
    baseline_label: str = ""
    unit: str = "s"
    ratio: float | None = None
    ratio_label: str = "contender / baseline"
    goal: str = ""
    met: bool | None = None
    notes: str = ""


def compare(
    benchmark: str,
    name: str,
    contender: float,
    baseline: float | None,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    **fields: str,
) -> BenchResult:
    """A result with ``ratio = contender / baseline`` and ``met`` judged against the bounds."""
    ratio = contender / baseline if baseline else None
    goal_parts = []
    if at_most is not None:
        goal_parts.append(f"<= {at_most:g}")
    if at_least is not None:
        goal_parts.append(f">= {at_least:g}")
    met = goal_met(ratio, at_most=at_most, at_least=at_least) if goal_parts else None
    return BenchResult(
        benchmark=benchmark,
        name=name,
        contender=contender,
        baseline=baseline,
        ratio=ratio,
        goal=fields.pop("goal", " and ".join(goal_parts)),
        met=met,
        **fields,  # type: ignore[arg-type]
    )


def goal_met(
    value: float | None, *, at_most: float | None = None, at_least: float | None = None
) -> bool | None:
    if value is None:
        return None
    if at_most is not None and value > at_most:
        return False
    return not (at_least is not None and value < at_least)


def emit(result: BenchResult) -> None:
    """Print the result line ``run_all`` collects (see the module docstring)."""
    print(RESULT_PREFIX + result.model_dump_json(), flush=True)


def parse_results(output: str) -> list[BenchResult]:
    """The results a benchmark printed, in order; lines that fail validation are skipped."""
    found: list[BenchResult] = []
    for line in output.splitlines():
        start = line.find(RESULT_PREFIX)
        if start < 0:
            continue
        try:
            found.append(BenchResult.model_validate_json(line[start + len(RESULT_PREFIX) :]))
        except ValueError:
            continue
    return found


def bench_parser(description: str | None) -> argparse.ArgumentParser:
    """The argument parser every benchmark starts from: ``--quick``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    return parser


# --- timing and resources -------------------------------------------------------------------


@dataclass
class Timer:
    """Wall and CPU seconds of this process (all its threads) over a ``with`` block."""

    wall: float = 0.0
    cpu: float = 0.0
    _wall0: float = 0.0
    _cpu0: float = 0.0

    def __enter__(self) -> Timer:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (0 when it is gone)."""
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


@dataclass
class PeakRss:
    """Samples the RSS of process trees in a background thread; keeps the peak per label.

    ``with PeakRss({"server": server_pid}) as peak: ... peak.track("flow", child.pid)``;
    ``peak.peak_mb("server")``. ``reset()`` starts a new measuring window.
    """

    pids: dict[str, int] = field(default_factory=dict)
    interval_s: float = 0.05
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def track(self, label: str, pid: int) -> None:
        with self._lock:
            self.pids[label] = pid
            self.peaks.setdefault(label, 0)

    def reset(self) -> None:
        with self._lock:
            self.peaks = dict.fromkeys(self.pids, 0)

    def sample(self) -> None:
        with self._lock:
            pids = dict(self.pids)
        for label, pid in pids.items():
            rss = tree_rss_bytes(pid)
            with self._lock:
                self.peaks[label] = max(self.peaks.get(label, 0), rss)

    def peak_mb(self, label: str) -> float:
        with self._lock:
            return self.peaks.get(label, 0) / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def median_max(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)


# --- a Prefect server of the benchmark's own -----------------------------------------------


@contextlib.contextmanager
def bench_server(home: Path, database: str = "sqlite") -> Iterator[object]:
    """A Prefect server for one benchmark: ``database`` "sqlite" or "postgres".

    Yields ``labops.prefect_server.ServerInfo``; the server is stopped and a PostgreSQL
    database dropped on the way out.
    """
    from labops import prefect_server

    url = None
    if database == "postgres":
        url = f"{PG_ADMIN_URL.rstrip('/')}/labops_bench_{uuid.uuid4().hex[:10]}"
    home.mkdir(parents=True, exist_ok=True)
    try:
        info = prefect_server.start(
            home, port=prefect_server.free_port(), database_url=url, ui=False, timeout_s=180
        )
        yield info
    finally:
        prefect_server.stop(home)
        if url:
            with contextlib.suppress(Exception):
                prefect_server.drop_postgres_database(url)


def deploy_from_checkout(
    pool: str, name: str, source: Path, entrypoint: str, labops_command: bool = True
) -> str:
    """Deploy a bench flow from this checkout to the process pool ``pool`` (created if missing),
    its runs started with labops' flow-run command (``labops_command``) or Prefect's own
    launcher; returns the deployment id. The process's PREFECT_API_URL names the server."""
    from prefect import Flow

    from cli.deploy import ensure_process_pool
    from deployments.definitions import flow_run_command

    ensure_process_pool(pool)
    flow: Any = Flow.from_source(source=str(source), entrypoint=entrypoint)
    deployment_id = flow.deploy(
        name=name,
        work_pool_name=pool,
        job_variables={"command": flow_run_command()} if labops_command else {},
        print_next_steps=False,
        ignore_warnings=True,
    )
    return str(deployment_id)


def client_env(api_url: str, **extra: str) -> dict[str, str]:
    """Environment for a child process talking to ``api_url`` (no stray PREFECT_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


# --- the machine and the table --------------------------------------------------------------


class Machine(BaseModel):
    """Where the numbers came from."""

    cpu: str
    cores: int
    ram_gb: float
    python: str
    prefect: str
    date: str
    load_1m: float

    @classmethod
    def here(cls) -> Machine:
        cpu = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        try:
            import prefect

            prefect_version = str(prefect.__version__)
        except ImportError:
            prefect_version = "not installed"
        return cls(
            cpu=cpu,
            cores=psutil.cpu_count() or 1,
            ram_gb=round(psutil.virtual_memory().total / 2**30, 1),
            python=platform.python_version(),
            prefect=prefect_version,
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            load_1m=round(os.getloadavg()[0], 1),
        )

    def line(self) -> str:
        return (
            f"{self.cpu}, {self.cores} cores, {self.ram_gb:g} GB RAM, Python {self.python}, "
            f"Prefect {self.prefect}, {self.date}, load average {self.load_1m:g} at start"
        )


def fmt(value: float | None, unit: str = "") -> str:
    """A number for the table: three significant digits, the unit after it."""
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Iterable[BenchResult]) -> str:
    """benchmark | measure | size | contender | baseline | ratio | goal | met? | notes."""
    rows = [
        "| benchmark | measure | size | contender | baseline | ratio | goal | met? | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        contender = f"{r.contender_label}: {fmt(r.contender, r.unit)}"
        baseline = f"{r.baseline_label}: {fmt(r.baseline, r.unit)}" if r.baseline else "-"
        ratio = "-"
        if r.ratio is not None:
            ratio = f"{fmt(r.ratio)}x"
            if r.ratio_label != "contender / baseline":
                ratio += f" ({r.ratio_label})"
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        cells = [
            r.benchmark,
            r.name,
            r.size,
            contender,
            baseline,
            ratio,
            r.goal or "-",
            met,
            r.notes,
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)
