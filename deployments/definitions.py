"""The deployments of every flow, defined once: schedules in the lab's timezone, parameters from
the config, overlap rules. Used by ``labops deploy`` (work pool) and ``labops serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from deployments.catalog import FLOWS, NO_OVERLAP, entrypoint, load_flow
from labops.config import LabopsConfig


class DeploymentSpec(BaseModel):
    """One deployment as labops wants it; the same spec feeds serve and worker modes."""

    name: str
    flow: str
    entrypoint: str
    cron: str | None
    timezone: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    no_overlap: bool = False
    description: str = ""


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
                name=name,
                flow=name,
                entrypoint=entrypoint(name),
                cron=schedule.cron if schedule is not None and schedule.enabled else None,
                timezone=config.lab.timezone,
                parameters=params,
                no_overlap=name in NO_OVERLAP,
                description=f"labops {name} on {config.lab.name}",
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
        "tags": ["labops"],
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


def deploy_to_pool(specs: list[DeploymentSpec], work_pool: str, source: Path) -> list[str]:
    """Create or update every deployment on a process work pool; returns the deployment ids.

    Workers on other hosts need the same checkout at the same path (or a shared one).
    """
    from prefect import Flow

    ids = []
    for spec in specs:
        flow = cast(
            Flow[..., Any], Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        )
        deployment_id = flow.deploy(
            work_pool_name=work_pool,
            print_next_steps=False,
            ignore_warnings=True,
            **_deploy_kwargs(spec),
        )
        ids.append(str(deployment_id))
    return ids
