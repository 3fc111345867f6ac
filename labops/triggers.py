"""Which runs a message on the MQTT bus may start: the ``platform.triggers`` allowlist.

Everything in a message is untrusted: the topic, the payload, every value in it. A message either
becomes a :class:`RunRequest` that the allowlist allows and the flow's own parameter bounds
accept, or it is refused with one short line (:class:`Refused`) in which every piece of the
message is escaped and cut short. Nothing here raises anything else, whatever the bytes.

Payload: a JSON object of flow parameters (empty: the deployment's defaults), plus an optional
``request_id`` naming the request. The same id never starts a second run (the bridge remembers
recent ids and passes the id to Prefect as the run's idempotency key), so a QoS 1 message
delivered twice starts one run. A request that could change something (a flow with effects whose
``dry_run`` is not true) is refused without an id; read-only and dry-run requests without one
start a run per delivery (a duplicate costs one more read-only run).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from labops.config.policies.platform import ParameterRule, PlatformPolicy, TriggerRule
from labops.flow_params import FLOW_PARAMETERS, MUTATING, check_parameters, parameter_names

MAX_PAYLOAD = 16 * 1024
"""Largest payload read at all (bytes): parameters are a few short values."""
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ID_KEY = "request_id"


class Refused(ValueError):
    """A message that starts nothing; ``str()`` is one escaped line saying why."""


class RunRequest(BaseModel):
    """A message the allowlist allows: the flow, its final parameters, the request's id."""

    flow: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None


def shown(value: Any, limit: int = 60, quote: bool = True) -> str:
    """``value`` as it may appear in a log line: escaped (no line breaks, no control or
    non-ASCII characters) and at most ``limit`` characters; ``quote=False`` leaves a string's
    quotes off."""
    text = ascii(value)
    if not quote and isinstance(value, str):
        text = text[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_payload(payload: bytes) -> tuple[dict[str, Any], str | None]:
    """The parameters and the request id of a payload; :class:`Refused` when it is not a
    bounded JSON object."""
    if len(payload) > MAX_PAYLOAD:
        raise Refused(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        data = json.loads(payload.decode("utf-8") or "{}")
    except UnicodeDecodeError:
        raise Refused("payload is not UTF-8 text") from None
    except RecursionError:
        raise Refused("payload is not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or a number too long to convert
        raise Refused(f"payload is not JSON ({shown(str(exc), 80)})") from None
    if not isinstance(data, dict):
        raise Refused("payload must be a JSON object of flow parameters")
    request_id = data.pop(ID_KEY, None)
    if request_id is not None and not (
        isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)
    ):
        raise Refused(f"{ID_KEY} {shown(request_id)}: 1-64 letters, digits, '.', '_', ':', '-'")
    return data, request_id


def flow_of(prefix: str, topic: str) -> str:
    """The flow a run topic names; :class:`Refused` for any other topic."""
    head = prefix.rstrip("/") + "/"
    name = topic[len(head) :] if topic.startswith(head) else None
    if name not in FLOW_PARAMETERS:
        known = ", ".join(FLOW_PARAMETERS)
        raise Refused(f"topic {shown(topic)}: unknown flow {shown(name)} (known: {known})")
    return name


def _check_rule(flow: str, key: str, value: Any, rule: ParameterRule) -> None:
    items = value if isinstance(value, list) else [value]
    if rule.max_items is not None and isinstance(value, list) and len(value) > rule.max_items:
        raise Refused(f"{flow}: {key}: at most {rule.max_items} items from the bus")
    for item in items:
        if rule.values is not None and not any(
            type(item) is type(v) and item == v for v in rule.values
        ):
            raise Refused(f"{flow}: {key}: {shown(item)} is not allowed from the bus")
        number = isinstance(item, int) and not isinstance(item, bool)
        if number and rule.min is not None and item < rule.min:
            raise Refused(f"{flow}: {key}: {shown(item)} is below {rule.min}")
        if number and rule.max is not None and item > rule.max:
            raise Refused(f"{flow}: {key}: {shown(item)} is above {rule.max}")


def allowed(flow: str, params: dict[str, Any], rule: TriggerRule) -> dict[str, Any]:
    """The parameters to start ``flow`` with, or :class:`Refused` saying which key broke which
    rule (``platform.triggers.<flow>``)."""
    where = f"platform.triggers.{flow}"
    if not rule.enabled:
        raise Refused(f"{flow}: not allowed from the bus ({where}.enabled is false)")
    if "config" in params:
        # The bus never chooses which config (and so which secrets) a run uses.
        raise Refused(f"{flow}: 'config' cannot be set from MQTT")
    known = set(parameter_names(flow))
    for key, value in params.items():
        if key not in known:
            raise Refused(f"{flow}: unknown parameter {shown(key)}")
        if key in rule.fixed:
            fixed = rule.fixed[key]
            if type(value) is not type(fixed) or value != fixed:
                raise Refused(f"{flow}: {key} must be {json.dumps(fixed)} from the bus ({where})")
            continue
        if key not in rule.parameters:
            raise Refused(f"{flow}: {key} cannot be set from the bus ({where}.parameters)")
    final = {**params, **rule.fixed}
    try:
        check_parameters(flow, final)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise Refused(
            f"{flow}: invalid parameters: {shown(key, 40, False)}: {shown(err['msg'], 120, False)}"
        ) from None
    for key, value in params.items():
        if key in rule.parameters and value is not None:
            _check_rule(flow, key, value, rule.parameters[key])
    return final


def may_change_lab(flow: str, parameters: dict[str, Any]) -> bool:
    """Whether a run with ``parameters`` could change something: a flow with effects whose
    ``dry_run`` is not explicitly true (the deployment's own parameters may say false)."""
    return flow in MUTATING and parameters.get("dry_run") is not True


def parse_run_request(
    prefix: str, topic: str, payload: bytes, triggers: Mapping[Any, TriggerRule] | None = None
) -> RunRequest:
    """Check a message on ``<prefix>/<flow>`` against the allowlist ``triggers`` (default:
    the defaults of ``platform.triggers``); :class:`Refused` says why it starts nothing. Never
    raises anything else."""
    rules: Mapping[Any, TriggerRule] = (
        triggers if triggers is not None else PlatformPolicy().triggers
    )
    flow = flow_of(prefix, topic)
    params, request_id = parse_payload(payload)
    rule = rules.get(flow) or TriggerRule(enabled=False)
    final = allowed(flow, params, rule)
    if request_id is None and may_change_lab(flow, final):
        raise Refused(f"{flow}: a run that changes the lab needs a {ID_KEY} (never started twice)")
    return RunRequest(flow=flow, parameters=final, request_id=request_id)
