"""Blocks built from the validated config, secrets resolved at this moment.

A system whose config names ``block: NAME`` gets the saved block of that name instead; otherwise
the block is built from the config's inline values and its secret references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import BaseModel, SecretStr

from blocks._base import HttpEndpointBlock
from blocks.edge import StepCa, TechnitiumDns, TraefikApi
from blocks.llm import LlmProvider, LlmProviders
from blocks.notify import MqttBroker, TelegramBot
from blocks.observability import BeszelHub, Loki, VictoriaMetrics
from blocks.proxmox import PbsCredentials, ProxmoxCredentials
from blocks.security import CrowdsecLapi, WazuhApi, WazuhIndexer
from blocks.ssh import SshCredentials
from labops.config import LabopsConfig, resolve_secret
from labops.errors import ConfigError
from labops.metrics_push import VictoriaMetricsPusher
from labops.notify import MultiNotifier, Notifier

B = TypeVar("B", bound=Block)

HTTP_SYSTEMS: dict[str, type[HttpEndpointBlock]] = {
    "traefik": TraefikApi,
    "step_ca": StepCa,
    "technitium": TechnitiumDns,
    "wazuh_api": WazuhApi,
    "wazuh_indexer": WazuhIndexer,
    "crowdsec": CrowdsecLapi,
    "victoriametrics": VictoriaMetrics,
    "loki": Loki,
    "beszel": BeszelHub,
}
"""System name (as ``http_block`` and ``LabContext.http`` take it) -> block class."""

BLOCK_TYPES: dict[str, type[Block]] = {
    "proxmox": ProxmoxCredentials,
    "pbs": PbsCredentials,
    "ssh": SshCredentials,
    **HTTP_SYSTEMS,
    "telegram": TelegramBot,
    "mqtt": MqttBroker,
    "llm": LlmProviders,
}
"""Every system labops knows, in the order `labops config check` lists them."""


def normalise(system: str) -> str:
    """Accept ``step-ca``, ``wazuh.api`` and the like for ``step_ca``, ``wazuh_api``."""
    return system.strip().lower().replace("-", "_").replace(".", "_")


def config_key(system: str) -> str:
    """The key path of a system in the config file (``wazuh_api`` -> ``systems.wazuh.api``)."""
    if system.startswith("wazuh_"):
        return f"systems.wazuh.{system.removeprefix('wazuh_')}"
    return f"systems.{system}"


def system_config(config: LabopsConfig, system: str) -> Any:
    """The config section of ``system``, or None when it is not configured."""
    name = normalise(system)
    if name not in BLOCK_TYPES and name not in type(config.systems).model_fields:
        known = ", ".join(BLOCK_TYPES)
        raise ConfigError(f"unknown system {system!r} (known: {known})")
    if name.startswith("wazuh_"):  # the Wazuh API and indexer are two systems under one key
        wazuh = config.systems.wazuh
        return None if wazuh is None else getattr(wazuh, name.removeprefix("wazuh_"))
    return getattr(config.systems, name)


def configured_systems(config: LabopsConfig) -> list[str]:
    """Names of the systems the config sets up, in ``BLOCK_TYPES`` order."""
    return [name for name in BLOCK_TYPES if system_config(config, name) is not None]


def block_for(config: LabopsConfig, system: str) -> Block:
    """The block of any configured system; ``ConfigError`` naming it when it is not set up."""
    name = normalise(system)
    section = system_config(config, name)
    if section is None:
        raise ConfigError(f"{config_key(name)}: not configured (this operation needs it)")
    saved = getattr(section, "block", None)
    if saved:
        return _load_saved(BLOCK_TYPES[name], saved, config_key(name))
    return _BUILDERS[name](section, config_key(name))


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


def notifier_for(config: LabopsConfig) -> MultiNotifier:
    """Every configured channel behind one notifier (none configured: delivers nowhere)."""
    channels: list[Notifier] = []
    if config.systems.telegram is not None:
        channels.append(telegram_block(config).get_client())
    if config.systems.mqtt is not None:
        channels.append(mqtt_block(config).get_client(lab=config.lab.name))
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


def _secret(section: BaseModel, key: str, where: str) -> SecretStr | None:
    ref = getattr(section, key)
    return None if ref is None else resolve_secret(ref, f"{where}.{key}")


def _required(value: SecretStr | None, where: str) -> SecretStr:
    if value is None:
        raise ConfigError(f"{where}: required for this system")
    return value


def _url(section: Any, where: str) -> str:
    if section.url is None:
        raise ConfigError(f"{where}.url: required (or name a saved block with `block:`)")
    return str(section.url).rstrip("/")


def _common(section: Any, where: str) -> dict[str, Any]:
    return {"url": _url(section, where), "tls": section.tls, "retry": section.retry}


def _proxmox(s: Any, where: str) -> Block:
    return ProxmoxCredentials(
        **_common(s, where),
        token_id=s.token_id,
        token_secret=_required(_secret(s, "token_secret", where), f"{where}.token_secret"),
        nodes=s.nodes,
    )


def _pbs(s: Any, where: str) -> Block:
    return PbsCredentials(
        **_common(s, where),
        token_id=s.token_id,
        token_secret=_required(_secret(s, "token_secret", where), f"{where}.token_secret"),
        datastore=s.datastore,
        pve_storage=s.pve_storage,
    )


def _ssh(s: Any, where: str) -> Block:
    return SshCredentials(
        user=s.user,
        key_file=s.key_file,
        key_passphrase=_secret(s, "key_passphrase", where),
        known_hosts=s.known_hosts,
        trust_on_first_use=s.trust_on_first_use,
        connect_timeout_s=s.connect_timeout_s,
        command_timeout_s=s.command_timeout_s,
        max_output_bytes=s.max_output_bytes,
        jump_host=s.jump_host,
        parallel=s.parallel,
    )


def _traefik(s: Any, where: str) -> Block:
    return TraefikApi(
        **_common(s, where),
        username=s.username,
        password=_secret(s, "password", where),
        entrypoint=s.entrypoint,
    )


def _step_ca(s: Any, where: str) -> Block:
    return StepCa(**_common(s, where))


def _technitium(s: Any, where: str) -> Block:
    return TechnitiumDns(**_common(s, where), token=_secret(s, "token", where), zone=s.zone)


def _user_password(cls: type[HttpEndpointBlock]) -> Callable[[Any, str], Block]:
    def build(s: Any, where: str) -> Block:
        if not s.username:
            raise ConfigError(f"{where}.username: required for this system")
        return cls(
            **_common(s, where),
            username=s.username,
            password=_required(_secret(s, "password", where), f"{where}.password"),
        )

    return build


def _crowdsec(s: Any, where: str) -> Block:
    return CrowdsecLapi(
        **_common(s, where),
        machine_id=s.machine_id,
        machine_password=_secret(s, "machine_password", where),
        bouncer_key=_secret(s, "bouncer_key", where),
    )


def _plain(cls: type[HttpEndpointBlock]) -> Callable[[Any, str], Block]:
    def build(s: Any, where: str) -> Block:
        return cls(**_common(s, where))

    return build


def _telegram(s: Any, where: str) -> Block:
    return TelegramBot(
        url=str(s.url).rstrip("/") if s.url else "https://api.telegram.org",
        bot_token=_required(_secret(s, "bot_token", where), f"{where}.bot_token"),
        chat_id=s.chat_id,
        tls=s.tls,
        retry=s.retry,
    )


def _mqtt(s: Any, where: str) -> Block:
    return MqttBroker(
        host=s.host,
        port=s.port,
        username=s.username,
        password=_secret(s, "password", where),
        tls=s.tls,
        ca_bundle=s.ca_bundle,
        topic_prefix=s.topic_prefix,
        qos=s.qos,
    )


def _llm(s: Any, where: str) -> Block:
    models = [
        LlmProvider(model=m.model, api_base=str(m.api_base) if m.api_base else None)
        for m in s.models
    ]
    keys: dict[str, str] = {}
    for i, m in enumerate(s.models):
        key = _secret(m, "api_key", f"{where}.models.{i}")
        if key is not None:
            keys[m.model] = key.get_secret_value()
    return LlmProviders(
        models=models,
        api_keys=SecretDict(keys),
        timeout_s=s.timeout_s,
        max_input_tokens=s.max_input_tokens,
        max_output_tokens=s.max_output_tokens,
        max_cost_usd=s.max_cost_usd,
    )


_BUILDERS: dict[str, Callable[[Any, str], Block]] = {
    "proxmox": _proxmox,
    "pbs": _pbs,
    "ssh": _ssh,
    "traefik": _traefik,
    "step_ca": _step_ca,
    "technitium": _technitium,
    "wazuh_api": _user_password(WazuhApi),
    "wazuh_indexer": _user_password(WazuhIndexer),
    "crowdsec": _crowdsec,
    "victoriametrics": _plain(VictoriaMetrics),
    "loki": _plain(Loki),
    "beszel": _user_password(BeszelHub),
    "telegram": _telegram,
    "mqtt": _mqtt,
    "llm": _llm,
}
