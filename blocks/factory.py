"""Blocks built from the validated config, secrets resolved at this moment.

Every system is one row of :data:`SYSTEMS` (where its section sits in the config, its block
class); one builder turns any section into its block: the section's settings (the block's
settings model, which the section inherits) and each of the block's secrets, resolved from the
section's reference of the same name. A system whose config names ``block: NAME`` gets the saved
block of that name instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import BaseModel, SecretStr

from blocks._base import HttpEndpointBlock, SystemBlock
from blocks.edge import StepCa, TechnitiumDns, TraefikApi
from blocks.llm import LlmProviders
from blocks.notify import MqttBroker, TelegramBot
from blocks.observability import BeszelHub, Loki, VictoriaMetrics
from blocks.proxmox import PbsCredentials, PbsOffsiteCredentials, ProxmoxCredentials
from blocks.security import CrowdsecLapi, WazuhApi, WazuhIndexer
from blocks.ssh import SshCredentials
from labops.config import LabopsConfig, resolve_secret
from labops.config.secrets import is_secret_field
from labops.errors import ConfigError
from labops.metrics_push import VictoriaMetricsPusher
from labops.notify import MultiNotifier, Notifier
from labops.outcome import Severity

B = TypeVar("B", bound=Block)

SecretsOf = Callable[[Any, str], dict[str, Any]]
"""Builds a block's secret fields from its section, for a system whose secrets do not map one
config key to one block field (the LLM chain: a key per model, one SecretDict in the block)."""


@dataclass(frozen=True)
class System:
    """One system labops knows: where its section is in the config and the block it becomes."""

    path: tuple[str, ...]
    """Attribute path of its section under ``config.systems``."""
    block: type[SystemBlock]
    secrets: SecretsOf | None = None

    @property
    def config_key(self) -> str:
        return ".".join(("systems", *self.path))


def _llm_keys(section: Any, where: str) -> dict[str, Any]:
    keys: dict[str, str] = {}
    for i, model in enumerate(section.models):
        if model.api_key is not None:
            key = resolve_secret(model.api_key, f"{where}.models.{i}.api_key")
            keys[model.model] = key.get_secret_value()
    return {"api_keys": SecretDict(keys)}


SYSTEMS: dict[str, System] = {
    "proxmox": System(("proxmox",), ProxmoxCredentials),
    "pbs": System(("pbs",), PbsCredentials),
    "pbs_offsite": System(("pbs_offsite",), PbsOffsiteCredentials),
    "ssh": System(("ssh",), SshCredentials),
    "traefik": System(("traefik",), TraefikApi),
    "step_ca": System(("step_ca",), StepCa),
    "technitium": System(("technitium",), TechnitiumDns),
    "wazuh_api": System(("wazuh", "api"), WazuhApi),
    "wazuh_indexer": System(("wazuh", "indexer"), WazuhIndexer),
    "crowdsec": System(("crowdsec",), CrowdsecLapi),
    "victoriametrics": System(("victoriametrics",), VictoriaMetrics),
    "loki": System(("loki",), Loki),
    "beszel": System(("beszel",), BeszelHub),
    "telegram": System(("telegram",), TelegramBot),
    "mqtt": System(("mqtt",), MqttBroker),
    "llm": System(("llm",), LlmProviders, secrets=_llm_keys),
}
"""Every system labops knows, in the order `labops config check` lists them."""

BLOCK_TYPES: dict[str, type[SystemBlock]] = {name: s.block for name, s in SYSTEMS.items()}
"""System name (as ``block_for`` and ``LabContext.block`` take it) -> block class."""

HTTP_SYSTEMS: dict[str, type[HttpEndpointBlock]] = {
    name: s.block for name, s in SYSTEMS.items() if issubclass(s.block, HttpEndpointBlock)
}
"""System name (as ``http_block`` and ``LabContext.http`` take it) -> block class."""


def normalise(system: str) -> str:
    """Accept ``step-ca``, ``wazuh.api`` and the like for ``step_ca``, ``wazuh_api``."""
    return system.strip().lower().replace("-", "_").replace(".", "_")


def config_key(system: str) -> str:
    """The key path of a system in the config file (``wazuh_api`` -> ``systems.wazuh.api``)."""
    name = normalise(system)
    return SYSTEMS[name].config_key if name in SYSTEMS else f"systems.{name}"


def system_config(config: LabopsConfig, system: str) -> Any:
    """The config section of ``system``, or None when it is not configured."""
    name = normalise(system)
    if name in SYSTEMS:
        section: Any = config.systems
        for attr in SYSTEMS[name].path:
            section = getattr(section, attr)
            if section is None:
                return None
        return section
    if name in type(config.systems).model_fields:  # a group of systems (``wazuh``)
        return getattr(config.systems, name)
    raise ConfigError(f"unknown system {system!r} (known: {', '.join(SYSTEMS)})")


def configured_systems(config: LabopsConfig) -> list[str]:
    """Names of the systems the config sets up, in ``BLOCK_TYPES`` order."""
    return [name for name in BLOCK_TYPES if system_config(config, name) is not None]


def block_for(config: LabopsConfig, system: str) -> SystemBlock:
    """The block of any configured system; ``ConfigError`` naming it when it is not set up."""
    name = normalise(system)
    section = system_config(config, name)
    if section is None:
        raise ConfigError(f"{config_key(name)}: not configured (this operation needs it)")
    saved = getattr(section, "block", None)
    if saved:
        return _load_saved(BLOCK_TYPES[name], saved, config_key(name))
    return build_block(SYSTEMS[name], section)


def pve_block(config: LabopsConfig) -> ProxmoxCredentials:
    return cast(ProxmoxCredentials, block_for(config, "proxmox"))


def pbs_block(config: LabopsConfig) -> PbsCredentials:
    return cast(PbsCredentials, block_for(config, "pbs"))


def ssh_block(config: LabopsConfig) -> SshCredentials:
    return cast(SshCredentials, block_for(config, "ssh"))


def http_block(config: LabopsConfig, system: str) -> HttpEndpointBlock:
    """The block of an HTTP system: one of ``HTTP_SYSTEMS``' names."""
    name = normalise(system)
    if name not in HTTP_SYSTEMS:
        raise ConfigError(f"{system!r} is not an HTTP system (known: {', '.join(HTTP_SYSTEMS)})")
    return cast(HttpEndpointBlock, block_for(config, name))


def telegram_block(config: LabopsConfig) -> TelegramBot:
    return cast(TelegramBot, block_for(config, "telegram"))


def mqtt_block(config: LabopsConfig) -> MqttBroker:
    return cast(MqttBroker, block_for(config, "mqtt"))


def llm_block(config: LabopsConfig) -> LlmProviders:
    return cast(LlmProviders, block_for(config, "llm"))


def notifier_for(
    config: LabopsConfig, operation: str | None = None, severity: Severity | None = None
) -> MultiNotifier:
    """Every configured channel behind one notifier (none configured: delivers nowhere): the
    Apprise targets whose routing takes ``operation`` at ``severity`` (not given: all)."""
    from labops.notify.apprise import AppriseNotifier

    channels: list[Notifier] = []
    if config.systems.telegram is not None:
        channels.append(telegram_block(config).get_client())
    if config.systems.mqtt is not None:
        channels.append(mqtt_block(config).get_client(lab=config.lab.name))
    for target in config.systems.apprise:
        if severity is None or target.takes(operation, severity):
            channels.append(AppriseNotifier(target, lab=config.lab.name))
    return MultiNotifier(channels)


def metrics_pusher(config: LabopsConfig) -> VictoriaMetricsPusher | None:
    """Pushes to VictoriaMetrics, or None when it is not configured."""
    if config.systems.victoriametrics is None:
        return None
    block = cast(VictoriaMetrics, block_for(config, "victoriametrics"))
    return block.pusher()


# -- building blocks from inline config --------------------------------------------------------


def _load_saved(cls: type[B], name: str, where: str) -> B:
    try:
        return cast(B, cls.load(name))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{where}.block: no saved {cls.get_block_type_name()} block named {name!r} "
            f"({str(exc).splitlines()[0]})"
        ) from None


def build_block(system: System, section: Any) -> SystemBlock:
    """The block of ``system`` from its config section: the same settings, secrets resolved.

    Raises:
        ConfigError: naming the key when a setting or secret the system needs is missing, or a
            secret reference cannot be resolved.
    """
    where = system.config_key
    cls = system.block
    settings_type = cls.settings_type()
    settings = settings_type.model_validate(
        {name: _settings_only(getattr(section, name)) for name in settings_type.model_fields}
    )
    for name in cls.required:
        if getattr(settings, name) in (None, ""):
            hint = " (or name a saved block with `block:`)" if name == "url" else ""
            raise ConfigError(f"{where}.{name}: required for this system{hint}")
    if system.secrets is not None:
        secrets = system.secrets(section, where)
    else:
        secrets = {name: _secret(section, name, where) for name in cls.secret_names()}
    for name, value in secrets.items():
        if value is None and cls.model_fields[name].is_required():
            raise ConfigError(f"{where}.{name}: required for this system")
    return cls(settings=settings, **{k: v for k, v in secrets.items() if v is not None})


def _settings_only(value: Any) -> Any:
    """``value`` with every secret reference left out (a section's nested parts, e.g. the LLM
    models, inherit their settings model and add a reference, which the block never holds)."""
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        kept = [n for n, f in fields.items() if not is_secret_field(f)]
        return {n: _settings_only(getattr(value, n)) for n in kept}
    if isinstance(value, list | tuple):
        return [_settings_only(v) for v in value]
    if isinstance(value, dict):
        return {k: _settings_only(v) for k, v in value.items()}
    return value


def _secret(section: Any, key: str, where: str) -> SecretStr | None:
    ref = getattr(section, key)
    return None if ref is None else resolve_secret(ref, f"{where}.{key}")
