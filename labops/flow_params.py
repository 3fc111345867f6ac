"""The parameters of every flow, declared once: names, types, bounds and defaults.

A flow's parameters arrive from outside labops: the Prefect UI's form, ``POST
/deployments/{id}/create_flow_run``, MQTT, the config's schedules. The types below carry their
bounds (a retention of at least a day, a vmid in Proxmox VE's range, a host name without shell
characters and a bounded number of them), so that

- the flows use them in their signatures: Prefect builds the UI form and the deployment's
  parameter schema from the signature (the server refuses an out-of-bounds run with 409) and its
  engine validates every run's parameters against it before the flow starts;
- the config validates schedule and trigger parameters against :data:`FLOW_PARAMETERS` when it
  loads, without importing a flow (imports point down);
- the MQTT bridge checks a message against the same models.

``tests/core/test_flow_params.py`` fails when a flow's signature and its model here disagree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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

MAX_HOSTS = 256
"""Most hosts one run may name (a lab has dozens)."""
MAX_GUESTS = 256
"""Most guests one run may name."""

ConfigPath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""A config file path: no control characters, bounded."""

Vmid = Annotated[int, Field(ge=100, le=999_999_999)]
"""A Proxmox VE guest id (PVE's ``pve-vmid`` range: 100 to 999999999)."""

HostName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=253, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$"
    ),
]
"""An inventory host or guest name: letters, digits, dots, dashes, underscores; no spaces or
shell characters; starts and ends with a letter or digit."""

NodeName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$"
    ),
]
"""A Proxmox VE node name (PVE's ``pve-node``: a host name label)."""

StorageId = Annotated[
    str,
    StringConstraints(
        min_length=2, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$"
    ),
]
"""A Proxmox VE storage id (PVE's ``pve-storage-id``)."""

RetentionDays = Annotated[int, Field(ge=1, le=3650)]
"""Days to keep finished runs: at least one, at most ten years."""

HostList = Annotated[list[HostName], Field(min_length=1, max_length=MAX_HOSTS)]
VmidList = Annotated[list[Vmid], Field(min_length=1, max_length=MAX_GUESTS)]
DigestPeriod = Literal["daily", "weekly"]


class FlowParameters(BaseModel):
    """Parameters every flow takes. Unknown names are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: ConfigPath | None = None


class BackupsParameters(FlowParameters):
    dry_run: bool = False
    vmids: VmidList | None = None


class RestoreDrillParameters(FlowParameters):
    dry_run: bool = False
    vmid: Vmid | None = None
    scratch_vmid: Vmid | None = None
    node: NodeName | None = None
    storage: StorageId | None = None


class CertificatesParameters(FlowParameters):
    dry_run: bool = False
    renew: bool | None = None


class PatchCheckParameters(FlowParameters):
    refresh: bool | None = None
    hosts: HostList | None = None


class PatchApplyParameters(FlowParameters):
    dry_run: bool = False
    security_only: bool | None = None
    hosts: HostList | None = None


class SecurityDigestParameters(FlowParameters):
    dry_run: bool = False
    period: DigestPeriod | None = None
    llm_summary: bool | None = None


class DocReconcileParameters(FlowParameters):
    dry_run: bool = True


class HousekeepingParameters(FlowParameters):
    dry_run: bool = False
    retention_days: RetentionDays | None = None


FLOW_PARAMETERS: dict[str, type[FlowParameters]] = {
    "backups": BackupsParameters,
    "restore-drill": RestoreDrillParameters,
    "certificates": CertificatesParameters,
    "patch-check": PatchCheckParameters,
    "patch-apply": PatchApplyParameters,
    "security-digest": SecurityDigestParameters,
    "doc-reconcile": DocReconcileParameters,
    "housekeeping": HousekeepingParameters,
}
"""Each flow's parameters, by the name operators use (deployments, MQTT topics)."""

CHANGES_LAB: frozenset[str] = frozenset({"backups", "restore-drill", "patch-apply"})
"""Flows whose real runs change guests or nodes (vzdump, restore, snapshots, upgrades,
reboots): their schedules should not overlap (``labops deploy`` warns)."""

MUTATING: frozenset[str] = CHANGES_LAB | {"certificates", "doc-reconcile", "housekeeping"}
"""Flows whose real runs change something (the lab, node certificates, the docs repository,
Prefect's run history); by default the bus starts them only as dry runs."""


def parameter_names(flow: str) -> list[str]:
    """The parameters of ``flow`` a caller may set (``config`` is fixed at deploy time)."""
    return [name for name in FLOW_PARAMETERS[flow].model_fields if name != "config"]


def check_parameters(flow: str, parameters: dict[str, Any], *, strict: bool = True) -> None:
    """Validate ``parameters`` against ``flow``'s declaration; raises pydantic's
    ``ValidationError`` (locations are parameter names). ``strict``: no coercion ("yes" is not
    a boolean, "5" not a number), as JSON and YAML values need none."""
    FLOW_PARAMETERS[flow].model_validate(parameters, strict=strict)


def is_list_parameter(flow: str, name: str) -> bool:
    """Whether ``flow``'s parameter ``name`` takes a list (hosts, vmids)."""
    prop = FLOW_PARAMETERS[flow].model_json_schema()["properties"][name]
    kinds = [prop, *prop.get("anyOf", [])]
    return any(k.get("type") == "array" for k in kinds)


def is_integer_parameter(flow: str, name: str) -> bool:
    """Whether ``flow``'s parameter ``name`` is a number or a list of numbers."""
    prop = FLOW_PARAMETERS[flow].model_json_schema()["properties"][name]
    kinds = [prop, *prop.get("anyOf", [])]
    kinds += [k["items"] for k in kinds if isinstance(k.get("items"), dict)]
    return any(k.get("type") == "integer" for k in kinds)
