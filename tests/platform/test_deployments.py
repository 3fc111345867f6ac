"""`labops deploy` against real Prefect servers (SQLite and PostgreSQL), the late-run alert, the
server's retention settings, and the systemd units of the production install."""

from __future__ import annotations

import configparser
import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import TypeAdapter

from cli.main import main as labops
from deployments.catalog import FLOWS, NO_OVERLAP
from deployments.definitions import flow_run_command
from labops import prefect_server

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"

SCHEDULES = {
    "backups": {"cron": "10 1 * * *"},
    "doc-reconcile": {"cron": "0 8 * * 1", "enabled": False},
    "patch-apply": {"cron": "0 3 * * 3", "parameters": {"security_only": True}},
}


def write_config(tmp_path: Path, **platform: Any) -> Path:
    config = {
        "lab": {
            "name": "deploylab",
            "timezone": "Europe/Berlin",
            "state_dir": str(tmp_path / "state"),
            "ui_url": "http://127.0.0.1:4200",
        },
        "platform": {"schedules": SCHEDULES, **platform},
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def expected_cron(name: str) -> str | None:
    from labops.config.policies.platform import PlatformPolicy

    schedule = PlatformPolicy(schedules=SCHEDULES).schedules[name]  # type: ignore[arg-type,index]
    return schedule.cron if schedule.enabled else None


def read_labops_deployments(names: set[str], lab: str = "deploylab") -> dict[str, Any]:
    """The lab's deployments of these flows, by flow (``<flow>/<lab>``)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found = {}
    with get_client(sync_client=True) as client:
        for flow in sorted(names):
            with contextlib.suppress(ObjectNotFound):
                found[flow] = client.read_deployment_by_name(f"{flow}/{lab}")
    return found


def check_deployed(config: Path, pool: str | None, lab: str = "deploylab") -> None:
    deployed = read_labops_deployments(set(FLOWS), lab)
    assert set(deployed) == set(FLOWS)
    for name, dep in deployed.items():
        assert dep.name == lab and f"lab:{lab}" in dep.tags, (name, dep.name, dep.tags)
        cron = expected_cron(name)
        if cron is None:
            assert dep.schedules == [], name
        else:
            assert len(dep.schedules) == 1, (name, dep.schedules)
            schedule = dep.schedules[0].schedule
            assert schedule.cron == cron and schedule.timezone == "Europe/Berlin", name
            assert dep.schedules[0].active
        assert dep.parameters["config"] == str(config.resolve())
        assert dep.work_pool_name == pool
        assert "labops" in dep.tags
        if name in NO_OVERLAP:
            assert dep.global_concurrency_limit is not None, name
            assert dep.global_concurrency_limit.limit == 1
            assert dep.concurrency_options is not None
            assert dep.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert deployed["patch-apply"].parameters["security_only"] is True


def test_deploy_serve_mode_sqlite(
    prefect_server: prefect_server.ServerInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path)
    # doc-reconcile scheduled first, then switched to manual only: its schedule must go away.
    before = tmp_path / "before.yaml"
    before.write_text(config.read_text().replace("enabled: false", "enabled: true"))
    assert labops(["deploy", "--config", str(before), "--only", "doc-reconcile"]) == 0
    assert read_labops_deployments({"doc-reconcile"})["doc-reconcile"].schedules
    capsys.readouterr()
    assert labops(["deploy", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "labops serve --config" in out and "10 1 * * * (Europe/Berlin)" in out
    # The session server runs with Prefect's default vacuum (events only): deploy says so.
    assert "does not prune old flow runs" in err
    # backups 01:10 (~2 h) and patch-apply Wednesday 03:00 can overlap: one line says so
    warnings = [line for line in err.splitlines() if line.startswith("warning: schedules")]
    assert len(warnings) == 1 and "backups (10 1 * * *" in warnings[0], err
    assert "patch-apply (0 3 * * 3" in warnings[0] and "(Europe/Berlin)" in warnings[0]
    check_deployed(config, pool=None)
    first = {n: d.id for n, d in read_labops_deployments(set(FLOWS)).items()}

    # Create *or update*: a second deploy keeps the ids and does not duplicate schedules.
    assert labops(["deploy", "--config", str(config), "--only", "backups", "housekeeping"]) == 0
    check_deployed(config, pool=None)
    again = {n: d.id for n, d in read_labops_deployments(set(FLOWS)).items()}
    assert again == first


def test_deploy_to_pool_postgres(
    prefect_postgres: prefect_server.ServerInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client

    config = write_config(tmp_path, work_pool="labops-pg")
    assert labops(["deploy", "--config", str(config), "--pool"]) == 0
    out = capsys.readouterr().out
    assert "PREFECT_WORKER_QUERY_SECONDS=1 prefect worker start --pool labops-pg" in out
    check_deployed(config, pool="labops-pg")
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("labops-pg")
        assert client.api_url is not None and str(prefect_postgres.port) in str(client.api_url)
    assert pool.type == "process"
    assert "command" in pool.base_job_template["variables"]["properties"]
    # each run starts the engine directly with this interpreter (one Prefect import, not two)
    for deployment in read_labops_deployments(set(FLOWS)).values():
        assert deployment.job_variables == {"command": flow_run_command()}
    assert shlex.split(flow_run_command()) == [sys.executable, "-m", "labops.warm_start"]


def test_deploy_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"platform": {"schedules": {"backups": {"crn": "x"}}}}))
    assert labops(["deploy", "--config", str(bad)]) == 2
    assert "platform.schedules.backups" in capsys.readouterr().err
    good = write_config(tmp_path)
    assert labops(["deploy", "--config", str(good), "--only", "nightly-thing"]) == 2
    assert "unknown flow(s) nightly-thing" in capsys.readouterr().err
    assert labops(["alerts", "--config", str(good), "--output", str(tmp_path / "r.yml")]) == 0
    rules = yaml.safe_load((tmp_path / "r.yml").read_text())
    assert {r["alert"] for r in rules["groups"][0]["rules"]} == {
        "LabopsFlowSilent",
        "LabopsFlowStale",
    }
    assert labops(["alerts", "--config", str(good), "--output", "/proc/nope/r.yml"]) == 1


def test_late_run_reported_once(
    prefect_server: prefect_server.ServerInfo, tmp_path: Path, mqtt: Any
) -> None:
    """A run nobody serves turns Late; past the limit the bridge alerts once, a fresher one
    is not reported yet, and another lab's late run is that lab's bridge's to report."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from blocks.context import LabContext
    from deployments.catalog import load_flow
    from deployments.mqtt_bridge import Bridge

    path = tmp_path / "labops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "lab": {"name": "latelab", "state_dir": str(tmp_path / "state")},
                "systems": {
                    "mqtt": {"host": mqtt.host, "port": mqtt.port, "topic_prefix": mqtt.prefix}
                },
                "platform": {"late_after_minutes": 2},
            }
        )
    )
    name = f"late-{uuid.uuid4().hex[:6]}"
    housekeeping = load_flow("housekeeping")
    # the bridge follows the runs of its lab: those tagged lab:latelab
    deployment_id = housekeeping.to_deployment(name=name, tags=["lab:latelab"]).apply()
    elsewhere = housekeeping.to_deployment(name=f"{name}-b", tags=["lab:otherlab"]).apply()
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        old, other = (
            client.create_flow_run_from_deployment(
                dep, state=Scheduled(scheduled_time=now - timedelta(minutes=10))
            )
            for dep in (deployment_id, elsewhere)
        )
        fresh = client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=now - timedelta(seconds=1))
        )
        # The server's late-runs service (not this test) marks them Late.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {client.read_flow_run(r.id).state_name for r in (old, fresh, other)}
            if states == {"Late"}:
                break
            time.sleep(0.5)
        assert states == {"Late"}

    alerts = mqtt.subscribe(f"{mqtt.prefix}/latelab/alerts/#")  # the lab's own topic level
    bridge = Bridge(LabContext.load(str(path)))
    first = bridge.check_late_runs()
    second = bridge.check_late_runs()
    assert str(old.id) in first and str(old.id) in second
    assert str(fresh.id) not in first and str(other.id) not in first
    received = alerts.wait_for(1, timeout=5)
    time.sleep(1)  # a duplicate would arrive within this
    mine = [m.json() for m in alerts.messages if str(old.id) in m.payload.decode()]
    assert len(mine) == 1 and len(received) >= 1
    assert "still Late after" in mine[0]["body"]
    assert mine[0]["link"].endswith(f"/runs/flow-run/{old.id}")
    assert not [m for m in alerts.messages if str(fresh.id) in m.payload.decode()]
    with get_client(sync_client=True) as client:  # leave no Late runs for other tests
        for run in (old, fresh, other):
            client.delete_flow_run(run.id)


def test_server_start_prunes_flow_runs_after_retention(tmp_path: Path) -> None:
    """`labops server start` switches on flow-run pruning with platform.retention_days."""
    config = write_config(tmp_path, retention_days=7)
    home = tmp_path / "prefect-home"
    port = prefect_server.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    start = subprocess.run(
        [sys.executable, "-m", "cli.main", "server", "start", "--home", str(home),
         "--port", str(port), "--no-ui", "--config", str(config)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    try:
        assert start.returncode == 0, start.stderr + start.stdout
        assert "pruned after 7 days" in start.stdout
        settings = httpx.get(f"http://127.0.0.1:{port}/api/admin/settings", timeout=10).json()
        vacuum = settings["server"]["services"]["db_vacuum"]
        assert set(vacuum["enabled"]) == {"events", "flow_runs"}
        retention = TypeAdapter(timedelta).validate_python(vacuum["retention_period"])
        assert retention == timedelta(days=7)  # served as ISO 8601, "P7D"
    finally:
        prefect_server.stop(home)


# -- production install --------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize(
    "name",
    [
        "labops-server.service",
        "labops-serve.service",
        "labops-worker@.service",
        "labops-bridge.service",
        "labops-approvals.service",
    ],
)
def test_unit_is_hardened_and_runs_a_real_command(name: str) -> None:
    parsed = unit(name)
    service = parsed["Service"]
    assert service["User"] == "labops" and service["Group"] == "labops"
    assert service["EnvironmentFile"] == "/etc/labops/labops.env"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].strip()
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    command = service["ExecStart"].split()
    program = Path(command[0]).name
    assert program in {"labops", "prefect"}, command
    # The sub-command and its options exist in this tree's CLIs.
    words = [w for w in command[1:] if not w.startswith("$")]
    help_cmd = [shutil.which(program) or str(ROOT / ".venv/bin" / program)]
    args = list(itertools.takewhile(lambda w: not w.startswith("-"), words))
    shown = subprocess.run(
        [*help_cmd, *args, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert shown.returncode == 0, shown.stderr
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in shown.stdout, (name, option)


def test_every_long_running_command_has_a_unit() -> None:
    """The production install supervises each listener labops has: the server, the flows, the
    MQTT bridge and the phone-approval listener (a paused run can't be approved from the phone
    when nothing polls Telegram)."""
    commands = {
        " ".join(unit(p.name)["Service"]["ExecStart"].split()[1:2]) for p in UNITS.glob("*.service")
    }
    assert {"server", "serve", "worker", "bridge", "approvals"} <= commands, commands


def test_serve_and_workers_poll_every_second_unless_the_environment_says_otherwise() -> None:
    from deployments.poll import POLL_S, SERVE_SETTING, WORKER_SETTING, serve_poll_s, worker_env
    from labops.errors import ConfigError

    assert POLL_S == 1
    worker = (UNITS / "labops-worker@.service").read_text().splitlines()
    assert f"Environment={WORKER_SETTING}={POLL_S}" in worker
    # systemd lets EnvironmentFile= (labops.env) override Environment=
    assert "EnvironmentFile=/etc/labops/labops.env" in worker
    assert serve_poll_s({}) == POLL_S and worker_env({}) == {WORKER_SETTING: "1"}
    assert serve_poll_s({SERVE_SETTING: "10"}) == 10
    assert worker_env({WORKER_SETTING: "5"}) == {WORKER_SETTING: "5"}
    for bad in ("0", "fast"):
        with pytest.raises(ConfigError, match=SERVE_SETTING):
            serve_poll_s({SERVE_SETTING: bad})


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze(tmp_path: Path) -> None:
    """`systemd-analyze verify` with the install paths pointed at this checkout's venv."""
    venv_bin = str(Path(sys.executable).parent)
    for source in UNITS.glob("*.service"):
        text = source.read_text().replace("/opt/labops/venv/bin", venv_bin)
        # verify needs the units to be loadable as-is; the dedicated user exists only on hosts.
        text = text.replace("User=labops", "User=root").replace("Group=labops", "Group=root")
        target = tmp_path / source.name.replace("@.service", "@1.service")
        target.write_text(text)
        (tmp_path / source.name).write_text(text)
    for target in sorted(p for p in tmp_path.glob("*.service") if "@." not in p.name):
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(target)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        problems = [
            line
            for line in result.stderr.splitlines()
            if target.name in line and "EnvironmentFile" not in line
        ]
        assert result.returncode == 0 or not problems, result.stderr
        assert not problems, result.stderr
