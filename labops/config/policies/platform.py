"""Policy of the operations platform: schedules, triggers, alerts, housekeeping."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from labops.config.systems import Strict
from labops.flow_params import (
    DeploymentName,
    check_parameters,
    is_integer_parameter,
    is_list_parameter,
    parameter_names,
)
from labops.notify.settings import UrlTemplate

__all__ = [
    "DeploymentName",
    "ExternalHeartbeat",
    "ParameterRule",
    "PlatformPolicy",
    "Schedule",
    "TriggerRule",
]

ParameterValue = StrictBool | StrictInt | StrictStr


class Schedule(Strict):
    """When one deployment runs (cron in the lab's timezone); disable to keep it manual only."""

    cron: str = Field(..., description="Five-field cron, e.g. '30 2 * * *'.")
    enabled: bool = True
    parameters: dict[str, object] = Field(
        default_factory=dict,
        description="Extra flow parameters for scheduled runs (checked against the flow's "
        "parameters and their bounds when the config loads; see docs/triggers.md).",
    )


def _default_schedules() -> dict[DeploymentName, Schedule]:
    return {
        # Lab-changing runs never overlap by default: backups 00:30 (~2 h), patch apply
        # Wednesday 03:00 (~2 h, inside the default 02:00-05:00 window), drill Sunday 05:00.
        # 00:30 also keeps the nightly backup out of the hour that DST skips or repeats.
        "backups": Schedule(cron="30 0 * * *"),
        "restore-drill": Schedule(cron="0 5 * * 0"),
        "certificates": Schedule(cron="0 6 * * *"),
        "patch-check": Schedule(cron="15 6 * * *"),
        # Scheduled runs still pause for approval unless patching.preapproved_scheduled is set.
        "patch-apply": Schedule(cron="0 3 * * 3"),
        "security-digest": Schedule(cron="0 7 * * *"),
        "doc-reconcile": Schedule(cron="0 8 * * 1"),
        "housekeeping": Schedule(cron="45 4 * * *"),
    }


class ExternalHeartbeat(Strict):
    """A dead-man's switch outside the lab for one flow: the services that expect its pings.

    Healthchecks: ``<url>/start`` when a run starts, ``<url>`` when it did its job (clean or
    findings), ``<url>/fail`` when it failed, the run's summary as the body. Uptime Kuma push
    monitor: ``<url>?status=up|down&msg=<summary>&ping=<run time in ms>`` when it ends. A run
    that dies before reporting leaves a start without an end: the service alerts on its own.
    """

    healthchecks: UrlTemplate | None = Field(
        None,
        description="Healthchecks ping URL of the check; its UUID or ping key is a secret, "
        "give it as a reference: https://hc-ping.com/{env:LABOPS_HC_BACKUPS}.",
    )
    uptime_kuma: UrlTemplate | None = Field(
        None,
        description="Uptime Kuma push monitor URL without its query: "
        "https://kuma.example.org/api/push/{env:LABOPS_KUMA_BACKUPS}.",
    )
    grace_minutes: int = Field(
        60,  # labops.pings.DEFAULT_GRACE_MINUTES
        ge=1,
        le=7 * 24 * 60,
        description="How late a run may be before the service alerts (the check's grace time; "
        "`labops healthchecks` prints it with the schedule).",
    )


class ParameterRule(Strict):
    """What a message on the bus may pass for one flow parameter, on top of the bounds of the
    flow's own signature."""

    values: list[ParameterValue] | None = Field(
        None,
        description="Allowed values (for a list parameter: allowed items); unset: any value "
        "within the flow's bounds.",
    )
    min: int | None = Field(None, description="Smallest number allowed (each item of a list).")
    max: int | None = Field(None, description="Largest number allowed (each item of a list).")
    max_items: int | None = Field(None, ge=1, description="Longest list allowed.")


class TriggerRule(Strict):
    """Whether and how MQTT messages (<platform.mqtt_run_topic>/<flow>) may start one flow."""

    enabled: bool = Field(True, description="false: messages for this flow start nothing.")
    parameters: dict[str, ParameterRule] = Field(
        default_factory=dict,
        description="Parameters a message may set, with their limits; any other is refused.",
    )
    fixed: dict[str, ParameterValue] = Field(
        default_factory=dict,
        description="Parameters always set to this value; a message asking another is refused.",
    )


def _default_triggers() -> dict[DeploymentName, TriggerRule]:
    """Read-only flows, and lab-changing flows only as dry runs; never an operator's switch
    (certificate renewal, the digest's LLM summary, a patch check's package-list refresh)."""
    dry = {"dry_run": True}
    hosts = ParameterRule(max_items=20)
    return {
        "backups": TriggerRule(fixed=dry, parameters={"vmids": ParameterRule(max_items=20)}),
        "restore-drill": TriggerRule(fixed=dry, parameters={"vmid": ParameterRule()}),
        "certificates": TriggerRule(fixed=dry),
        "patch-check": TriggerRule(parameters={"hosts": hosts}),
        "patch-apply": TriggerRule(
            fixed=dry, parameters={"hosts": hosts, "security_only": ParameterRule()}
        ),
        # dry run: a digest asked for on the bus never becomes the baseline of the next one
        "security-digest": TriggerRule(fixed=dry, parameters={"period": ParameterRule()}),
        "doc-reconcile": TriggerRule(fixed=dry),
        "housekeeping": TriggerRule(fixed=dry, parameters={"retention_days": ParameterRule()}),
    }


def _default_run_minutes() -> dict[DeploymentName, int]:
    return {"backups": 120, "restore-drill": 60, "patch-apply": 120, "certificates": 30}


class PlatformPolicy(Strict):
    """How the flows run as a service: schedules, work pool, MQTT topics, alerts, retention."""

    schedules: dict[DeploymentName, Schedule] = Field(
        default_factory=_default_schedules,
        description="Cron per deployment, in lab.timezone (missing ones use the defaults).",
    )
    triggers: dict[DeploymentName, TriggerRule] = Field(
        default_factory=_default_triggers,
        description="What MQTT messages may start, per flow; a flow not named keeps its "
        "default: read-only flows as asked, flows that change anything only with dry_run true, "
        "no operator switch (renew, llm_summary, refresh) settable. See docs/triggers.md.",
    )
    assumed_run_minutes: dict[DeploymentName, int] = Field(
        default_factory=_default_run_minutes,
        description="How long a run is assumed to last when `labops deploy` and `serve` look "
        "for overlapping schedules of lab-changing flows (missing ones: 60).",
    )
    maintenance_wait_minutes: float = Field(
        60,
        ge=0,
        description="How long backups or patch apply wait for the other to finish changing "
        "the lab (they never run at once) before the run fails as could not start.",
    )
    work_pool: str = Field(
        "labops",
        description="Process work pool that workers poll; one pool per lab (its workers run "
        "every deployment in it): labs sharing a Prefect server need different pools.",
    )
    mqtt_run_topic: str = Field(
        "labops/run",
        description="Topic prefix the MQTT bridge listens on: <prefix>/<flow>; labs sharing a "
        "broker need different ones.",
    )
    mqtt_events_topic: str = Field(
        "labops/events", description="Topic prefix of the state changes of the lab's flow runs."
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
    external_heartbeat: dict[DeploymentName, ExternalHeartbeat] = Field(
        default_factory=dict,
        description="The dead-man's switch outside the lab, per flow: Healthchecks and Uptime "
        "Kuma ping URLs (none by default). `labops healthchecks` prints each flow's schedule "
        "as Healthchecks wants it.",
    )

    @field_validator("schedules", mode="after")
    @classmethod
    def _keep_defaults(
        cls, value: dict[DeploymentName, Schedule]
    ) -> dict[DeploymentName, Schedule]:
        return {**_default_schedules(), **value}

    @field_validator("triggers", mode="after")
    @classmethod
    def _keep_default_triggers(
        cls, value: dict[DeploymentName, TriggerRule]
    ) -> dict[DeploymentName, TriggerRule]:
        return {**_default_triggers(), **value}

    @field_validator("assumed_run_minutes", mode="after")
    @classmethod
    def _keep_default_minutes(cls, value: dict[DeploymentName, int]) -> dict[DeploymentName, int]:
        for name, minutes in value.items():
            if not 1 <= minutes <= 7 * 24 * 60:
                raise ValueError(f"{name}: between 1 and 10080 minutes (a week)")
        return {**_default_run_minutes(), **value}

    @model_validator(mode="after")
    def _parameters_fit_the_flows(self) -> PlatformPolicy:
        """A schedule or trigger naming a parameter its flow lacks (or a value out of its
        bounds) fails here, with the key, not at run time in the engine."""
        errors: list[InitErrorDetails] = []
        for name, schedule in self.schedules.items():
            errors += _check_values(name, schedule.parameters, ("schedules", name, "parameters"))
        for name, rule in self.triggers.items():
            errors += _check_rule(name, rule, ("triggers", name))
        if errors:
            raise ValidationError.from_exception_data("PlatformPolicy", errors)
        return self

    server_mode: Literal["serve", "worker"] = Field(
        "serve", description="serve: one process runs every deployment; worker: a work pool."
    )


def run_minutes(policy: PlatformPolicy, flow: str) -> int:
    """How long a run of ``flow`` is assumed to last (``platform.assumed_run_minutes``)."""
    return policy.assumed_run_minutes.get(flow, 60)  # type: ignore[call-overload]


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    # the message is a template: braces in user text must not be taken for placeholders
    text = message.replace("{", "{{").replace("}", "}}")
    return InitErrorDetails(type=PydanticCustomError("flow_parameter", text), loc=loc, input=value)


def _unknown(flow: str, key: str, loc: tuple[str | int, ...], value: Any) -> InitErrorDetails:
    if key == "config":
        why = "set by `labops deploy` (the config file), never here"
    else:
        known = ", ".join(parameter_names(flow))
        why = f"not a parameter of {flow} (its parameters: {known})"
    return _error((*loc, key), why, value)


def _check_values(
    flow: str, values: dict[str, Any], loc: tuple[str | int, ...]
) -> list[InitErrorDetails]:
    """Each key a parameter of ``flow``, each value inside its bounds."""
    known = set(parameter_names(flow))
    errors = [_unknown(flow, k, loc, v) for k, v in values.items() if k not in known]
    if errors:
        return errors
    try:
        check_parameters(flow, values)
    except ValidationError as exc:
        return [_error((*loc, *err["loc"]), err["msg"], err.get("input")) for err in exc.errors()]
    return []


def _check_rule(flow: str, rule: TriggerRule, loc: tuple[str | int, ...]) -> list[InitErrorDetails]:
    errors = _check_values(flow, dict(rule.fixed), (*loc, "fixed"))
    known = set(parameter_names(flow))
    for key, limits in rule.parameters.items():
        where = (*loc, "parameters", key)
        shown = limits.model_dump()  # a mapping: the error line quotes no value
        if key not in known:
            errors.append(_unknown(flow, key, (*loc, "parameters"), shown))
            continue
        if key in rule.fixed:
            errors.append(_error(where, "also in fixed: a parameter is fixed or settable", shown))
        listed = is_list_parameter(flow, key)
        if limits.max_items is not None and not listed:
            errors.append(_error((*where, "max_items"), f"{key} is not a list", shown))
        numbers = is_integer_parameter(flow, key)
        if (limits.min is not None or limits.max is not None) and not numbers:
            errors.append(_error(where, f"min/max: {key} is not a number", shown))
        for i, value in enumerate(limits.values or []):
            try:
                check_parameters(flow, {key: [value] if listed else value})
            except ValidationError as exc:
                why = exc.errors()[0]["msg"]
                errors.append(_error((*where, "values", i), f"not a valid {key}: {why}", value))
    return errors
