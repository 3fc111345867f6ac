"""What the certificate sources answered: Proxmox nodes, the CA, DNS, Traefik (payloads only)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from labops.certificates.pve import PveCertificateInfo
from labops.models.traefik import TraefikRouter


class NodeCertificates(BaseModel):
    """One Proxmox node's certificate files and ACME setup, or why they could not be read."""

    node: str
    online: bool
    url: str | None = Field(None, description="The node's own API URL (probed).")
    acme: bool = Field(False, description="ACME domains configured: renewal possible.")
    certificates: list[PveCertificateInfo] = Field(default_factory=list)
    error: str | None = None


class CaBundle(BaseModel):
    """PEMs the CA publishes; ``intermediates`` is empty on step-ca < 0.27.3 (no endpoint)."""

    healthy: bool
    roots: list[str] = Field(default_factory=list)
    intermediates: list[str] = Field(default_factory=list)


class DnsRecord(BaseModel):
    """One record of the internal zone (Technitium)."""

    name: str
    type: str
    value: str
    disabled: bool = False


class Discovered(BaseModel):
    """The answers of the discovery sources, by source name (None: not asked, or it failed)."""

    traefik: list[TraefikRouter] | None = None
    technitium: list[DnsRecord] | None = None
    proxmox: list[NodeCertificates] | None = None
    step_ca: CaBundle | None = None

    @property
    def nodes(self) -> list[NodeCertificates]:
        return self.proxmox or []

    @property
    def roots(self) -> list[str]:
        return self.step_ca.roots if self.step_ca else []

    @property
    def intermediates(self) -> list[str]:
        return self.step_ca.intermediates if self.step_ca else []
