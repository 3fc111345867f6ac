"""Endpoints and credentials of every system labops talks to. Every system is optional."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from labops.config.secrets import HELD_BY_BLOCK, SecretRef, is_secret_field


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsOptions(Strict):
    """How a client verifies the server's certificate. Verification is on by default."""

    verify: bool = Field(True, description="Verify the server certificate (keep on).")
    ca_bundle: Path | None = Field(
        None, description="PEM file of the CA(s) to trust, e.g. the lab's step-ca root."
    )
    server_name: str | None = Field(
        None, description="Host name to verify instead of the URL's host (SNI override)."
    )


class HttpRetry(Strict):
    """The one HTTP retry policy: timeouts, exponential backoff with jitter, Retry-After."""

    timeout_s: float = Field(15.0, gt=0, description="Connect+read timeout of one request.")
    attempts: int = Field(4, ge=1, le=10, description="Tries in all, the first included.")
    backoff_s: float = Field(0.5, ge=0, description="First backoff; doubles each retry.")
    backoff_max_s: float = Field(10.0, ge=0, description="Largest backoff between two tries.")
    jitter: float = Field(0.3, ge=0, le=1, description="Random fraction added to each backoff.")
    deadline_s: float = Field(
        120.0,
        gt=0,
        description=(
            "Longest one try may take, connect to last byte: a server that trickles its answer "
            "resets timeout_s with every byte, never this."
        ),
    )
    max_response_bytes: int = Field(
        64 * 1024**2,
        gt=0,
        description="Largest answer read (decompressed); a larger one is refused, not retried.",
    )


IN_BLOCK = "(in the saved block)"
"""What a key the config leaves out holds when the system names a saved block."""


class SavedBlockOk(Strict):
    """A system that may name a saved labops block: its other required keys may then be left
    out (they hold placeholders; ``blocks.factory`` loads the block and never reads them)."""

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


class Endpoint(SavedBlockOk):
    """An HTTP(S) system: URL, TLS options, retry policy, or a saved Prefect block."""

    url: AnyHttpUrl | None = Field(None, description="Base URL of the system's API.")
    block: str | None = Field(None, description="Name of a saved labops block to use instead.")
    tls: TlsOptions = TlsOptions()
    retry: HttpRetry = HttpRetry()


class ProxmoxNode(Strict):
    """Per-node overrides: where its own API and SSH answer (for certificate probes and SSH)."""

    url: AnyHttpUrl | None = Field(None, description="This node's own API URL (:8006).")
    ssh_host: str | None = Field(None, description="Address for SSH to this node.")
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port of this node.")


class ProxmoxSystem(Endpoint):
    """Proxmox VE cluster API (any node's https://host:8006)."""

    token_id: str = Field(
        ..., pattern=r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$", description="USER@REALM!TOKENID"
    )
    token_secret: SecretRef = Field(..., description="The token's UUID secret (a reference).")
    nodes: dict[str, ProxmoxNode] = Field(default_factory=dict)


class PbsSystem(Endpoint):
    """Proxmox Backup Server API (https://host:8007)."""

    token_id: str = Field(
        ..., pattern=r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$", description="USER@REALM!TOKENID"
    )
    token_secret: SecretRef = Field(..., description="The token's secret (a reference).")
    datastore: str = Field("store1", description="Datastore holding the lab's backups.")
    pve_storage: str | None = Field(
        None, description="Name of the PVE storage that points at this datastore."
    )


class SshJump(Strict):
    """A bastion every SSH connection goes through."""

    host: str = Field(..., description="Address of the jump host.")
    port: int = Field(22, ge=1, le=65535, description="Its SSH port.")
    user: str = Field("root", description="Login user on the jump host.")


class SshSystem(SavedBlockOk):
    """How labops reaches hosts over SSH (keys only, strict host keys by default)."""

    user: str = Field("root", description="Login user.")
    key_file: Path = Field(..., description="Private key (OpenSSH format).")
    key_passphrase: SecretRef | None = Field(
        None, description="Passphrase of the key, if it has one (a reference)."
    )
    known_hosts: Path = Field(..., description="known_hosts file checked strictly.")
    trust_on_first_use: bool = Field(
        False, description="Accept and record unknown keys (changed keys are always refused)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + SSH handshake timeout.")
    command_timeout_s: float = Field(
        120.0, gt=0, description="Default timeout of one remote command."
    )
    max_output_bytes: int = Field(1_000_000, gt=0, description="Output beyond this is cut.")
    jump_host: SshJump | None = Field(None, description="Bastion to go through, if any.")
    parallel: int = Field(50, ge=1, le=1000, description="Hosts worked on at once.")
    block: str | None = Field(None, description="Name of a saved SSH Credentials block instead.")


class TokenEndpoint(Endpoint):
    """An HTTP API with one bearer-style token (Technitium, Traefik behind auth...)."""

    token: SecretRef | None = Field(None, description="API token (a reference).")


class UserPasswordEndpoint(Endpoint):
    """An HTTP API with a user and password (basic auth or a login call)."""

    username: str | None = Field(None, description="API user.")
    password: SecretRef | None = Field(None, description="The user's password (a reference).")


class TraefikSystem(UserPasswordEndpoint):
    """Traefik API (routers) and the entrypoint address where HTTPS services are probed."""

    entrypoint: str = Field(
        "127.0.0.1:443", description="host:port of the websecure entrypoint to probe with SNI."
    )


class TechnitiumSystem(TokenEndpoint):
    """Technitium DNS server API (:5380) with a non-expiring API token."""

    zone: str = Field(..., description="The internal zone, e.g. lab.internal.")


class WazuhSystem(Strict):
    """Wazuh: the manager API (agents) and the indexer (alerts)."""

    api: UserPasswordEndpoint | None = Field(
        None, description="Manager API (https://host:55000), an API user."
    )
    indexer: UserPasswordEndpoint | None = Field(
        None, description="Indexer (https://host:9200), a user allowed to read wazuh-alerts-*."
    )


class CrowdsecSystem(Endpoint):
    """CrowdSec Local API (:8080): a machine login for alerts, a bouncer key for decisions."""

    machine_id: str | None = Field(None, description="Machine (watcher) id: cscli machines add.")
    machine_password: SecretRef | None = Field(
        None, description="The machine's password (a reference)."
    )
    bouncer_key: SecretRef | None = Field(
        None, description="Bouncer API key: cscli bouncers add (a reference)."
    )


class BeszelSystem(UserPasswordEndpoint):
    """Beszel hub (PocketBase, :8090): a user's e-mail as username and its password."""


class TelegramSystem(Endpoint):
    """Telegram Bot API (url defaults to the public API; the sandbox serves its own)."""

    bot_token: SecretRef = Field(..., description="The bot's token (a reference).")
    chat_id: str = Field(..., description="Chat or @channel that receives the messages.")


class MqttSystem(Strict):
    """An MQTT broker where reports are published (Home Assistant, Node-RED...)."""

    host: str = Field("127.0.0.1", description="Broker address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 with TLS).")
    username: str | None = Field(None, description="Login user, if the broker wants one.")
    password: SecretRef | None = Field(None, description="Login password (a reference).")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_bundle: Path | None = Field(None, description="CA file verifying the broker (TLS).")
    topic_prefix: str = Field("labops", description="Root of every topic labops publishes.")
    qos: int = Field(1, ge=0, le=2, description="MQTT quality of service of the messages.")
    block: str | None = Field(None, description="Name of a saved MQTT Broker block instead.")


class LlmModel(Strict):
    """One model in the LLM failover chain (litellm names, e.g. openai/gpt-4o-mini)."""

    model: str = Field(..., description="litellm model name, provider/model.")
    api_base: AnyHttpUrl | None = Field(
        None, description="Base URL for self-hosted or proxied models (Ollama, LiteLLM proxy)."
    )
    api_key: SecretRef | None = Field(None, description="The provider's API key (a reference).")


class LlmSystem(Strict):
    """The optional LLM failover chain for summaries (never sees secrets or raw logs)."""

    models: list[LlmModel] = Field(..., min_length=1, description="Tried in order.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one model call.")
    max_input_tokens: int = Field(6000, gt=0, description="Prompt budget in tokens.")
    max_output_tokens: int = Field(800, gt=0, description="Answer budget in tokens.")
    max_cost_usd: float = Field(0.05, ge=0, description="Budget for one summary.")


class Systems(Strict):
    """Every system labops can use; leave one out and the flows say what they skipped."""

    proxmox: ProxmoxSystem | None = None
    pbs: PbsSystem | None = None
    ssh: SshSystem | None = None
    traefik: TraefikSystem | None = None
    step_ca: Endpoint | None = None
    technitium: TechnitiumSystem | None = None
    wazuh: WazuhSystem | None = None
    crowdsec: CrowdsecSystem | None = None
    victoriametrics: Endpoint | None = None
    loki: Endpoint | None = None
    beszel: BeszelSystem | None = None
    telegram: TelegramSystem | None = None
    mqtt: MqttSystem | None = None
    llm: LlmSystem | None = None
