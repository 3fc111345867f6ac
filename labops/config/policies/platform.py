"""Policy of the operations platform: schedules, triggers, alerts, housekeeping."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from labops.config.systems import Strict

DeploymentName = Literal[
    "backups",
    "restore-drill",
    "certificates",
    "patch-check",
    "patch-apply",
    "security-digest",
    "doc-reconcile",
    "housekeeping",
]


class Schedule(Strict):
    """When one deployment runs (cron in the lab's timezone); disable to keep it manual only."""

    cron: str = Field(..., description="Five-field cron, e.g. '30 2 * * *'.")
    enabled: bool = True
    parameters: dict[str, object] = Field(
        default_factory=dict, description="Extra flow parameters for scheduled runs."
    )


def _default_schedules() -> dict[DeploymentName, Schedule]:
    return {
        "backups": Schedule(cron="30 2 * * *"),
        "restore-drill": Schedule(cron="0 5 * * 0"),
        "certificates": Schedule(cron="0 6 * * *"),
        "patch-check": Schedule(cron="15 6 * * *"),
        # Scheduled runs still pause for approval unless patching.preapproved_scheduled is set.
        "patch-apply": Schedule(cron="0 3 * * 3"),
        "security-digest": Schedule(cron="0 7 * * *"),
        "doc-reconcile": Schedule(cron="0 8 * * 1"),
        "housekeeping": Schedule(cron="45 4 * * *"),
    }


class PlatformPolicy(Strict):
    """How the flows run as a service: schedules, work pool, MQTT topics, alerts, retention."""

    schedules: dict[DeploymentName, Schedule] = Field(
        default_factory=_default_schedules,
        description="Cron per deployment, in lab.timezone (missing ones use the defaults).",
    )
    work_pool: str = Field("labops", description="Process work pool that workers poll.")
    mqtt_run_topic: str = Field(
        "labops/run", description="Topic prefix the MQTT bridge listens on: <prefix>/<flow>."
    )
    mqtt_events_topic: str = Field(
        "labops/events", description="Topic prefix of flow-run state changes."
    )
    late_after_minutes: float = Field(
        30, gt=0, description="Alert when a run stays Late or Pending longer than this."
    )
    retention_days: int = Field(
        30, ge=1, description="Flow runs, logs and artifacts older than this are pruned."
    )
    zombie_after_seconds: int = Field(
        600,
        ge=90,
        description="Mark a Running flow run Crashed after this long without "
        "a heartbeat (>= 3 heartbeats; Prefect sends one every 180 s by default).",
    )
    heartbeat_max_age_hours: dict[str, float] = Field(
        default_factory=lambda: {
            "backups": 26.0,
            "certificates": 26.0,
            "patch-check": 26.0,
            "security-digest": 26.0,
            "doc-reconcile": 170.0,
            "restore-drill": 170.0,
        },
        description="Dead-man's switch: alert when a flow's last success is older than this.",
    )

    @field_validator("schedules", mode="after")
    @classmethod
    def _keep_defaults(
        cls, value: dict[DeploymentName, Schedule]
    ) -> dict[DeploymentName, Schedule]:
        return {**_default_schedules(), **value}

    server_mode: Literal["serve", "worker"] = Field(
        "serve", description="serve: one process runs every deployment; worker: a work pool."
    )
