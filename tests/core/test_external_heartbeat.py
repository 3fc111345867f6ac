"""The dead-man's switch outside the lab: Healthchecks and Uptime Kuma pings, against a local
recorder, through real flow runs (start when the run starts, success or fail with the summary
when it ends; a crash leaves the start alone; a dry run pings nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prefect import flow
from prefect.states import State

from blocks.context import LabContext
from labops.config.policies.platform import ExternalHeartbeat
from labops.outcome import Outcome, RunResult
from labops.pings import Phase, healthchecks_url, kuma_url, phase_of, pings_for
from labops.reports import Failure
from tasks.publish import publish_report
from tests.core.demo_flow import DemoReport
from tests.fixtures.receivers import Receiver

FLOW = "doc-reconcile"  # any flow name the config knows; the test flow borrows it
UUID = "5d7c0a47-0d3b-4a5e-9a44-7f0b6c2f1e11"


def run(config: str, **params: Any) -> State[Any]:
    """One run of the test flow, its final state."""
    return cast("State[Any]", pinged(config, return_state=True, **params))


@flow(name=FLOW)
def pinged(config: str, dry_run: bool = False, fail: bool = False, crash: bool = False) -> Any:
    ctx = LabContext.load(config)
    if crash:
        raise RuntimeError("the worker died mid-run")
    report = DemoReport(operation="doc_reconcile", dry_run=dry_run)
    if fail:
        report.failures.append(Failure(entity="wiki", reason="unreachable"))
    return publish_report(report, ctx.delivery())


@pytest.fixture
def config(tmp_path: Path, ping_recorder: Receiver, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LABOPS_TEST_HC", UUID)
    monkeypatch.setenv("LABOPS_TEST_KUMA", "kumaPushToken9")
    base = ping_recorder.base
    data = {
        "lab": {"name": "pings", "state_dir": str(tmp_path / "state")},
        "platform": {
            "external_heartbeat": {
                FLOW: {
                    "healthchecks": f"{base}/ping/{{env:LABOPS_TEST_HC}}",
                    "uptime_kuma": f"{base}/api/push/{{env:LABOPS_TEST_KUMA}}",
                }
            }
        },
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _seen(recorder: Receiver) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in recorder.received]


def test_a_clean_run_pings_start_then_success_with_its_summary(
    prefect_server: Any, config: str, ping_recorder: Receiver
) -> None:
    pinged(config)
    assert _seen(ping_recorder) == [
        ("POST", f"/ping/{UUID}/start"),
        ("POST", f"/ping/{UUID}"),
        ("GET", "/api/push/kumaPushToken9"),
    ]
    assert ping_recorder.received[1].body.decode() == f"{FLOW}: clean (clean)"
    kuma = ping_recorder.received[2].query
    assert kuma["status"] == ["up"] and kuma["msg"] == [f"{FLOW}: clean (clean)"]
    assert int(kuma["ping"][0]) >= 0


def test_a_failed_run_pings_fail_with_why(
    prefect_server: Any, config: str, ping_recorder: Receiver
) -> None:
    state = run(config, fail=True)
    assert state.is_failed()
    assert _seen(ping_recorder)[:2] == [
        ("POST", f"/ping/{UUID}/start"),
        ("POST", f"/ping/{UUID}/fail"),
    ]
    assert "wiki: unreachable" in ping_recorder.received[1].body.decode()
    assert ping_recorder.received[2].query["status"] == ["down"]


def test_a_run_that_crashes_leaves_the_start_without_an_end(
    prefect_server: Any, config: str, ping_recorder: Receiver
) -> None:
    state = run(config, crash=True)
    assert state.is_failed()
    assert _seen(ping_recorder) == [("POST", f"/ping/{UUID}/start")]


def test_a_dry_run_pings_nothing(prefect_server: Any, config: str, ping_recorder: Receiver) -> None:
    pinged(config, dry_run=True)
    assert ping_recorder.received == []


def test_a_ping_that_does_not_arrive_is_a_failure_named_by_its_step_with_the_key_masked(
    prefect_server: Any, config: str, ping_recorder: Receiver
) -> None:
    ping_recorder.close()  # the monitoring service is down
    state = run(config)
    assert state.is_failed()
    report = cast(DemoReport, state.result(raise_on_failure=False))
    (failure,) = [f for f in report.failures if f.entity == "ping-heartbeat"]
    assert "healthchecks" in failure.reason and UUID not in failure.reason
    assert "kumaPushToken9" not in failure.reason


# -- the pure part -----------------------------------------------------------------------------


def test_healthchecks_and_kuma_urls() -> None:
    base = "https://hc.example/ping/abc/"
    assert [healthchecks_url(base, p) for p in Phase] == [
        "https://hc.example/ping/abc/start",
        "https://hc.example/ping/abc",
        "https://hc.example/ping/abc/fail",
    ]
    url = kuma_url("https://kuma.example/api/push/tok?status=up", False, "a & b", 1500)
    assert url == "https://kuma.example/api/push/tok?status=down&msg=a+%26+b&ping=1500"


def test_findings_are_a_success_and_kuma_has_no_start() -> None:
    findings = RunResult(outcome=Outcome.FINDINGS, detail="warning: 1 thing")
    assert phase_of(findings) is Phase.SUCCESS
    assert phase_of(RunResult(outcome=Outcome.FAILED)) is Phase.FAIL
    only_kuma = ExternalHeartbeat(uptime_kuma="https://kuma.example/api/push/x")
    assert pings_for(FLOW, only_kuma, Phase.START) == []


def test_labops_healthchecks_prints_each_scheduled_flow_as_healthchecks_expects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from cli.main import main

    path = tmp_path / "labops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "lab": {"name": "home", "timezone": "Europe/Berlin"},
                "platform": {
                    "schedules": {"housekeeping": {"cron": "45 4 * * *", "enabled": False}},
                    "external_heartbeat": {
                        "backups": {
                            "healthchecks": "https://hc.example/ping/{env:UNSET_HC_UUID}",
                            "grace_minutes": 90,
                        }
                    },
                },
            }
        )
    )
    assert main(["healthchecks", "--config", str(path), "--json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert "labops home housekeeping" not in checks  # manual only: nothing to expect
    assert checks["labops home backups"] == {
        "name": "labops home backups",
        "slug": "labops-home-backups",
        "schedule": "30 0 * * *",
        "tz": "Europe/Berlin",
        "grace": 5400,
        "tags": "labops lab:home",
        "desc": "labops backups on home: pinged at start, success and failure.",
        "unique": ["name"],
    }
    assert checks["labops home certificates"]["grace"] == 3600
    assert main(["healthchecks", "--config", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["check", "schedule", "time", "zone", "grace", "pinged"]
    assert any(line.startswith("labops home backups") and line.endswith("yes") for line in table)
