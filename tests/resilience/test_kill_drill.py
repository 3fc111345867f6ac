"""kill -9 of the process that runs the flows (a ``labops serve`` process, or a ``prefect worker``
of a process work pool) and of the flow processes it started, as when the host dies, in the
middle of a backup run and of a patch-apply run; that process started again; both run again.

Promises checked on the sandbox: no guest backed up twice, no host snapshotted/upgraded twice,
the snapshot the killed patch run left behind is named in the next run's report, no guest left
locked, and the killed runs end Crashed: marked by the zombie-run automation labops' housekeeping
installs (heartbeats every 30 s here, the automation's window at its 90 s minimum), since
neither Prefect's server nor a restarted serve process or worker marks them by itself.

Runs on a private Prefect server (the zombie automation and the stuck runs must not touch the
session server) and a private sandbox. One lab's backups and patch apply never run at the same
time (they share the lab's maintenance slot), so the drill gives the sandbox two labs of labops:
one whose backup run is killed and one whose patch run is killed, each with its own deployments
and runner, both killed at the same moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from labops import prefect_server as server
from labops.scope import deployment_name
from tests.fixtures.sandbox import SandboxHandle
from tests.resilience.platform import ROOT, client_env, run_state, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
PATCH_HOSTS = ["gitea", "actual", "agent-sec"]
HANGING = "agent-sec"
ZOMBIE_AFTER_S = 90  # the smallest window the config allows (3 heartbeats of 30 s)
ENDED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def drill_config(sandbox: SandboxHandle, work: Path, lab: str) -> str:
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["lab"]["name"] = lab
    cfg["lab"]["state_dir"] = str(work / "state")
    retry = {"timeout_s": 3, "attempts": 6, "backoff_s": 0.05, "backoff_max_s": 0.5}
    cfg["systems"]["proxmox"]["retry"] = retry
    cfg["systems"]["pbs"]["retry"] = retry
    cfg["backups"] = {
        "tiers": {"short": {"rpo": "10m"}, "7d": {"rpo": "7d"}},
        "default_tier": "short",
        "tier_tags": {},
        "poll_interval": 0.1,
        "lock_retry": 0.2,
        "lock_wait": 30,
        "task_timeout": 60,
        # the killed run's slots are leases: the rerun waits for them to lapse (>= 60 s)
        "slot_wait": 180,
        "per_storage_limit": 8,
        "limits_scope": f"kill-{os.getpid()}",
    }
    cfg["patching"] = {
        "windows": [
            {
                "start": "00:00",
                "end": "23:59",
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            }
        ],
        # listed, never refused: the sandbox's nightly backup jobs would refuse a node near them
        "overlaps": "list",
        "refresh": False,
        "canary_count": 0,
        "batch_size": 3,
        "per_node_parallel": 3,
        "delete_snapshots_after_h": 0,
    }
    cfg["platform"] = {
        "zombie_after_seconds": ZOMBIE_AFTER_S,
    }
    path = work / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


class Runner:
    """What runs the deployments, in its own session: ``python -m deployments.serve`` (serve
    mode), or a process worker of a pool the deployments were deployed to (``labops deploy
    --pool``; worker mode)."""

    def __init__(self, mode: str, api_url: str, config: str, work: Path, flow: str) -> None:
        self.env = client_env(
            api_url,
            work / f"{mode}-home",
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30",
            PREFECT_WORKER_QUERY_SECONDS="2",
        )
        if mode == "serve":
            self.args = [sys.executable, "-m", "deployments.serve", "--config", config,
                         "--only", flow]  # fmt: skip
        else:
            pool = f"drill-{os.getpid()}-{flow}"  # a pool serves one lab
            subprocess.run(
                [sys.executable, "-m", "cli.main", "deploy", "--config", config, "--pool", pool,
                 "--only", flow],
                cwd=ROOT, env=self.env, check=True, capture_output=True, timeout=180,
            )  # fmt: skip
            prefect = str(Path(sys.executable).with_name("prefect"))
            self.args = [prefect, "worker", "start", "--pool", pool, "--type", "process",
                         "--name", f"{pool}-worker"]  # fmt: skip
        self.log = work / f"{mode}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_hard(self) -> list[int]:
        """SIGKILL the runner and every process it started: nothing gets to say goodbye."""
        assert self.proc is not None
        family = [self.proc.pid]
        with contextlib.suppress(psutil.NoSuchProcess):
            family += [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        return family

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Api:
    def __init__(self, api_url: str, lab: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=30)
        self.lab = deployment_name(lab)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST, retried while the SQLite-backed server answers 503 under load (as Prefect's
        own client does); only for requests safe to repeat."""
        for _ in range(10):
            resp = self.http.post(path, json=body)
            if resp.status_code != 503:
                break
            time.sleep(0.5)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def deployment_id(self, name: str) -> str | None:
        """The id of the drill lab's deployment of the flow ``name`` (``<flow>/<lab>``)."""
        found = self.http.get(f"/deployments/name/{name}/{self.lab}")
        return str(found.json()["id"]) if found.status_code == 200 else None

    def run(self, deployment: str, parameters: dict[str, Any]) -> str:
        dep = self.deployment_id(deployment)
        assert dep, f"no deployment {deployment}"
        # the idempotency key makes a retried create return the same run
        key = f"drill-{deployment}-{time.monotonic_ns()}"
        created = self.post(
            f"/deployments/{dep}/create_flow_run",
            {"parameters": parameters, "idempotency_key": key},
        )
        return str(created["id"])

    def approve_when_paused(self, run_id: str, timeout: float = 90) -> None:
        api_url = str(self.http.base_url).rstrip("/")
        wait_for(
            lambda: run_state(api_url, run_id)[0] == "PAUSED",
            timeout,
            f"patch run {run_id} never paused",
        )
        for _ in range(10):
            resp = self.http.post(
                f"/flow_runs/{run_id}/resume", json={"run_input": {"approve": True}}
            )
            if resp.status_code != 503:
                resp.raise_for_status()
                return
            if run_state(api_url, run_id)[0] != "PAUSED":
                return  # the busy server took it after all
            time.sleep(0.5)
        raise AssertionError(f"the server kept answering 503 to resuming {run_id}")

    def artifacts_text(self, run_id: str) -> str:
        arts = self.post("/artifacts/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        return "\n".join(str(a.get("data")) for a in arts)


def pbs_backups_since(sandbox: SandboxHandle, since: float) -> Counter[int]:
    snaps = sandbox.pbs().admin.datastore("store1").snapshots.get()
    return Counter(
        int(s["backup-id"])
        for s in snaps
        if s["backup-time"] >= int(since) and s["backup-type"] in ("ct", "vm")
    )


def pve_tasks_per_guest(sandbox: SandboxHandle, kind: str, since: float) -> Counter[str]:
    pve = sandbox.pve()
    counts: Counter[str] = Counter()
    for node in ("pve1", "pve2", "pve3", "pve4"):
        for task in pve.nodes(node).tasks.get(
            typefilter=kind, since=int(since), source="all", limit=1000
        ):
            counts[str(task.get("id"))] += 1
    return counts


def pending(sandbox: SandboxHandle, host: str) -> list[str]:
    return sorted(sandbox.control("fleet", "state", host=host)["pending"])


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[server.ServerInfo]:
    home = tmp_path / "server-home"
    info = server.start(home, port=server.free_port(), ui=False, timeout_s=180)
    try:
        yield info
    finally:
        server.stop(home)


@pytest.mark.parametrize("mode", ["serve", "worker"])
def test_killed_mid_backup_and_patch_then_rerun(
    make_sandbox: Callable[..., SandboxHandle],
    platform: server.ServerInfo,
    tmp_path: Path,
    mode: str,
) -> None:
    from tasks.prefect_admin import ensure_zombie_automation
    from tests.fixtures.prefect import pointing_at

    sb = make_sandbox()  # a seeded lab each: the other mode's drill upgraded its hosts
    labs = {flow: f"kill-{os.getpid()}-{flow}" for flow in ("patch-apply", "backups")}
    cfgs = {flow: drill_config(sb, tmp_path / flow, lab) for flow, lab in labs.items()}
    with pointing_at(platform):  # what `labops housekeeping` installs on a self-hosted server
        assert ensure_zombie_automation.fn(ZOMBIE_AFTER_S) in ("created", "updated", "present")
    apis = {flow: Api(platform.api_url, lab) for flow, lab in labs.items()}
    runners = [Runner(mode, platform.api_url, cfgs[flow], tmp_path / flow, flow) for flow in labs]
    for host in PATCH_HOSTS:
        assert pending(sb, host), f"{host} has nothing to upgrade in the seeded lab"
    vmid_of = {
        g["name"]: str(g["vmid"])
        for g in sb.pve().cluster.resources.get(type="vm")
        if g.get("name") in PATCH_HOSTS
    }
    t0 = time.time() - 1
    for runner in runners:
        runner.start()
    try:
        wait_for(
            lambda: all(api.deployment_id(flow) for flow, api in apis.items()),
            90,
            f"{mode}: the deployments are not there",
        )
        sb.set_faults("fleet", extra={"hanging_commands": {HANGING: "dist-upgrade"}})
        sb.set_faults("pve", latency_ms=20)  # vzdumps slow enough to kill one mid-run
        patch_run = apis["patch-apply"].run("patch-apply", {"hosts": PATCH_HOSTS})
        apis["patch-apply"].approve_when_paused(patch_run)
        wait_for(
            lambda: not pending(sb, "gitea") and not pending(sb, "actual"),
            90,
            "the patch run upgraded nothing before the kill",
        )
        backup_run = apis["backups"].run("backups", {})
        wait_for(
            lambda: sum(pbs_backups_since(sb, t0).values()) >= 8,
            90,
            "the backup run backed nothing up before the kill",
        )
        killed_at = time.monotonic()
        for runner in runners:
            runner.kill_hard()
        assert pending(sb, HANGING), "the hanging host must not have been upgraded"
        states = {r: run_state(platform.api_url, r)[0] for r in (patch_run, backup_run)}
        assert set(states.values()) == {"RUNNING"}, states  # nobody told the server

        sb.reset_faults()
        for runner in runners:
            runner.start()  # "start it again"
        # A lab-changing deployment never overlaps itself (deployment limit 1, CANCEL_NEW):
        # while the killed run still looks Running, a new run is refused rather than run beside.
        early = apis["backups"].run("backups", {})
        early_state = wait_state(platform.api_url, early, ENDED, 90, "the early rerun never ended")
        crashed = {}
        for run in (patch_run, backup_run):
            left = max(10.0, ZOMBIE_AFTER_S + 60 - (time.monotonic() - killed_at))
            crashed[run] = wait_state(
                platform.api_url,
                run,
                ENDED,
                left,
                f"killed run {run} still Running long after the kill",
            )
        crashed_after = time.monotonic() - killed_at
        # "run again", once the killed runs are known dead
        rerun_patch = apis["patch-apply"].run("patch-apply", {"hosts": PATCH_HOSTS})
        rerun_backup = apis["backups"].run("backups", {})
        apis["patch-apply"].approve_when_paused(rerun_patch)
        final = {
            run: wait_state(platform.api_url, run, ENDED, 200, f"rerun {run} did not end")
            for run in (rerun_patch, rerun_backup)
        }
    finally:
        for runner in runners:
            runner.stop()
        sb.reset_faults()

    assert final == {rerun_patch: "COMPLETED", rerun_backup: "COMPLETED"}, (
        final,
        apis["patch-apply"].artifacts_text(rerun_patch)[-2000:],
        "\n".join(r.log.read_text()[-1500:] for r in runners),
    )
    assert set(crashed.values()) == {"CRASHED"}, crashed
    assert early_state == "CANCELLED", f"a run beside the killed one ended {early_state}"
    print(f"killed runs marked Crashed {crashed_after:.0f}s after the kill")

    backups_per_guest = pbs_backups_since(sb, t0)
    assert backups_per_guest and max(backups_per_guest.values()) == 1, backups_per_guest
    vzdumps = pve_tasks_per_guest(sb, "vzdump", t0)
    assert {k: n for k, n in vzdumps.items() if n > 1} == {}, vzdumps
    snapshots = pve_tasks_per_guest(sb, "vzsnapshot", t0)
    # a host is snapshotted right before its upgrade: the hosts the killed run finished are
    # not touched again; the one it left hanging is snapshotted anew and upgraded by the rerun
    done_first = [h for h in PATCH_HOSTS if h != HANGING]
    assert {h: snapshots[vmid_of[h]] for h in done_first} == dict.fromkeys(done_first, 1), (
        "a host the killed run had upgraded was upgraded again",
        snapshots,
    )
    # the rerun snapshots it anew; the killed run had snapshotted it too, unless the kill landed
    # before that step (the kill's moment depends on how fast the machine is): never more
    assert snapshots[vmid_of[HANGING]] in (1, 2), snapshots
    not_patched = {h: pending(sb, h) for h in PATCH_HOSTS if pending(sb, h)}
    assert not not_patched, (not_patched, apis["patch-apply"].artifacts_text(rerun_patch)[-2000:])
    report = apis["patch-apply"].artifacts_text(rerun_patch)
    assert HANGING in report and "labops-patch-" in report, report[-2000:]
    locked = {
        g["vmid"]: g["lock"] for g in sb.pve().cluster.resources.get(type="vm") if g.get("lock")
    }
    assert locked == {}, f"guests left locked: {locked}"
