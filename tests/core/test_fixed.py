""" "Fixed" notices: the first good run after failed ones, a finding resolved when re-checked,
each saying how long it lasted; nothing else changes the memory (a dry run, a failed run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import flow

from blocks.context import LabContext
from labops.fixed import Memory, advance, fixed_notification, lasted
from labops.outcome import Found, Severity, judge
from labops.reports import Failure, Notification, OperationReport
from tasks.publish import publish_report
from tests.fixtures.receivers import NtfyReceiver

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
RPO = "guest(s) past their RPO"


def _found(*names: str) -> list[Found]:
    return Found.of(Severity.CRITICAL, RPO, names)


def test_a_good_run_after_failed_ones_is_fixed_once_with_how_long() -> None:
    failed = judge(["pbs: unreachable"], [])
    memory, fixed = advance(Memory(), failed, T0)
    assert fixed == [] and memory.failing_since == T0
    memory, fixed = advance(memory, failed, T0 + timedelta(hours=1))
    assert fixed == [] and memory.failing_since == T0  # the first failure in a row
    memory, fixed = advance(memory, judge([], []), T0 + timedelta(hours=3, minutes=12))
    (item,) = fixed
    assert item.lasted == timedelta(hours=3, minutes=12) and "pbs: unreachable" in item.what
    assert memory == Memory()
    assert advance(memory, judge([], []), T0 + timedelta(hours=4)) == (Memory(), [])


def test_a_finding_resolves_only_when_a_run_that_did_its_job_no_longer_finds_it() -> None:
    memory, _ = advance(Memory(), judge([], _found("101", "102")), T0)
    # a failed run that no longer lists 102 proves nothing: it may not have looked
    memory, fixed = advance(memory, judge(["101: timeout"], _found("101")), T0 + timedelta(1))
    assert fixed == [] and len(memory.findings) == 2
    # a good run that looked at 101 only (a partial run) cannot say 102 is fine
    later = T0 + timedelta(days=2)
    memory, fixed = advance(memory, judge([], []), later, checked={"101"})
    assert [f.what for f in fixed] == [
        "runs again (it had failed: 1 failure(s): 101: timeout)",
        f"101: no longer {RPO}",
    ]
    assert list(m.name for m in memory.findings.values()) == ["102"]
    memory, fixed = advance(memory, judge([], []), later + timedelta(hours=5))
    assert [(f.what, lasted(f.lasted)) for f in fixed] == [(f"102: no longer {RPO}", "2 d 5 h")]


def test_the_fixed_notice_is_routed_by_what_it_closes() -> None:
    memory, _ = advance(Memory(), judge([], Found.of(Severity.WARNING, "x", ["a"])), T0)
    _, fixed = advance(memory, judge([], []), T0 + timedelta(minutes=5))
    note = fixed_notification("backups", "home", fixed, "http://ui/run")
    assert note is not None and note.severity is Severity.OK
    assert note.route_severity is Severity.WARNING and note.title == "Fixed: backups on home"
    assert "lasted 5 min" in note.body and note.link == "http://ui/run"
    assert fixed_notification("backups", "home", []) is None


def test_durations_read_briefly() -> None:
    assert [lasted(timedelta(seconds=s)) for s in (20, 300, 3600, 3900, 86400, 90000)] == [
        "under a minute",
        "5 min",
        "1 h",
        "1 h 5 min",
        "1 d",
        "1 d 1 h",
    ]


# -- through real runs: one notice, to the channels that heard of the problem ---------------


class Guests(OperationReport):
    late: list[str] = []

    def table(self) -> list[dict[str, Any]]:
        return []

    def markdown(self) -> str:
        return "# guests"

    def found(self) -> list[Found]:
        return Found.of(Severity.CRITICAL, RPO, self.late)

    def notification(self) -> Notification | None:
        return None  # only the "fixed" notices speak in this test


@flow(name="fixed-demo")
def guests(config: str, late: list[str], fail: bool = False, dry_run: bool = False) -> Any:
    ctx = LabContext.load(config)
    report = Guests(operation="backups", late=late, dry_run=dry_run)
    if fail:
        report.failures.append(Failure(entity="pbs", reason="unreachable"))
    return publish_report(report, ctx.delivery())


@pytest.fixture
def config(tmp_path: Path, ntfy: NtfyReceiver) -> str:
    base = f"ntfy://127.0.0.1:{ntfy.port}"
    data = {
        "lab": {"name": "fixedlab", "state_dir": str(tmp_path / "state")},
        "systems": {
            "apprise": [
                {"name": "pager", "url": f"{base}/pager", "min_severity": "critical"},
                {"name": "other", "url": f"{base}/other", "operations": ["certificates"]},
            ]
        },
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_runs_send_one_fixed_notice_each_time_something_is_fixed(
    prefect_server: Any, config: str, ntfy: NtfyReceiver
) -> None:
    guests(config, late=["101", "102"], return_state=True)
    guests(config, late=[], fail=True, return_state=True)  # failed: nothing resolves
    guests(config, late=[], dry_run=True, return_state=True)  # dry: nothing changes
    assert ntfy.messages() == []
    guests(config, late=["102"], return_state=True)
    (notice,) = ntfy.messages()
    assert notice["topic"] == "pager" and notice["title"] == "Fixed: backups on fixedlab"
    lines = notice["message"].splitlines()
    assert lines[0].startswith("- runs again (it had failed: 1 failure(s): pbs: unreachable)")
    assert lines[1].startswith(f"- 101: no longer {RPO} (lasted ")
    assert "102" not in notice["message"]
    guests(config, late=["102"], return_state=True)  # nothing new fixed: nothing sent
    assert len(ntfy.messages()) == 1


def test_a_run_narrowed_to_some_hosts_resolves_only_what_it_says_it_checked() -> None:
    from labops.fixed import scope_checked

    assert scope_checked({"config": "x", "dry_run": False, "hosts": None}, None) is None
    assert scope_checked({"hosts": ["pve1"]}, None) == set()
    assert scope_checked({"vmid": 101}, {"101"}) == {"101"}
    memory, _ = advance(Memory(), judge([], _found("101", "102")), T0)
    _, fixed = advance(memory, judge([], []), T0 + timedelta(1), checked=set())
    assert fixed == []


def test_notes_come_and_go_without_notices() -> None:
    memory, _ = advance(Memory(), judge([], Found.of(Severity.INFO, "note(s)", ["x"])), T0)
    assert memory.findings == {}
