"""Models crossing the TLS modules: what to probe, what a probe saw, what a certificate is."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Target(BaseModel):
    """One TLS endpoint: connect to ``address:port`` and present ``name`` as SNI.

    ``key`` identifies the target for de-duplication: the same name reached at the same place is
    one target, however many sources (config, Traefik, DNS, Proxmox) name it.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(..., description="Host name expected in the certificate and sent as SNI.")
    address: str = Field(..., description="Where to connect (IP or host name).")
    port: int = Field(443, ge=1, le=65535)
    sources: tuple[str, ...] = Field((), description="Who named it: config, traefik:<router> ...")
    group: str | None = Field(None, description="Threshold group of the certificates policy.")
    kind: str = Field("service", description="service, node, pbs, ca: how the operator sees it.")
    node: str | None = Field(None, description="Proxmox node whose own certificate this is.")
    ca_bundle: str | None = Field(
        None,
        description="PEM file also trusted for this endpoint: the tls.ca_bundle of the system "
        "it belongs to (a PVE node, PBS, step-ca), as that system's API client trusts it.",
    )

    @property
    def key(self) -> str:
        return f"{self.name.lower().rstrip('.')}@{self.address.lower()}:{self.port}"

    @property
    def label(self) -> str:
        """How reports name it: ``grafana.lab:443`` (plus ``via`` when connected elsewhere)."""
        base = f"{self.name}:{self.port}"
        if self.address.lower() != self.name.lower():
            base = f"{base} via {self.address}"
        return f"node {self.node} ({base})" if self.node else base


class CertInfo(BaseModel):
    """The facts of one certificate that the classifier and the report need."""

    subject: str
    issuer: str
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    dns_names: list[str] = Field(default_factory=list)
    ip_addresses: list[str] = Field(default_factory=list)
    is_ca: bool = False
    self_signed: bool = False
    key_type: str = Field(..., description="RSA, EC P-256, Ed25519 ...")
    key_bits: int = 0
    signature_algorithm: str = ""

    @property
    def lifetime_s(self) -> float:
        return max(1.0, (self.not_after - self.not_before).total_seconds())


class ChainVerdict(StrEnum):
    """What chain validation concluded, before time and thresholds are considered."""

    TRUSTED = "trusted"
    SELF_SIGNED = "self_signed"
    UNKNOWN_ROOT = "unknown_root"
    UNKNOWN_ISSUER = "unknown_issuer"
    INCOMPLETE = "incomplete"
    INVALID = "invalid"


class ChainCheck(BaseModel):
    verdict: ChainVerdict
    detail: str = ""
    hostname_ok: bool = True
    completed_with: list[str] = Field(
        default_factory=list, description="Known intermediates the server should have sent."
    )
    anchor: CertInfo | None = Field(None, description="The trusted root the path ends at.")
