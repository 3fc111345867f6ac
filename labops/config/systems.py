"""Endpoints and credentials of every system labops talks to. Every system is optional."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from labops.config.secrets import SecretRef


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


class Endpoint(Strict):
    """An HTTP(S) system: URL, TLS options, retry policy, or a saved Prefect block."""

    url: AnyHttpUrl | None = Field(None, description="Base URL of the system's API.")
    block: str | None = Field(None, description="Name of a saved labops block to use instead.")
    tls: TlsOptions = TlsOptions()
    retry: HttpRetry = HttpRetry()


class ProxmoxNode(Strict):
    """Per-node overrides: where its own API and SSH answer (for certificate probes and SSH)."""

    url: AnyHttpUrl | None = Field(None, description="This node's own API URL (:8006).")
    ssh_host: str | None = Field(None, description="Address for SSH to this node.")
    ssh_port: int = Field(22, ge=1, le=65535)


class ProxmoxSystem(Endpoint):
    """Proxmox VE cluster API (any node's https://host:8006)."""

    token_id: str = Field(
        ..., pattern=r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$", description="USER@REALM!TOKENID"
    )
    token_secret: SecretRef = Field(..., description="The token's UUID secret (a reference).")
    nodes: dict[str, ProxmoxNode] = Field(default_factory=dict)


class PbsSystem(Endpoint):
    """Proxmox Backup Server API (https://host:8007)."""

    token_id: str = Field(..., pattern=r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$")
    token_secret: SecretRef
    datastore: str = Field("store1", description="Datastore holding the lab's backups.")
    pve_storage: str | None = Field(
        None, description="Name of the PVE storage that points at this datastore."
    )


class SshJump(Strict):
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str = "root"


class SshSystem(Strict):
    """How labops reaches hosts over SSH (keys only, strict host keys by default)."""

    user: str = Field("root", description="Login user.")
    key_file: Path = Field(..., description="Private key (OpenSSH format).")
    key_passphrase: SecretRef | None = None
    known_hosts: Path = Field(..., description="known_hosts file checked strictly.")
    trust_on_first_use: bool = Field(
        False, description="Accept and record unknown keys (changed keys are always refused)."
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(120.0, gt=0)
    max_output_bytes: int = Field(1_000_000, gt=0, description="Output beyond this is cut.")
    jump_host: SshJump | None = None
    parallel: int = Field(50, ge=1, le=1000, description="Hosts worked on at once.")


class TokenEndpoint(Endpoint):
    """An HTTP API with one bearer-style token (Technitium, Traefik behind auth...)."""

    token: SecretRef | None = None


class UserPasswordEndpoint(Endpoint):
    username: str | None = None
    password: SecretRef | None = None


class TraefikSystem(UserPasswordEndpoint):
    """Traefik API (routers) and the entrypoint address where HTTPS services are probed."""

    entrypoint: str = Field(
        "127.0.0.1:443", description="host:port of the websecure entrypoint to probe with SNI."
    )


class TechnitiumSystem(TokenEndpoint):
    zone: str = Field(..., description="The internal zone, e.g. lab.internal.")


class WazuhSystem(Strict):
    api: UserPasswordEndpoint | None = None
    indexer: UserPasswordEndpoint | None = None


class CrowdsecSystem(Endpoint):
    machine_id: str | None = None
    machine_password: SecretRef | None = None
    bouncer_key: SecretRef | None = None


class BeszelSystem(UserPasswordEndpoint):
    pass


class TelegramSystem(Endpoint):
    """Telegram Bot API (url defaults to the public API; the sandbox serves its own)."""

    bot_token: SecretRef
    chat_id: str


class MqttSystem(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretRef | None = None
    tls: bool = False
    ca_bundle: Path | None = None
    topic_prefix: str = Field("labops", description="Root of every topic labops publishes.")
    qos: int = Field(1, ge=0, le=2)
    block: str | None = None


class LlmModel(Strict):
    """One model in the LLM failover chain (litellm names, e.g. openai/gpt-4o-mini)."""

    model: str
    api_base: AnyHttpUrl | None = None
    api_key: SecretRef | None = None


class LlmSystem(Strict):
    models: list[LlmModel] = Field(..., min_length=1, description="Tried in order.")
    timeout_s: float = Field(30.0, gt=0)
    max_input_tokens: int = Field(6000, gt=0)
    max_output_tokens: int = Field(800, gt=0)
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
