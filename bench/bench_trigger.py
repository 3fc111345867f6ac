"""API and bus trigger to running: ``POST /api/deployments/{id}/create_flow_run`` or a message on
labops' MQTT run topic, to the first task.

    .venv/bin/python -m bench.bench_trigger [--quick] [--reps 3] [--tuned-poll 1]
        [--runners serve worker labops-serve labops-worker] [--worker-command labops|prefect]

Against a Prefect server of its own (SQLite, temporary PREFECT_HOME), for

- a serve process (``python -m bench.trigger_flow serve NAME``: ``flow.serve``),
- a process worker (``prefect worker start --pool P --type process``; the flow deployed to the
  pool with ``Flow.from_source(source=<bench dir>, entrypoint="trigger_flow.py:triggered")``,
  started with labops' flow-run command at labops' poll, with Prefect's own launcher at
  Prefect's poll; ``--worker-command`` picks one for both),
- ``labops serve --only housekeeping`` and a process worker running labops' own deployment of
  ``housekeeping`` (``labops deploy --pool``'s way), each for a lab of its own whose
  ``labops bridge`` listens on the machine's Mosquitto (127.0.0.1:1883): a real labops flow
  (dry run; its imports, its config), triggered through the REST API and through the bus
  (``<run topic>/housekeeping`` with a ``request_id``; the bridge creates the run),

each with Prefect's default poll interval (10 s) and with labops' default for its serve and
worker units (``deployments/poll.py``, 1 s: ``PREFECT_RUNNER_POLL_FREQUENCY`` for serve,
``PREFECT_WORKER_QUERY_SECONDS`` for the worker; a pool per worker); ``--quick`` measures both at
labops' default only. All runners are
started at once - their idle CPU and the server's, polling, is measured - then runs are triggered
one at a time, round-robin over the runners, a few each. The bench flow's first task writes
``time.time()`` to a file named by a parameter; a labops flow's first task is the task run that
started first (its start time on the server); latency = that moment - the moment before the POST
or the publish. The run's state history splits it: waiting to be picked up (SCHEDULED ->
PENDING: the poll interval; through the bus, the bridge creating the run comes first), starting
the flow process (PENDING -> RUNNING: interpreter, imports, loading the flow) and running ->
first task. The baseline is the floor any runner that starts a fresh process pays: a Python
process importing prefect and the bench flow module and writing the stamp.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
import yaml
from pydantic import BaseModel

from bench.common import (
    REPO,
    BenchResult,
    bench_parser,
    bench_server,
    client_env,
    deploy_from_checkout,
    emit,
    median_max,
    tree_cpu_seconds,
)
from deployments.poll import POLL_S, SERVE_SETTING, WORKER_SETTING

BENCHMARK = "trigger"
FLOW_NAME = "bench-trigger"
POOL = "bench-trigger-pool"
LAB_FLOW = "housekeeping"  # read-only as a dry run, needs nothing but the Prefect server
BROKER = ("127.0.0.1", 1883)
DEFAULT_POLL_S = 10.0  # PREFECT_RUNNER_POLL_FREQUENCY and PREFECT_WORKER_QUERY_SECONDS, 3.9.1


class Trial(BaseModel):
    """One triggered run: seconds from the POST to each milestone."""

    latency_s: float
    picked_up_s: float | None
    running_s: float | None
    created_s: float | None = None  # through the bus: until the bridge created the run
    states: list[str] = []  # the run's state names in order


class Series(BaseModel):
    runner: str
    poll_s: float
    trials: list[Trial]
    idle_cpu: float | None = None  # share of a core the idle runner uses, polling
    channel: str = "rest"  # how runs are created: "rest" (create_flow_run) or "mqtt"
    command: str = "labops"  # a worker's flow-run launcher: labops' command or Prefect's


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


def wait_for_deployment(api: str, flow: str, name: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = call("GET", f"{api}/deployments/name/{flow}/{name}")
        if response.status_code == 200:
            return str(response.json()["id"])
        time.sleep(0.3)
    raise RuntimeError(f"deployment {flow}/{name} did not appear within {timeout_s:.0f} s")


def state_times(api: str, flow_run_id: str) -> dict[str, float]:
    """First time the run entered each state type, as epoch seconds."""
    response = call("GET", f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id})
    response.raise_for_status()
    first: dict[str, float] = {}
    for state in response.json():
        stamp = _epoch(state["timestamp"])
        first[state["type"]] = min(first.get(state["type"], stamp), stamp)
    return first


def state_names(api: str, flow_run_id: str) -> list[str]:
    """The run's states in order, by name (a wait for a concurrency slot shows here)."""
    response = call("GET", f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id})
    response.raise_for_status()
    return [s["name"] for s in sorted(response.json(), key=lambda s: s["timestamp"])]


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
    """A run of the bench flow through the REST API; its first task stamps ``stamp_file``."""
    stamp_file.unlink(missing_ok=True)
    posted = time.time()
    # a retried POST counts from the first attempt: the caller waited for it too
    run_id = create_run(api, deployment_id, {"path": str(stamp_file)})
    deadline = time.monotonic() + timeout_s
    while not stamp_file.exists() or not stamp_file.read_text().strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {run_id}: first task did not start in {timeout_s:.0f} s")
        time.sleep(0.02)
    started = float(stamp_file.read_text())
    final = wait_until_final(api, run_id, timeout_s)
    if final != "COMPLETED":
        print(f"  note: flow run {run_id} ended {final}", flush=True)
    return split(api, run_id, posted, started)


def create_run(api: str, deployment_id: str, parameters: dict[str, Any]) -> str:
    response = call(
        "POST",
        f"{api}/deployments/{deployment_id}/create_flow_run",
        # the key makes a retried POST return the run the first one may have created
        json={"parameters": parameters, "idempotency_key": uuid.uuid4().hex},
    )
    response.raise_for_status()
    return str(response.json()["id"])


def split(
    api: str, run_id: str, posted: float, started: float, created: float | None = None
) -> Trial:
    states = state_times(api, run_id)
    pending, running = states.get("PENDING"), states.get("RUNNING")
    return Trial(
        latency_s=started - posted,
        picked_up_s=None if pending is None else pending - posted,
        running_s=None if running is None else running - posted,
        created_s=None if created is None else created - posted,
        states=state_names(api, run_id),
    )


def run_ids(api: str, deployment_id: str) -> dict[str, float]:
    """The deployment's latest runs: id -> created (epoch seconds)."""
    response = call(
        "POST",
        f"{api}/flow_runs/filter",
        json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 20,
        },
    )
    response.raise_for_status()
    return {str(r["id"]): _epoch(r["created"]) for r in response.json()}


def new_run(api: str, deployment_id: str, known: set[str], timeout_s: float) -> tuple[str, float]:
    """The run of the deployment that is not in ``known`` (the bridge just created it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = {k: v for k, v in run_ids(api, deployment_id).items() if k not in known}
        if fresh:
            run_id = min(fresh, key=lambda k: fresh[k])
            return run_id, fresh[run_id]
        time.sleep(0.05)
    raise RuntimeError(f"no run of deployment {deployment_id} appeared in {timeout_s:.0f} s")


def first_task_start(api: str, run_id: str, timeout_s: float = 60) -> float:
    """When the flow run's first task run started (epoch seconds, as the server recorded it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = call(
            "POST",
            f"{api}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200},
        )
        response.raise_for_status()
        starts = [_epoch(t["start_time"]) for t in response.json() if t.get("start_time")]
        if starts:
            return min(starts)
        time.sleep(0.2)  # task runs reach the server as events, a moment after they happen
    raise RuntimeError(f"flow run {run_id}: no task run recorded in {timeout_s:.0f} s")


class Publisher:
    """One MQTT connection to the machine's broker, kept open: connecting is not the bridge's
    cost."""

    def __init__(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect(*BROKER)
        self.client.loop_start()

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


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


def deploy_to_pool(pool: str, name: str, command: str) -> None:
    """Child mode: create the process pool if missing and deploy the bench flow to it from
    source, started with labops' flow-run command or (``command`` "prefect") Prefect's own."""
    entrypoint = "trigger_flow.py:triggered"
    deploy_from_checkout(pool, name, REPO / "bench", entrypoint, labops_command=command == "labops")


def deploy_lab_to_pool(pool: str, config: str) -> None:
    """Child mode: labops' deployment of the lab flow on a process pool, as ``labops deploy
    --pool`` makes it (no schedule)."""
    from cli.deploy import ensure_process_pool
    from deployments.definitions import deploy_to_pool as labops_deploy
    from deployments.definitions import deployment_specs
    from labops.config import load_config

    ensure_process_pool(pool)
    spec = next(s for s in deployment_specs(load_config(config), config) if s.flow == LAB_FLOW)
    labops_deploy([spec.model_copy(update={"cron": None})], pool, REPO)


class Runner:
    """One runner with its own deployment (and pool, for a worker): a serve process or process
    worker of the bench flow, or of a labops flow for a lab of its own (``labops-serve``,
    ``labops-worker``), whose ``labops bridge`` takes runs from the bus."""

    def __init__(
        self, kind: str, poll_s: float, api: str, work: Path, command: str = "labops"
    ) -> None:
        self.kind, self.poll_s, self.api, self.command = kind, poll_s, api, command
        self.name = f"{kind}-{poll_s:g}s-{uuid.uuid4().hex[:6]}"
        self.log = work / f"{self.name}.log"
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge: subprocess.Popen[bytes] | None = None
        self.publisher: Publisher | None = None
        self.deployment_id = ""
        self.labops = kind.startswith("labops-")
        self.channels = ["rest", "mqtt"] if self.labops else ["rest"]
        self.topic = f"bench-{uuid.uuid4().hex[:8]}"
        self.config = work / f"{self.name}.yaml"

    @property
    def flow(self) -> str:
        return LAB_FLOW if self.labops else FLOW_NAME

    @property
    def pool(self) -> str:
        return f"{POOL}-{self.name}"  # a pool per worker: two workers would race for runs

    def _write_config(self) -> None:
        self.config.write_text(
            yaml.safe_dump(
                {
                    "lab": {"name": self.name, "state_dir": str(self.work / self.name)},
                    "systems": {
                        "mqtt": {"host": BROKER[0], "port": BROKER[1], "topic_prefix": self.topic}
                    },
                    "platform": {
                        "mqtt_run_topic": f"{self.topic}/run",
                        "mqtt_events_topic": f"{self.topic}/events",
                    },
                }
            )
        )

    def start(self) -> None:
        env = client_env(self.api)
        bin_dir = Path(sys.executable).parent
        if self.labops:
            self._write_config()
        if self.kind == "serve":
            env[SERVE_SETTING] = str(max(1, round(self.poll_s)))
            cmd = [sys.executable, "-m", "bench.trigger_flow", "serve", self.name]
        elif self.kind == "labops-serve":
            env[SERVE_SETTING] = str(max(1, round(self.poll_s)))
            cmd = [str(bin_dir / "labops"), "serve", "--config", str(self.config)]
            cmd += ["--only", LAB_FLOW]
        else:
            deploy = ["--deploy-lab", self.pool, str(self.config)] if self.labops else [
                "--deploy", self.pool, self.name, self.command
            ]  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "bench.bench_trigger", *deploy],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                timeout=180,
            )
            env[WORKER_SETTING] = f"{self.poll_s:g}"
            if self.labops and self.command == "labops":  # labops' worker: warm starts
                cmd = [str(bin_dir / "labops"), "worker", "--pool", self.pool]
            else:
                cmd = [str(bin_dir / "prefect"), "worker", "start", "--pool", self.pool]
                cmd += ["--type", "process"]
        self.proc = start_process(cmd, env, self.log)
        if self.labops:
            bridge = [str(bin_dir / "labops"), "bridge", "--config", str(self.config)]
            self.bridge = start_process(bridge, env, self.work / f"{self.name}-bridge.log")

    def ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        self.deployment_id = wait_for_deployment(self.api, self.flow, self.deployment_name)
        if self.bridge is not None:
            self.publisher = Publisher()
            self._warm_up(deadline)
        if not self.kind.endswith("worker"):
            return  # serve creates its deployment once it is up
        while time.monotonic() < deadline:  # the deployment predates the worker: wait for it
            workers = call("POST", f"{self.api}/work_pools/{self.pool}/workers/filter")
            if workers.status_code == 200 and workers.json():
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} did not register within {timeout_s:.0f} s")

    def _warm_up(self, deadline: float) -> None:
        """One run through the bus before the trials (the bridge logs nothing a bench can wait
        for): the same request id, sent until the bridge has subscribed, starts one run."""
        assert self.publisher is not None and self.bridge is not None
        request = {"request_id": f"warm-up-{self.name}"}
        while not run_ids(self.api, self.deployment_id):
            if time.monotonic() > deadline or self.bridge.poll() is not None:
                log = (self.work / f"{self.name}-bridge.log").read_text(errors="replace")
                raise RuntimeError(f"the bridge of {self.name} started no run: {log[-2000:]}")
            self.publisher.publish(f"{self.topic}/run/{LAB_FLOW}", request)
            time.sleep(1)
        for run_id in run_ids(self.api, self.deployment_id):
            wait_until_final(self.api, run_id, max(deadline - time.monotonic(), 60))

    @property
    def deployment_name(self) -> str:
        if not self.labops:
            return self.name
        from labops.scope import deployment_name

        return deployment_name(self.name)

    def trigger(self, channel: str, stamp_file: Path) -> Trial:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} is not running; see {self.log}")
        timeout_s = self.poll_s * 3 + 60
        if not self.labops:
            return trigger_once(self.api, self.deployment_id, stamp_file, timeout_s)
        known = set(run_ids(self.api, self.deployment_id))
        created: float | None = None
        posted = time.time()
        if channel == "rest":
            run_id = create_run(self.api, self.deployment_id, {"dry_run": True})
        else:
            assert self.publisher is not None
            self.publisher.publish(f"{self.topic}/run/{LAB_FLOW}", {"request_id": uuid.uuid4().hex})
            run_id, created = new_run(self.api, self.deployment_id, known, timeout_s)
        final = wait_until_final(self.api, run_id, timeout_s)
        if final != "COMPLETED":
            print(f"  note: flow run {run_id} ended {final}", flush=True)
        started = first_task_start(self.api, run_id)
        return split(self.api, run_id, posted, started, created)

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        for proc in (self.bridge, self.proc):
            if proc is not None:
                stop_process(proc)


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
    series = {
        (id(r), channel): Series(
            runner=r.kind, poll_s=r.poll_s, trials=[], channel=channel, command=r.command
        )
        for r in runners
        for channel in r.channels
    }
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
        for (key, _), one in series.items():
            one.idle_cpu = idle.get(next(r.name for r in runners if id(r) == key))
        for rep in range(reps):
            for runner in runners:
                for channel in runner.channels:
                    # runs are created at arbitrary moments of the poll cycle, as operators do
                    time.sleep(random.uniform(0, 1))
                    trial = runner.trigger(channel, work / f"{runner.name}-{rep}.stamp")
                    series[(id(runner), channel)].trials.append(trial)
                    bridge = "" if trial.created_s is None else f"created {trial.created_s:.2f} s, "
                    print(
                        f"  {runner.kind} via {channel} (poll {runner.poll_s:g} s) run "
                        f"{rep + 1}: {trial.latency_s:5.2f} s ({bridge}picked up "
                        f"{_s(trial.picked_up_s)}, running {_s(trial.running_s)}; "
                        f"{' > '.join(trial.states)})",
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
    setting = SERVE_SETTING if series.runner.endswith("serve") else WORKER_SETTING
    runner = series.runner.replace("labops-", f"labops {LAB_FLOW}, ")
    notes = f"max {worst:.1f} s"
    if series.runner.endswith("worker"):
        if series.runner == "labops-worker" and series.command == "labops":
            notes += "; `labops worker`: runs forked from its warm starter"
        else:
            launcher = {"labops": "labops' (python -m labops.warm_start)", "prefect": "Prefect's"}
            notes += f"; flow runs started with {launcher[series.command]} command"
    if series.idle_cpu is not None:
        notes += f"; idle, the {series.runner} process uses {series.idle_cpu * 100:.1f}% of a core"
    typical = sorted(series.trials, key=lambda t: t.latency_s)[(len(series.trials) - 1) // 2]
    if typical.picked_up_s is not None and typical.running_s is not None:
        created = typical.created_s
        notes += (
            "; the median run: "
            + ("" if created is None else f"{created:.1f} s until the bridge created it, ")
            + f"{typical.picked_up_s:.1f} s until picked up (polling), "
            f"{typical.running_s - typical.picked_up_s:.1f} s starting the flow process, "
            f"{typical.latency_s - typical.running_s:.1f} s from running to the first task"
        )
    return BenchResult(
        benchmark=BENCHMARK,
        name=f"{'MQTT publish' if series.channel == 'mqtt' else 'create_flow_run'} -> first task, "
        f"{runner}",
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


KINDS = ["serve", "worker", "labops-serve", "labops-worker"]


def default_command(poll_s: float) -> str:
    """A worker at Prefect's default poll uses Prefect's launcher: that row is Prefect's."""
    return "prefect" if poll_s == DEFAULT_POLL_S else "labops"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--reps", type=int, help="triggered runs per setting (default 3)")
    parser.add_argument(
        "--tuned-poll", type=float, default=float(POLL_S), help="short poll (labops' default), s"
    )
    parser.add_argument("--runners", nargs="+", choices=KINDS, help="default: all")
    parser.add_argument(
        "--worker-command",
        choices=["labops", "prefect"],
        help="the bench flow's worker starts runs with labops' command or Prefect's launcher "
        "(default: labops' at labops' poll, Prefect's at Prefect's poll)",
    )
    parser.add_argument(
        "--deploy", nargs=3, metavar=("POOL", "NAME", "CMD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--deploy-lab", nargs=2, metavar=("POOL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deploy:
        deploy_to_pool(*args.deploy)
        return 0
    if args.deploy_lab:
        deploy_lab_to_pool(*args.deploy_lab)
        return 0
    reps = args.reps or (2 if args.quick else 3)
    kinds = args.runners or KINDS
    polls = [args.tuned_poll] if args.quick else [DEFAULT_POLL_S, args.tuned_poll]
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="labops-bench-trigger-") as tmp:
        work = Path(tmp)
        floor = process_floor(work)
        print(f"fresh process floor (python + import prefect + the flow module): {floor:.2f} s")
        with bench_server(work / "prefect-home") as info:
            api: str = info.api_url  # type: ignore[attr-defined]
            runners = [
                Runner(kind, poll, api, work, args.worker_command or default_command(poll))
                for kind in kinds
                # labops' own flows at labops' poll only: Prefect's default shows on the others
                for poll in (polls if kind in ("serve", "worker") else [args.tuned_poll])
            ]
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
