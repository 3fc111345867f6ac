"""``labops run``: a real flow run on the session's Prefect server, printed as the CLI does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli import run as run_cmd
from cli.main import main

DATA = Path(__file__).parent / "data" / "config"


@pytest.fixture
def demo_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(run_cmd.FLOWS, "demo", "tests.demo_flow:demo")
    monkeypatch.setitem(run_cmd.FLOWS, "quiet", "tests.demo_flow:demo_no_dry_run")


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
    assert report["flow_run_url"].startswith("http://127.0.0.1:4200/runs/flow-run/")
    assert "running demo" in err and "Completed" in err


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
