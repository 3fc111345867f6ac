"""``labops run``: a real flow run on the session's Prefect server, printed as the CLI does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli import run as run_cmd
from cli.main import main

DATA = Path(__file__).parents[1] / "data" / "config"


@pytest.fixture
def demo_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(run_cmd.FLOWS, "demo", "tests.core.demo_flow:demo")
    monkeypatch.setitem(run_cmd.FLOWS, "quiet", "tests.core.demo_flow:demo_no_dry_run")


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "labops.yaml"
    path.write_text(f"lab:\n  name: clitest\n  state_dir: {tmp_path / 'state'}\n")
    return path


def test_parse_params() -> None:
    assert run_cmd.parse_params(["a=1", "b.c=[x, y]", "d=true", "e=", "host-name=pve1"]) == {
        "a": 1,
        "b": {"c": ["x", "y"]},
        "d": True,
        "e": "",
        "host_name": "pve1",
    }
    from labops.errors import ConfigError

    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        run_cmd.parse_params(["novalue"])


def test_run_prints_the_report_as_json(
    prefect_server: Any, demo_flows: None, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["run", "demo", "--config", str(empty_config), "--json", "--set", "count=3", "--dry-run"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["operation"] == "demo" and report["count"] == 3 and report["dry_run"] is True
    assert report["lab"] == "clitest"
    assert report["outcome"] == "clean" and report["highest_severity"] == "ok"
    # the link points at the server the run reported to (a free port, not the default 4200)
    ui = prefect_server.api_url.removesuffix("/api")
    assert report["flow_run_url"].startswith(f"{ui}/runs/flow-run/"), report["flow_run_url"]
    assert "running demo" in err and "Completed" in err
    # tagged with its lab, like the runs of the lab's deployments (its bridge and housekeeping
    # tell the lab's runs from other labs' by it)
    assert {"labops", "lab:clitest"} <= set(_flow_run(report).tags)


def test_failed_run_exits_1_and_still_prints_the_report(
    prefect_server: Any, demo_flows: None, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "demo", "--config", str(empty_config), "--set", "fail=true"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 failure(s)" in out  # the markdown view
    assert "made to fail" in err


def test_config_problems_exit_2_before_running(
    demo_flows: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "demo", "--config", str(DATA / "bad_unknown_key.yaml")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "config error: systems.proxmox.tokn_id: unknown key" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "demo", "--set", "colour=red"], "--set colour: not a parameter of demo"),
        (["run", "quiet", "--dry-run"], "--dry-run: operation 'quiet' changes nothing"),
        (["run", "nosuch"], "unknown operation 'nosuch'"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str],
    message: str,
    demo_flows: None,
    empty_config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([*argv, "--config", str(empty_config)])
    _, err = capsys.readouterr()
    assert code == 2 and message in err


def test_operation_not_written_yet(
    monkeypatch: pytest.MonkeyPatch, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(run_cmd.FLOWS, "future", "flows.not_written_yet:future")
    code = main(["run", "future", "--config", str(empty_config)])
    _, err = capsys.readouterr()
    assert code == 1 and "not available yet" in err


def test_parameter_of_the_wrong_type_exits_2(
    prefect_server: Any, demo_flows: None, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "demo", "--config", str(empty_config), "--set", "count=lots"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert "--set: demo refused its parameters" in err and "count" in err
    assert "Traceback" not in err


def _flow_run(report: dict[str, Any]) -> Any:
    from prefect.client.orchestration import get_client

    run_id = report["flow_run_url"].rsplit("/", 1)[-1]
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def test_findings_exit_3_and_show_as_a_named_completed_state(
    prefect_server: Any, demo_flows: None, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )
    from prefect.client.schemas.objects import StateType

    argv = ["run", "demo", "--config", str(empty_config), "--json"]
    code = main([*argv, "--set", "finding=critical"])
    out, err = capsys.readouterr()
    assert code == 3, err
    report = json.loads(out)
    assert report["outcome"] == "findings" and report["highest_severity"] == "critical"
    assert "finished: Findings (critical: 1 item(s) made to be found)" in err
    # The API (and so the UI's run list, which shows the state's name) says Findings, with a
    # COMPLETED type: a Completed run that found something, not a failed one.
    run = _flow_run(report)
    assert run.state.type == StateType.COMPLETED and run.state.name == "Findings"
    assert run.state.message == "critical: 1 item(s) made to be found"
    with get_client(sync_client=True) as client:
        named = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Findings"]))
            )
        )
    assert run.id in {r.id for r in named}

    # Below --fail-on (default critical) a finding exits 0; --fail-on warning makes it 3.
    assert main([*argv, "--set", "finding=warning"]) == 0
    warned = json.loads(capsys.readouterr().out)
    assert warned["outcome"] == "findings" and warned["highest_severity"] == "warning"
    assert main([*argv, "--set", "finding=warning", "--fail-on", "warning"]) == 3
    capsys.readouterr()


def test_help_names_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for line in ("0  clean", "1  failed", "2  config or argument error", "3  findings"):
        assert line in out
    assert "--fail-on {info,warning,critical,never}" in out


def test_a_failed_metrics_push_and_notification_are_failures_named_once(
    prefect_server: Any,
    demo_flows: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.fixtures.sshd import free_port

    dead_vm, dead_broker = free_port(), free_port()
    config = tmp_path / "labops.yaml"
    config.write_text(
        f"""lab:
  name: deadends
  state_dir: {tmp_path / "state"}
systems:
  victoriametrics:
    url: http://127.0.0.1:{dead_vm}
    retry: {{attempts: 2, backoff_s: 0.01, timeout_s: 2}}
  mqtt:
    host: 127.0.0.1
    port: {dead_broker}
"""
    )
    code = main(["run", "demo", "--config", str(config), "--json", "--set", "finding=warning"])
    out, err = capsys.readouterr()
    assert code == 1, err
    report = json.loads(out)
    assert report["outcome"] == "failed" and report["highest_severity"] == "warning"
    failures = {f["entity"]: f["reason"] for f in report["failures"]}
    assert set(failures) == {"notify", "push-metrics"}
    assert failures["push-metrics"].startswith("victoriametrics: ")
    assert failures["push-metrics"].endswith("(after 2 tries)")
    assert failures["notify"].startswith(f"mqtt: 127.0.0.1:{dead_broker}: ")
    assert report["skipped"] == []  # a failed delivery is a failure, never "skipped"
    # named once, never with a doubled prefix ("victoriametrics: victoriametrics: ...")
    assert [f["entity"] for f in report["failures"]].count("push-metrics") == 1
    assert "victoriametrics: victoriametrics" not in out + err
    assert f"push-metrics: {failures['push-metrics']}" in err  # the CLI's one line
    assert _flow_run(report).state.name == "Failed"


def test_links_use_the_server_in_use_and_lab_ui_url_only_as_an_override() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from blocks.context import LabContext
    from labops.config import LabopsConfig

    plain = LabContext(config=LabopsConfig.model_validate({"lab": {"name": "x"}}))
    override = LabContext(
        config=LabopsConfig.model_validate(
            {"lab": {"name": "x", "ui_url": "https://prefect.lab.example/"}}
        )
    )
    with temporary_settings({PREFECT_API_URL: "http://10.1.2.3:4300/api"}):
        assert plain.ui_url() == "http://10.1.2.3:4300"  # derived from the API in use
        assert plain.flow_run_url("abc") == "http://10.1.2.3:4300/runs/flow-run/abc"
        assert override.flow_run_url("abc") == "https://prefect.lab.example/runs/flow-run/abc"
    with temporary_settings(
        {PREFECT_API_URL: "http://10.1.2.3:4300/api", PREFECT_UI_URL: "https://ui.lab/"}
    ):
        assert plain.flow_run_url("abc") == "https://ui.lab/runs/flow-run/abc"


# -- real operations on the sandbox: what a cron job sees ---------------------------------------


def _sandbox_config(sandbox: Any, tmp_path: Path, **sections: Any) -> Path:
    import yaml

    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["lab"]["state_dir"] = str(tmp_path / "state")
    cfg.update(sections)
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_certificates_all_untrusted_exits_3_and_unreachable_exits_1(
    sandbox: Any, prefect_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = sandbox.control("traefik", "cases")
    untrusted = [name for name, status in cases["routers"].items() if status == "untrusted"]
    offline = next(name for name in cases["direct"] if name.startswith("offline."))
    direct = {e["name"]: e for e in _direct_endpoints(sandbox)}
    policy = _endpoints_only(2.0)
    endpoints = _router_endpoints(cases, untrusted)
    cfg = _sandbox_config(
        sandbox, tmp_path, inventory={"endpoints": endpoints}, certificates=policy
    )
    code = main(["run", "certificates", "--config", str(cfg), "--json"])
    out, err = capsys.readouterr()
    assert code == 3, err  # every endpoint untrusted: critical findings, not success
    report = json.loads(out)
    assert report["outcome"] == "findings" and report["highest_severity"] == "critical"
    assert report["outcome_detail"].startswith(f"critical: {len(untrusted)} untrusted: ")
    assert _flow_run(report).state.name == "Findings"

    (tmp_path / "unreachable").mkdir()
    cfg = _sandbox_config(
        sandbox,
        tmp_path / "unreachable",
        inventory={"endpoints": [*endpoints[:1], direct[offline]]},
        certificates=policy,
    )
    code = main(["run", "certificates", "--config", str(cfg), "--json"])
    out, err = capsys.readouterr()
    assert code == 1, err  # an endpoint it could not check: the run failed for it
    report = json.loads(out)
    assert report["outcome"] == "failed" and report["highest_severity"] == "critical"
    assert report["outcome_detail"].startswith(f"1 failure(s): {offline}:")
    assert _flow_run(report).state.name == "Failed"


def test_the_terminal_shows_how_far_a_run_got(
    sandbox: Any, prefect_server: Any, tmp_path: Path
) -> None:
    """`labops run` in a terminal counts the endpoints up to the total, as the UI's progress
    artifact does: its own output, a separate process, the way an operator starts it."""
    import os
    import subprocess
    import sys

    cases = sandbox.control("traefik", "cases")
    names = sorted(cases["routers"])[:3]
    endpoints = _router_endpoints(cases, names)
    cfg = _sandbox_config(
        sandbox, tmp_path, inventory={"endpoints": endpoints}, certificates=_endpoints_only(5.0)
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "certificates", "--config", str(cfg)],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PREFECT_API_URL": prefect_server.api_url},
        capture_output=True,
        text=True,
        timeout=300,  # bounds a hang, not the speed
    )
    assert done.returncode in (0, 3), done.stderr[-3000:]
    counts = re.findall(r"progress: (\d+)/(\d+) endpoints", done.stderr + done.stdout)
    assert counts, done.stderr[-3000:]
    assert counts[-1] == (str(len(names)), str(len(names))), counts


def _endpoints_only(timeout_s: float) -> dict[str, Any]:
    """A certificates policy probing only the inventory's endpoints."""
    return {
        "handshake_timeout_s": timeout_s,
        "connect_timeout_s": timeout_s,
        "sources": {k: False for k in ("traefik", "technitium", "proxmox", "pbs", "step_ca")},
    }


def _router_endpoints(cases: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Inventory endpoints for the sandbox Traefik routers ``names``, at its entrypoint."""
    address, port = cases["entrypoint"].split(":")
    return [{"name": n, "address": address, "port": int(port)} for n in names]


def _direct_endpoints(sandbox: Any) -> list[dict[str, Any]]:
    import yaml

    endpoints: list[dict[str, Any]] = yaml.safe_load(sandbox.config_path.read_text())["inventory"][
        "endpoints"
    ]
    return endpoints


def test_backups_with_a_failed_verification_and_a_stale_verify_job_exit_3(
    private_sandbox: Any, prefect_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a lab of its own: the seeded failed verification must not be replaced by a backup another
    # test in this process made of the same guest on the shared sandbox
    sandbox = private_sandbox
    mark = sandbox.journal_mark()
    cfg = _sandbox_config(sandbox, tmp_path)
    code = main(["run", "backups", "--config", str(cfg), "--dry-run", "--json"])
    out, err = capsys.readouterr()
    assert code == 3, err
    report = json.loads(out)
    assert report["outcome"] == "findings" and report["highest_severity"] == "critical"
    # the seeded lab: one guest's latest verification failed, the verify job ran 9 days ago
    from labops.backups.report import BackupReport

    found = BackupReport.model_validate(report).found()
    assert any(
        f.severity == "critical" and "latest verification failed" in f.what for f in found
    ), found
    verify = next(j for j in report["pbs_jobs"] if j["job"].startswith("verify"))
    # seeded at a fixed time of day about nine days back: "8d22h" early in the day, "9d" later
    assert verify["ok"] is False, verify
    assert re.search(r"TOO OLD: last run (8d\d+h|9d\w*) ago, limit 8d", verify["detail"]), verify
    assert sandbox.journal(mark) == []  # a dry run: the session lab stays as seeded
