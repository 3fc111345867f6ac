"""The deployments of every flow, defined once: schedules in the lab's timezone, parameters from
the config, overlap rules. Used by ``labops deploy`` (work pool) and ``labops serve``.

Each lab has its own deployment of each flow, named after the lab (``backups/homelab``: flow
``backups``, deployment ``homelab``) and tagged ``lab:homelab``: labs sharing a Prefect server
never replace each other's deployments, schedules or config path.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from deployments.catalog import FLOWS, NO_OVERLAP, entrypoint, load_flow
from labops.config import LabopsConfig
from labops.scope import deployment_name, lab_tag


class DeploymentSpec(BaseModel):
    """One deployment as labops wants it; the same spec feeds serve and worker modes."""

    name: str
    """The deployment's name: the lab's (:func:`labops.scope.deployment_name`)."""
    flow: str
    entrypoint: str
    cron: str | None
    timezone: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    no_overlap: bool = False
    description: str = ""
    tags: list[str] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        """``<flow>/<deployment>`` as Prefect's CLI, UI and ``run_deployment`` name it."""
        return f"{self.flow}/{self.name}"


def deployment_specs(config: LabopsConfig, config_path: str | Path) -> list[DeploymentSpec]:
    """A spec per flow; disabled schedules still deploy (manual, API and MQTT runs)."""
    specs = []
    for name in FLOWS:
        schedule = config.platform.schedules.get(name)  # type: ignore[call-overload]
        params: dict[str, Any] = {"config": str(Path(config_path).resolve())}
        if schedule is not None:
            params.update(schedule.parameters)
        specs.append(
            DeploymentSpec(
                name=deployment_name(config.lab.name),
                flow=name,
                entrypoint=entrypoint(name),
                cron=schedule.cron if schedule is not None and schedule.enabled else None,
                timezone=config.lab.timezone,
                parameters=params,
                no_overlap=name in NO_OVERLAP,
                description=f"labops {name} on {config.lab.name}",
                tags=["labops", lab_tag(config.lab.name)],
            )
        )
    return specs


def _deploy_kwargs(spec: DeploymentSpec) -> dict[str, Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron

    kwargs: dict[str, Any] = {
        "name": spec.name,
        "parameters": spec.parameters,
        "description": spec.description,
        "tags": spec.tags,
        # the server checks every run's parameters against the flow's bounded signature (409)
        "enforce_parameter_schema": True,
    }
    if spec.cron:
        kwargs["schedules"] = [Cron(spec.cron, timezone=spec.timezone)]
    if spec.no_overlap:
        kwargs["concurrency_limit"] = ConcurrencyLimitConfig(
            limit=1, collision_strategy="CANCEL_NEW"
        )
    return kwargs


def retire_old_deployments(specs: list[DeploymentSpec], lab: str) -> list[str]:
    """Delete the lab's deployments of the old naming (named after the flow: ``backups/backups``),
    which a lab deployed before deployments carried its name; returns their names.

    Left in place they keep their schedules, so every scheduled run would run twice (or turn
    Late with nobody serving it). One is the lab's when its description is the one labops gave
    it, ``labops <flow> on <lab.name>``; another lab's (or one someone else made) stays.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    retired = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            if spec.name == spec.flow:  # a lab named after the flow: that is the new one
                continue
            try:
                old = client.read_deployment_by_name(f"{spec.flow}/{spec.flow}")
            except ObjectNotFound:
                continue
            if old.description == f"labops {spec.flow} on {lab}" and "labops" in old.tags:
                client.delete_deployment(old.id)
                retired.append(f"{spec.flow}/{spec.flow}")
    return retired


def runner_deployments(specs: list[DeploymentSpec]) -> list[Any]:
    """``RunnerDeployment`` objects for ``prefect.serve`` (one process runs them all)."""
    out = []
    for spec in specs:
        try:
            flow = load_flow(spec.flow)
        except (ImportError, AttributeError):
            continue  # a flow not installed in this tree is simply not served
        out.append(flow.to_deployment(**_deploy_kwargs(spec)))
    return out


def flow_run_command(python: str = sys.executable) -> str:
    """The command a process worker starts each of labops' flow runs with (the job variable
    ``command`` of every deployment): ``python -m labops.warm_start`` with this interpreter.

    Under ``labops worker`` that client has the warm starter fork the run from a process that
    imported Prefect and the flows once (labops/warm_start.py); anywhere else (a plain ``prefect
    worker start``, a starter that is down or refuses) it becomes ``python -m prefect.engine``.

    Left unset, Prefect 3.9's process worker starts ``python -m
    prefect.runner._workspace_supervisor`` instead, which imports Prefect, runs the deployment's
    pull steps and only then execs ``python -m prefect.engine``, which imports Prefect again:
    two interpreter starts per run, about 1 s more than serve before the first task
    (bench/bench_trigger.py). With a command set, the engine runs the pull steps itself
    (``load_flow_from_flow_run``). The interpreter is the one deploying: workers need the same
    checkout and virtualenv at the same paths, as they already need for the flows' source
    (``/opt/labops`` in production).
    """
    return shlex.join([python, "-m", "labops.warm_start"])


def deploy_to_pool(specs: list[DeploymentSpec], work_pool: str, source: Path) -> list[str]:
    """Create or update every deployment on a process work pool; returns the deployment ids.

    Workers on other hosts need the same checkout and virtualenv at the same paths (or shared
    ones): each run starts with :func:`flow_run_command`.
    """
    from prefect import Flow

    ids = []
    for spec in specs:
        flow = cast(
            Flow[..., Any], Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        )
        deployment_id = flow.deploy(
            work_pool_name=work_pool,
            job_variables={"command": flow_run_command()},
            print_next_steps=False,
            ignore_warnings=True,
            **_deploy_kwargs(spec),
        )
        ids.append(str(deployment_id))
    return ids
