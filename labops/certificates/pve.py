"""Certificate payloads of the Proxmox API (``/nodes/{node}/certificates/info``)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class PveCertificateInfo(BaseModel):
    """One item of ``GET /nodes/{node}/certificates/info`` (root CA, pve-ssl, pveproxy-ssl)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    filename: str
    fingerprint: str | None = None
    subject: str | None = None
    issuer: str | None = None
    notbefore: int | None = None
    notafter: int | None = None
    san: list[str] = Field(default_factory=list)
    pem: str | None = None
    public_key_type: str | None = Field(None, alias="public-key-type")
    public_key_bits: int | None = Field(None, alias="public-key-bits")

    @property
    def not_after(self) -> datetime | None:
        return None if self.notafter is None else datetime.fromtimestamp(self.notafter, UTC)


def effective_certificate(items: list[PveCertificateInfo]) -> PveCertificateInfo | None:
    """What pveproxy serves: ``pveproxy-ssl.pem`` when present, else ``pve-ssl.pem``."""
    by_name = {i.filename: i for i in items}
    return by_name.get("pveproxy-ssl.pem") or by_name.get("pve-ssl.pem")
