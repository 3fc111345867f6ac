"""Settings of the HTTP client (TLS, retry policy, base URL) and of the systems labops reaches
through it alone: Traefik, step-ca, Technitium, Wazuh, CrowdSec, VictoriaMetrics, Loki, Beszel.

No secret here: the config adds secret references, a block adds the secrets (see
``labops.settings``). Kept apart from ``labops.http`` so that loading the config imports no
HTTP library.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field

from labops.errors import ConfigError
from labops.settings import Strict


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


class HttpSettings(Strict):
    """An HTTP(S) system: its base URL, TLS verification and retry policy."""

    url: AnyHttpUrl | None = Field(None, description="Base URL of the system's API.")
    tls: TlsOptions = Field(
        default_factory=TlsOptions,
        description="Certificate verification (on by default) and an optional CA bundle.",
    )
    retry: HttpRetry = Field(
        default_factory=HttpRetry,
        description="Timeout and retry policy of every request (never retries 401/403).",
    )

    @property
    def base_url(self) -> str:
        """The URL without its trailing slash; ``ConfigError`` when none is set."""
        if self.url is None:
            raise ConfigError("url: required (or name a saved block with `block:`)")
        return str(self.url).rstrip("/")


class TraefikSettings(HttpSettings):
    """Traefik API (routers) and the entrypoint address where HTTPS services are probed."""

    username: str | None = Field(None, description="Basic-auth user of the API, if any.")
    entrypoint: str = Field(
        "127.0.0.1:443", description="host:port of the websecure entrypoint to probe with SNI."
    )


class StepCaSettings(HttpSettings):
    """The lab's step-ca (its read endpoints need no credentials)."""


class TechnitiumSettings(HttpSettings):
    """Technitium DNS server API (:5380) and the lab's internal zone."""

    zone: str = Field(..., description="The internal zone, e.g. lab.internal.")


class WazuhApiSettings(HttpSettings):
    """Wazuh manager API (https://host:55000) and its API user."""

    username: str | None = Field(None, description="API user, e.g. wazuh-wui.")


class WazuhIndexerSettings(HttpSettings):
    """Wazuh indexer (https://host:9200) and a user allowed to read wazuh-alerts-*."""

    username: str | None = Field(None, description="Indexer user, e.g. labops-reader.")


class CrowdsecSettings(HttpSettings):
    """CrowdSec Local API (:8080): the machine (watcher) that reads alerts."""

    machine_id: str | None = Field(None, description="Machine (watcher) id: cscli machines add.")


class VictoriaMetricsSettings(HttpSettings):
    """VictoriaMetrics single node (:8428): labops pushes its metrics and queries others'."""


class LokiSettings(HttpSettings):
    """Loki (:3100), whose logs the security digest reads."""

    tenant: str | None = Field(None, description="X-Scope-OrgID of a multi-tenant Loki.")


class BeszelSettings(HttpSettings):
    """Beszel hub (PocketBase, :8090) and the user (an e-mail) labops logs in as."""

    username: str | None = Field(None, description="User e-mail (PocketBase identity).")
