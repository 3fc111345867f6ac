"""Tasks that keep the Prefect server itself healthy: pruning, slots, the zombie-run automation.

The server may be shared by several labs: pruning and releasing touch one lab's runs (those
tagged ``lab:<slug>``, see :func:`labops.scope.lab_tag`) and limits (``labops-<slug>-...``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from labops.limits import is_lab_limit
from labops.scope import lab_slug, lab_tag, labs_of_tags

ZOMBIE_AUTOMATION = "labops: crash zombie flow runs"
TERMINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]


class PruneResult(BaseModel):
    flow_runs: int = 0
    artifacts: int = 0
    oldest_kept: datetime | None = None


BULK_DELETE = 50  # the most /flow_runs/bulk_delete takes at once (Prefect 3.9)


@task(name="prune-flow-runs")
def prune_flow_runs(cutoff: datetime, dry_run: bool, lab: str, batch: int = 200) -> PruneResult:
    """CHANGES the Prefect database: delete the lab's finished flow runs (tagged ``lab:<slug>``)
    that started before ``cutoff``, with their artifacts (the server drops their logs). Running,
    paused and scheduled runs, and the runs of other labs (or of no lab), are never touched."""
    result = PruneResult()
    run_filter = FlowRunFilter(
        start_time=FlowRunFilterStartTime(before_=cutoff),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=TERMINAL)),
        tags=FlowRunFilterTags(all_=[lab_tag(lab)]),
    )
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=run_filter, limit=batch, offset=offset if dry_run else 0
            )
            if not runs:
                break
            ids: list[UUID] = [r.id for r in runs]
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            )
            result.flow_runs += len(ids)
            result.artifacts += len(artifacts)
            if dry_run:
                offset += len(runs)
                continue
            for artifact in artifacts:
                client.delete_artifact(artifact.id)
            deleted = 0
            for start in range(0, len(ids), BULK_DELETE):
                chunk = [str(i) for i in ids[start : start + BULK_DELETE]]
                # one request per 50 runs instead of one each: pruning a busy server's history
                # run by run took minutes; Prefect's client has no method for this route
                response = client._client.post(
                    "/flow_runs/bulk_delete",
                    json={"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)},
                )
                response.raise_for_status()
                deleted += len(response.json().get("deleted") or [])
            if not deleted:  # the server deleted none of them: reading again would loop
                raise RuntimeError(f"the server deleted none of {len(ids)} old flow runs")
    return result


def own_flow_runs() -> list[UUID]:
    """The flow run this code runs in and the runs above it (a subflow's parents): they are
    running, but hold no labops slot while housekeeping runs."""
    from prefect.context import FlowRunContext, TaskRunContext

    ids: list[UUID] = []
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        ids.append(task_ctx.task_run.flow_run_id)  # type: ignore[arg-type]
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        ids.append(flow_ctx.flow_run.id)
    with get_client(sync_client=True) as client:
        for run_id in list(ids):
            seen = 0
            run = client.read_flow_run(run_id)
            while run.parent_task_run_id is not None and seen < 10:  # up the subflow chain
                parent = client.read_task_run(run.parent_task_run_id).flow_run_id
                if parent is None:
                    break
                ids.append(parent)
                run = client.read_flow_run(parent)
                seen += 1
    return sorted(set(ids), key=str)


def may_hold_lab_slots(run_tags: list[str], lab: str) -> bool:
    """Whether a running flow run may hold the lab's slots: a run of the lab, or a run of no lab
    (one started before deployments carried the lab, or by hand with Prefect's own tools)."""
    labs = labs_of_tags(run_tags)
    return not labs or lab_slug(lab) in labs


def known_labs() -> set[str]:
    """The slugs of the labs whose deployments are on this server (``lab:<slug>`` tags)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["labops"]))
        )
    return {slug for d in deployments for slug in labs_of_tags(d.tags)}


@task(name="release-orphan-slots")
def release_orphan_slots(lab: str, dry_run: bool = False) -> list[str]:
    """CHANGES concurrency limits: free the slots of the lab's limits (``labops-<lab>-...``)
    while no other flow run of the lab is running (a killed process may hold them until its
    lease expires). The run doing this, and the runs it is a subflow of, do not count; runs of
    other labs neither, and their limits are left alone. With ``dry_run`` it only lists them."""
    released: list[str] = []
    mine = own_flow_runs()
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=mine) if mine else None,
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                ),
            ),
            limit=200,
        )
        # more running runs than one page: some unseen one may be the lab's
        if len(running) >= 200 or any(may_hold_lab_slots(r.tags, lab) for r in running):
            return released
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        others = known_labs() - {lab_slug(lab)}
        for limit in client.read_global_concurrency_limits(limit=200):
            if is_lab_limit(limit.name, lab, others) and limit.active_slots > 0:
                released.append(f"{limit.name} ({limit.active_slots} slot(s))")
                if not dry_run:
                    client.update_global_concurrency_limit(
                        limit.name, GlobalConcurrencyLimitUpdate(active_slots=0)
                    )
    return released


@task(name="ensure-zombie-automation")
def ensure_zombie_automation(after_seconds: int, dry_run: bool = False) -> str:
    """CHANGES automations: create the rule Prefect Cloud ships and a self-hosted server lacks —
    a Running flow run whose heartbeats stop for ``after_seconds`` is marked Crashed."""
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.actions import ChangeFlowRunState

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    wanted = timedelta(seconds=after_seconds)
    if existing and existing[0].trigger.within == wanted:  # type: ignore[union-attr]
        return "present"
    if dry_run:
        return "would create" if not existing else "would update"
    with get_client(sync_client=True) as client:
        for old in existing:
            client.delete_automation(old.id)
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (dead worker or host).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=wanted,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="No heartbeat: the process running it died"
            )
        ],
    ).create()
    return "created" if not existing else "updated"


def finish_after_expired_pause(note: str) -> None:
    """Move this flow run from its expired pause back to Running so it can end with its report.

    The server refuses any state after an expired pause (it fails the run "never resumed", with
    no result); the run still has to say what it did, so the transition is forced. Changes only
    this run's state in Prefect, nothing in the lab."""
    from prefect.context import FlowRunContext
    from prefect.states import Running

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return  # called outside a flow run: nothing paused
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(ctx.flow_run.id, Running(message=note), force=True)
