"""Run every benchmark and write one markdown table: ``labops bench`` / ``python -m bench.run_all``.

    .venv/bin/python -m bench.run_all [--quick] [--only NAME ...] [--output PATH]

Every ``bench/bench_<name>.py`` is run, one after the other (they would disturb each other's
timings), as ``python -m bench.bench_<name> [--quick]`` in its own process group with a time
limit; its output is streamed here and kept in ``<output dir>/<name>.log``, and its
``BENCH-RESULT`` lines (the contract in ``bench/common.py``) make the rows of the table. The
table, headed by the machine it came from, goes to ``--output`` (default
``bench/results/latest.md``) and to stdout. Exit status 1 when a benchmark produced no result.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from bench.common import REPO, BenchResult, Machine, bench_parser, markdown_table, parse_results

BENCH_DIR = REPO / "bench"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.md"
# the fixed order: cheap and self-contained first, then the sandbox-heavy ones
PREFERRED_ORDER = ["orchestration", "trigger", "certs", "backups", "patch"]
DEFAULT_TIMEOUT_S = 900.0  # the patch bench: 6 sizes x 4 contenders, the warm one 3 times


class ModuleRun(BaseModel):
    """How one benchmark module went."""

    name: str
    seconds: float
    exit_code: int | None
    timed_out: bool
    results: list[BenchResult]

    @property
    def status(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.exit_code != 0:
            return f"exit {self.exit_code}"
        return "ok" if self.results else "no result"


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of the benchmark modules present (``bench_<name>.py`` -> ``<name>``)."""
    names = [p.stem.removeprefix("bench_") for p in bench_dir.glob("bench_*.py")]
    known = [n for n in PREFERRED_ORDER if n in names]
    return known + sorted(n for n in names if n not in known)


def select(available: list[str], only: Sequence[str] | None) -> list[str]:
    if not only:
        return available
    wanted = [n.removeprefix("bench_").removesuffix(".py") for n in only]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SystemExit(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}"
        )
    return [n for n in available if n in wanted]


def run_module(name: str, quick: bool, timeout_s: float, log_path: Path) -> ModuleRun:
    cmd = [sys.executable, "-m", f"bench.bench_{name}", *(["--quick"] if quick else [])]
    # every benchmark starts servers of its own: none may report to the operator's server
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    captured: list[str] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # so a time-out ends the servers and sandboxes it started
            # a shell starts background jobs with SIGINT ignored and children inherit that; the
            # module must get KeyboardInterrupt from SIGINT to clean up
            preexec_fn=_default_sigint,
        )
        timed_out = threading.Event()

        def stop() -> None:
            _signal_group(proc, signal.SIGINT)  # lets the module clean up
            if _wait(proc, 30):
                return
            _signal_group(proc, signal.SIGTERM)
            if not _wait(proc, 15):
                _signal_group(proc, signal.SIGKILL)

        def expire() -> None:
            timed_out.set()
            stop()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                captured.append(line)
                log.write(line)
                print(f"[{name}] {line}", end="", flush=True)
            proc.wait()
        except KeyboardInterrupt:
            # the module runs in its own session, so Ctrl-C did not reach it: pass it on
            stop()
            raise
        finally:
            timer.cancel()
    return ModuleRun(
        name=name,
        seconds=time.monotonic() - started,
        exit_code=proc.returncode,
        timed_out=timed_out.is_set(),
        results=parse_results("".join(captured)),
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait(proc: subprocess.Popen[str], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def render(runs: list[ModuleRun], machine: Machine, quick: bool, total_s: float) -> str:
    lines = [
        "# labops benchmarks" + (" (quick smoke run)" if quick else ""),
        "",
        f"Machine: {machine.line()}.",
        "",
        f"`labops bench{' --quick' if quick else ''}` took {total_s:.0f} s: "
        + "; ".join(f"{r.name} {r.seconds:.0f} s ({r.status})" for r in runs)
        + ". Baselines are measured in the same run as labops; ratios are contender / "
        "baseline unless the cell says otherwise.",
        "",
        markdown_table([res for r in runs for res in r.results]),
    ]
    missing = [r for r in runs if not r.results]
    if missing:
        lines += ["", "No result from: " + ", ".join(f"{r.name} ({r.status})" for r in missing)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per benchmark module"
    )
    args = parser.parse_args(argv)
    # SIGTERM, and SIGINT even when started in the background, stop the running module cleanly
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    names = select(discover(), args.only)
    machine = Machine.here()
    output: Path = args.output.resolve()
    started = time.monotonic()
    runs: list[ModuleRun] = []
    try:
        for name in names:
            print(f"== {name} ==", flush=True)
            runs.append(run_module(name, args.quick, args.timeout, output.parent / f"{name}.log"))
    except KeyboardInterrupt:
        print("interrupted; the running benchmark was stopped, no table written", flush=True)
        return 130
    text = render(runs, machine, args.quick, time.monotonic() - started)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print("\n" + text, flush=True)
    print(f"written to {output}", flush=True)
    return 0 if all(r.results for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
