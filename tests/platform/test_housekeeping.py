"""Housekeeping against a real Prefect server: only what is older than the cutoff goes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
)

from labops.limits import limit_name
from labops.scope import lab_tag
from tasks.prefect_admin import (
    ZOMBIE_AUTOMATION,
    ensure_zombie_automation,
    prune_flow_runs,
    release_orphan_slots,
)


@flow(name="housekeeping-probe")
def probe(tag: str) -> str:
    create_markdown_artifact(f"probe {tag}", key=f"probe-{tag}")
    return tag


def run_ids(name: str) -> set[str]:
    # filtered on the server: the session's server holds more runs than one page by now
    probes = FlowFilter(name=FlowFilterName(any_=["housekeeping-probe"]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=probes)
    return {str(r.id) for r in runs if str(r.parameters.get("tag", "")).startswith(name)}


LAB = "housekeeping"


def test_prune_keeps_recent_runs_and_deletes_old_ones(prefect_server: object) -> None:
    with tags(lab_tag(LAB)):  # the lab's runs (tests/platform/test_two_labs.py: other labs' stay)
        old = [probe(return_state=True, tag="old-1"), probe(return_state=True, tag="old-2")]
        time.sleep(1.5)
        cutoff = datetime.now(UTC)
        time.sleep(0.5)
        new = probe(return_state=True, tag="new-1")
    assert all(s.is_completed() for s in [*old, new])

    dry = prune_flow_runs.fn(cutoff, dry_run=True, lab=LAB)
    assert dry.flow_runs >= 2 and dry.artifacts >= 2
    assert run_ids("old") and run_ids("new")  # the dry run deleted nothing

    done = prune_flow_runs.fn(cutoff, dry_run=False, lab=LAB)
    assert done.flow_runs == dry.flow_runs
    assert not run_ids("old")
    assert len(run_ids("new")) == 1
    with get_client(sync_client=True) as client:
        wanted = ArtifactFilter(key=ArtifactFilterKey(any_=["probe-new-1", "probe-old-1"]))
        keys = {a.key for a in client.read_artifacts(artifact_filter=wanted)}
    assert "probe-new-1" in keys and "probe-old-1" not in keys


def test_zombie_automation_is_created_once(prefect_server: object) -> None:
    assert ensure_zombie_automation.fn(600) in {"created", "present", "updated"}
    assert ensure_zombie_automation.fn(600) == "present"
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert automation.trigger.within.total_seconds() == 600  # type: ignore[union-attr]
    assert automation.actions[0].type == "change-flow-run-state"


def crash_leftover_runs() -> None:
    """Runs that earlier tests killed on purpose stay Running (a zombie): mark them Crashed, as
    the zombie-run automation would after its heartbeat window."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                )
            )
        )
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message="test: killed earlier"), force=True)


def test_orphan_slots_are_released_when_nothing_runs(prefect_server: object) -> None:
    from labops.limits import ensure_limit

    crash_leftover_runs()

    orphan = limit_name("drill", "orphan", lab=LAB)
    ensure_limit(orphan, 2)
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        client.update_global_concurrency_limit(orphan, GlobalConcurrencyLimitUpdate(active_slots=2))
        assert release_orphan_slots.fn(LAB, dry_run=True) == [f"{orphan} (2 slot(s))"]
        release_orphan_slots.fn(LAB)
        assert client.read_global_concurrency_limit_by_name(orphan).active_slots == 0


def test_the_housekeeping_flow_releases_a_leaked_slot(
    prefect_server: object, tmp_path: Path
) -> None:
    """As a flow (not the bare function): its own run is running and must not count as a run
    that could hold the slot."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.housekeeping import housekeeping
    from labops.limits import ensure_limit

    crash_leftover_runs()
    leaked = limit_name("node", "leaked", lab=LAB)
    ensure_limit(leaked, 2)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(leaked, GlobalConcurrencyLimitUpdate(active_slots=1))
    config = tmp_path / "labops.yaml"
    config.write_text(f"lab:\n  name: {LAB}\n  state_dir: {tmp_path / 'state'}\n")

    state: Any = housekeeping(config=str(config), return_state=True)
    report = state.result()
    assert f"{leaked} (1 slot(s))" in report.slots_released, report
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(leaked).active_slots == 0
