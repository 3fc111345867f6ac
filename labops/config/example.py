"""Render ``config.example.yaml`` from the config models: every key, commented from its description.

``labops config example > config.example.yaml`` regenerates the file after a model changes. A
required field gets its value from ``Field(examples=[...])`` or from :data:`EXAMPLES` (by key
path; ``*`` stands for a list item or a mapping key); every other key shows its default.
"""

from __future__ import annotations

import enum
import textwrap
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from labops.config.model import LabopsConfig

HEADER = """\
# labops configuration: an example documenting every key.
#
# labops reads ./labops.yaml, or the file named by --config or LABOPS_CONFIG.
# Every section is optional: a system left out is skipped and named in each report.
# Unknown keys are errors (a typo never silently disables a check).
# Relative paths are taken from this file's directory.
# Secrets are never written here: a secret key holds a reference,
#   env:VARIABLE        read from the environment when a flow runs,
#   file:PATH           the content of a file (e.g. a Docker/systemd secret),
#   block:NAME          a Prefect Secret block.
# A system can instead name a saved labops block (`block: NAME`, created in the Prefect UI or
# with Block.save): its URL, credentials and TLS options then come from the block.
#
# Regenerate after a model change: labops config example > config.example.yaml
"""

EXAMPLES: dict[str, Any] = {
    "platform.external_heartbeat": {"backups": {}},
    "platform.external_heartbeat.*.healthchecks": "https://hc-ping.com/{env:LABOPS_HC_BACKUPS}",
    "systems.apprise.*.name": "phone",
    "systems.apprise.*.url": "ntfys://{env:LABOPS_NTFY_TOKEN}@ntfy.lab.internal/labops",
    "systems.apprise.*.min_severity": "warning",
    "systems.proxmox.url": "https://pve1.lab.internal:8006",
    "systems.proxmox.token_id": "labops@pve!labops",
    "systems.proxmox.token_secret": "env:LABOPS_PVE_TOKEN",
    "systems.proxmox.nodes": {"pve1": {}},
    "systems.proxmox.nodes.*.url": "https://pve1.lab.internal:8006",
    "systems.proxmox.nodes.*.ssh_host": "10.0.0.11",
    "systems.proxmox.tls.ca_bundle": "certs/lab-root.pem",
    "systems.proxmox.tls.server_name": "pve1.lab.internal",
    "systems.pbs.url": "https://pbs.lab.internal:8007",
    "systems.pbs.token_id": "labops@pbs!labops",
    "systems.pbs.token_secret": "env:LABOPS_PBS_TOKEN",
    "systems.pbs.pve_storage": "pbs-store1",
    "systems.pbs_offsite.name": "pbs2",
    "systems.pbs_offsite.home_remote": "home",
    "systems.pbs_offsite.url": "https://pbs2.offsite.example:8007",
    "systems.pbs_offsite.token_id": "labops@pbs!offsite",
    "systems.pbs_offsite.token_secret": "env:LABOPS_PBS_OFFSITE_TOKEN",
    "systems.pbs_offsite.datastore": "offsite",
    "systems.ssh.key_file": "~/.ssh/labops_ed25519",
    "systems.ssh.key_passphrase": "env:LABOPS_SSH_PASSPHRASE",
    "systems.ssh.known_hosts": "~/.ssh/known_hosts",
    "systems.ssh.jump_host": {"host": "bastion.lab.internal"},
    "systems.traefik.url": "https://traefik.lab.internal",
    "systems.traefik.username": "labops",
    "systems.traefik.password": "env:LABOPS_TRAEFIK_PASSWORD",
    "systems.traefik.entrypoint": "10.0.0.20:443",
    "systems.step_ca.url": "https://ca.lab.internal:9000",
    "systems.technitium.url": "http://dns.lab.internal:5380",
    "systems.technitium.token": "env:LABOPS_TECHNITIUM_TOKEN",
    "systems.technitium.zone": "lab.internal",
    "systems.wazuh.api.url": "https://wazuh.lab.internal:55000",
    "systems.wazuh.api.username": "wazuh-wui",
    "systems.wazuh.api.password": "env:LABOPS_WAZUH_API_PASSWORD",
    "systems.wazuh.indexer.url": "https://wazuh.lab.internal:9200",
    "systems.wazuh.indexer.username": "labops-reader",
    "systems.wazuh.indexer.password": "env:LABOPS_WAZUH_INDEXER_PASSWORD",
    "systems.crowdsec.url": "http://crowdsec.lab.internal:8080",
    "systems.crowdsec.machine_id": "labops",
    "systems.crowdsec.machine_password": "env:LABOPS_CROWDSEC_PASSWORD",
    "systems.crowdsec.bouncer_key": "env:LABOPS_CROWDSEC_BOUNCER_KEY",
    "systems.victoriametrics.url": "http://vm.lab.internal:8428",
    "systems.loki.url": "http://loki.lab.internal:3100",
    "systems.beszel.url": "http://beszel.lab.internal:8090",
    "systems.beszel.username": "labops@lab.internal",
    "systems.beszel.password": "env:LABOPS_BESZEL_PASSWORD",
    "systems.telegram.url": "https://api.telegram.org",
    "systems.telegram.bot_token": "env:LABOPS_TELEGRAM_TOKEN",
    "systems.telegram.chat_id": "-1001234567890",
    "systems.mqtt.username": "labops",
    "systems.mqtt.password": "env:LABOPS_MQTT_PASSWORD",
    "systems.mqtt.ca_bundle": "certs/lab-root.pem",
    "systems.llm.models": [
        {"model": "openai/gpt-4o-mini", "api_key": "env:LABOPS_OPENAI_KEY"},
        {"model": "ollama/llama3.1", "api_base": "http://ollama.lab.internal:11434"},
    ],
    "inventory.hosts": [
        {"name": "pve1", "kind": "node", "address": "10.0.0.11", "tags": ["node"]},
        {"name": "dns", "kind": "container", "vmid": 101, "node": "pve1", "access": "pct"},
    ],
    "digest.suppressions": [
        {"reason": "the backup job's nightly root login", "source": "wazuh", "rule": "5715"}
    ],
    "docs.claims": [{"match": r"runs (\d+) containers", "fact": "lxc"}],
    # two flows shown in full; every flow not named keeps its default rule
    "platform.triggers": {
        "backups": {"fixed": {"dry_run": True}, "parameters": {"vmids": {"max_items": 20}}},
        "housekeeping": {
            "fixed": {"dry_run": True},
            "parameters": {"retention_days": {"min": 7}},
        },
    },
    "inventory.endpoints": [
        {"name": "grafana.lab.internal", "address": "10.0.0.20", "group": "apps"},
    ],
}

_PLACEHOLDER: dict[type, Any] = {str: "example", int: 1, float: 1.0, bool: False, Path: "path"}


def render_example(model: type[BaseModel] = LabopsConfig) -> str:
    """The commented example of ``model`` (the whole config by default)."""
    lines = [HEADER]
    _render_model(model, {}, "", 0, lines)
    return "\n".join(lines) + "\n"


def _model_of(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """('model'|'list'|'dict'|'scalar', the model class inside) for a field's annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            kind, inner = _model_of(arg)
            if inner is not None:
                return kind, inner
        return "scalar", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is list and get_args(annotation):
        kind, inner = _model_of(get_args(annotation)[0])
        return ("list", inner) if kind == "model" else ("scalar", None)
    if origin is dict and len(get_args(annotation)) == 2:
        kind, inner = _model_of(get_args(annotation)[1])
        return ("dict", inner) if kind == "model" else ("scalar", None)
    return "scalar", None


def _example(path: str, field: FieldInfo) -> Any:
    if path in EXAMPLES:
        return EXAMPLES[path]
    if field.examples:
        return field.examples[0]
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    base = field.annotation
    if get_origin(base) is Literal:
        return get_args(base)[0]
    for arg in get_args(base) or (base,):
        if arg in _PLACEHOLDER:
            return _PLACEHOLDER[arg]
    return None


def _comment(field: FieldInfo, name: str, nested: type[BaseModel] | None) -> list[str]:
    text = field.description or ""
    if not text and nested is not None and nested.__doc__:
        text = " ".join(nested.__doc__.split())
    if not text:
        text = name.replace("_", " ").capitalize() + "."
    if text and not text.endswith((".", "!", "?", ")")):
        text += "."
    if field.is_required():
        text += " Required."
    elif nested is None and field.default is not PydanticUndefined:
        text += f" Default: {_scalar(field.default)}."
    return textwrap.wrap(text, width=96)


def _scalar(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple | set | frozenset):
        value = list(value)
    if isinstance(value, float):
        value = round(value, 4)  # 2/3 reads better as 0.6667
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return dumped.strip().removesuffix("...").strip()


def _render_model(
    model: type[BaseModel],
    given: dict[str, Any],
    path: str,
    indent: int,
    lines: list[str],
    first_prefix: str | None = None,
    comments: bool = True,
    only_given: bool = False,
) -> None:
    """Write ``model``'s keys at ``indent``; ``first_prefix`` starts a list item (``- ``)."""
    pad = " " * indent
    first = True
    for name, field in model.model_fields.items():
        if only_given and name not in given:
            continue
        key_path = f"{path}{name}"
        kind, nested = _model_of(field.annotation)
        if comments:
            lines.extend(f"{pad}# {line}" for line in _comment(field, name, nested))
        lead = first_prefix if first and first_prefix is not None else pad
        first = False
        value = given.get(name, _example(key_path, field))
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_defaults=True)
        if kind == "model" and nested is not None:
            lines.append(f"{lead}{name}:")
            _render_model(nested, value or {}, f"{key_path}.", indent + 2, lines, None, comments)
        elif kind == "list" and nested is not None:
            items = [
                v.model_dump(mode="json", exclude_defaults=True) if isinstance(v, BaseModel) else v
                for v in (value or [{}])
            ]
            lines.append(f"{lead}{name}:")
            for i, item in enumerate(items):
                # the first item shows every key; the others only what they set
                _render_model(
                    nested,
                    item,
                    f"{key_path}.*.",
                    indent + 4,
                    lines,
                    f"{pad}  - ",
                    comments and i == 0,
                    only_given=i > 0,
                )
        elif kind == "dict" and nested is not None:
            lines.append(f"{lead}{name}:")
            key_type = (get_args(field.annotation) or (str,))[0]
            for entry, sub in (value or {101 if key_type is int else "example": {}}).items():
                if isinstance(sub, BaseModel):
                    sub = sub.model_dump(mode="json", exclude_defaults=True)
                lines.append(f"{pad}  {entry}:")
                _render_model(
                    nested, sub or {}, f"{key_path}.*.", indent + 4, lines, None, comments
                )
        else:
            lines.append(f"{lead}{name}: {_scalar(value)}")
    if first:  # a model without fields, or an item setting nothing
        lines.append(f"{first_prefix or pad}{{}}")
