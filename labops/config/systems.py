"""The ``systems:`` part of the config: for each system labops talks to, its settings (declared
once, beside the system's client), references to its secrets and an optional saved block.

A section inherits its system's settings model, so ``config.systems.proxmox.url`` reads the same
as before; the secret keys hold references (``env:``, ``file:``, ``block:``), never secrets. Every
system is optional.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from labops.config.secrets import HELD_BY_BLOCK, SecretRef, is_secret_field
from labops.http_settings import (
    BeszelSettings,
    CrowdsecSettings,
    HttpRetry,
    LokiSettings,
    StepCaSettings,
    TechnitiumSettings,
    TlsOptions,
    TraefikSettings,
    VictoriaMetricsSettings,
    WazuhApiSettings,
    WazuhIndexerSettings,
)
from labops.llm_settings import LlmModelSettings, LlmSettings
from labops.notify.settings import AppriseTarget, MqttSettings, TelegramSettings
from labops.proxmox_settings import PbsOffsiteSettings, PbsSettings, ProxmoxNode, ProxmoxSettings
from labops.settings import Strict
from labops.ssh_settings import SshJump, SshSettings

__all__ = [  # the settings' parts that config users name (re-exported, declared beside clients)
    "HttpRetry",
    "ProxmoxNode",
    "SshJump",
    "Strict",
    "TlsOptions",
]

IN_BLOCK = "(in the saved block)"
"""What a key the config leaves out holds when the system names a saved block."""


class Section(Strict):
    """A system's config section: may name a saved labops block, and its other required keys may
    then be left out (they hold placeholders; ``blocks.factory`` loads the block and never reads
    them)."""

    block: str | None = Field(None, description="Name of a saved labops block to use instead.")

    @model_validator(mode="before")
    @classmethod
    def _block_stands_for_the_rest(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("block"):
            return data
        filled = dict(data)
        for name, field in cls.model_fields.items():
            if name in filled or not field.is_required():
                continue
            if is_secret_field(field):
                filled[name] = HELD_BY_BLOCK
            elif name == "token_id":
                filled[name] = "saved@block!block"
            else:
                filled[name] = IN_BLOCK
        return filled


class ProxmoxSystem(ProxmoxSettings, Section):
    """Proxmox VE cluster API (any node's https://host:8006)."""

    token_secret: SecretRef = Field(..., description="The token's UUID secret (a reference).")


class PbsSystem(PbsSettings, Section):
    """Proxmox Backup Server API (https://host:8007)."""

    token_secret: SecretRef = Field(..., description="The token's secret (a reference).")


class PbsOffsiteSystem(PbsOffsiteSettings, Section):
    """The off-site Proxmox Backup Server (https://host:8007), read directly."""

    token_secret: SecretRef = Field(..., description="The token's secret (a reference).")


class SshSystem(SshSettings, Section):
    """How labops reaches hosts over SSH (keys only, strict host keys by default)."""

    key_passphrase: SecretRef | None = Field(
        None, description="Passphrase of the key, if it has one (a reference)."
    )


class TraefikSystem(TraefikSettings, Section):
    """Traefik API (routers) and the entrypoint address where HTTPS services are probed."""

    password: SecretRef | None = Field(None, description="Basic-auth password (a reference).")


class StepCaSystem(StepCaSettings, Section):
    """The lab's step-ca certificate authority."""


class TechnitiumSystem(TechnitiumSettings, Section):
    """Technitium DNS server API (:5380) with a non-expiring API token."""

    token: SecretRef | None = Field(None, description="API token (a reference).")


class WazuhApiSystem(WazuhApiSettings, Section):
    """Wazuh manager API (https://host:55000), an API user."""

    password: SecretRef | None = Field(None, description="The user's password (a reference).")


class WazuhIndexerSystem(WazuhIndexerSettings, Section):
    """Wazuh indexer (https://host:9200), a user allowed to read wazuh-alerts-*."""

    password: SecretRef | None = Field(None, description="The user's password (a reference).")


class WazuhSystem(Strict):
    """Wazuh: the manager API (agents) and the indexer (alerts)."""

    api: WazuhApiSystem | None = Field(
        None, description="Manager API (https://host:55000), an API user."
    )
    indexer: WazuhIndexerSystem | None = Field(
        None, description="Indexer (https://host:9200), a user allowed to read wazuh-alerts-*."
    )


class CrowdsecSystem(CrowdsecSettings, Section):
    """CrowdSec Local API (:8080): a machine login for alerts, a bouncer key for decisions."""

    machine_password: SecretRef | None = Field(
        None, description="The machine's password (a reference)."
    )
    bouncer_key: SecretRef | None = Field(
        None, description="Bouncer API key: cscli bouncers add (a reference)."
    )


class VictoriaMetricsSystem(VictoriaMetricsSettings, Section):
    """VictoriaMetrics (:8428), where labops pushes its metrics."""


class LokiSystem(LokiSettings, Section):
    """Loki (:3100), whose logs the security digest reads."""


class BeszelSystem(BeszelSettings, Section):
    """Beszel hub (PocketBase, :8090): a user's e-mail as username and its password."""

    password: SecretRef | None = Field(None, description="The user's password (a reference).")


class TelegramSystem(TelegramSettings, Section):
    """Telegram Bot API (url defaults to the public API; the sandbox serves its own)."""

    bot_token: SecretRef = Field(..., description="The bot's token (a reference).")


class MqttSystem(MqttSettings, Section):
    """An MQTT broker where reports are published (Home Assistant, Node-RED...)."""

    password: SecretRef | None = Field(None, description="Login password (a reference).")


class LlmModel(LlmModelSettings):
    """One model in the LLM failover chain, with a reference to its provider's API key."""

    api_key: SecretRef | None = Field(None, description="The provider's API key (a reference).")


class LlmSystem(LlmSettings):
    """The optional LLM failover chain for summaries (never sees secrets or raw logs)."""

    models: list[LlmModel] = Field(..., min_length=1, description="Tried in order.")


class Systems(Strict):
    """Every system labops can use; leave one out and the flows say what they skipped."""

    proxmox: ProxmoxSystem | None = None
    pbs: PbsSystem | None = None
    pbs_offsite: PbsOffsiteSystem | None = Field(
        None, description="The off-site PBS, when labops can reach it (read only)."
    )
    ssh: SshSystem | None = None
    traefik: TraefikSystem | None = None
    step_ca: StepCaSystem | None = None
    technitium: TechnitiumSystem | None = None
    wazuh: WazuhSystem | None = None
    crowdsec: CrowdsecSystem | None = None
    victoriametrics: VictoriaMetricsSystem | None = None
    loki: LokiSystem | None = None
    beszel: BeszelSystem | None = None
    telegram: TelegramSystem | None = None
    mqtt: MqttSystem | None = None
    apprise: list[AppriseTarget] = Field(
        default_factory=list,
        description="More notification targets through Apprise (ntfy, Gotify, Pushover, e-mail, "
        "Discord, Matrix, Slack...) or saved Prefect notification blocks, each with its routing.",
    )
    llm: LlmSystem | None = None

    @model_validator(mode="after")
    def _target_names_unique(self) -> Systems:
        names = [t.name for t in self.apprise]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"apprise: target names must be unique ({', '.join(doubled)})")
        return self
