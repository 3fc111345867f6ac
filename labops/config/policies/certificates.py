"""Policy of the certificates operation (owned by its flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from labops.config.systems import Strict


class Thresholds(Strict):
    """When a certificate is a warning or critical: in days left AND as a fraction of its
    lifetime left; the worse of the two applies. A days threshold longer than
    ``days_max_lifetime_fraction`` of a certificate's lifetime is not applied to it, so a 24 h
    step-ca certificate is judged against its own lifetime, not against "7 days"."""

    warning_days: float = Field(21, ge=0, description="Warning when fewer days are left.")
    critical_days: float = Field(7, ge=0, description="Critical when fewer days are left.")
    warning_fraction: float = Field(
        0.15, ge=0, le=1, description="Warning when less than this fraction of lifetime is left."
    )
    critical_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Critical when less than this fraction of lifetime is left.",
    )
    days_max_lifetime_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Skip a days threshold longer than this fraction of the cert's lifetime.",
    )
    renewal_lag_fraction: float | None = Field(
        2 / 3,
        gt=0,
        lt=1,
        description="Elapsed lifetime after which an ACME client should have renewed "
        "(null: no renewal-lag check).",
    )
    renewal_max_lifetime_days: float = Field(
        100, gt=0, description="Only certificates this short-lived are taken as ACME-renewed."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.critical_days > self.warning_days:
            raise ValueError("critical_days must not exceed warning_days")
        if self.critical_fraction > self.warning_fraction:
            raise ValueError("critical_fraction must not exceed warning_fraction")
        return self


class RenewalPolicy(Strict):
    """Ordering renewals where the API allows it (Proxmox nodes with ACME). Off by default."""

    enabled: bool = Field(False, description="Order renewals at all (dry-run still only plans).")
    only_when: Literal["critical", "warning"] = Field(
        "critical",
        description="Renew only certificates at this level or worse (default: critical).",
    )
    force: bool = Field(
        True, description="Send force=1 (PVE refuses renewal >30 days before expiry otherwise)."
    )
    task_timeout_s: float = Field(300, gt=0, description="Wait this long for the renew task.")


class CertificateSources(Strict):
    """Where targets are discovered; a source whose system is not configured is skipped."""

    config: bool = True
    traefik: bool = True
    technitium: bool = True
    proxmox: bool = True
    pbs: bool = True
    step_ca: bool = True


class DnsDiscovery(Strict):
    """How records of the internal zone (Technitium) become targets."""

    traefik_addresses: list[str] = Field(
        default_factory=list,
        description="IPs of Traefik: records pointing there are probed through the entrypoint.",
    )
    direct_ports: list[int] = Field(
        default_factory=list,
        description="Ports to probe on every other record's address (none by default: most "
        "hosts serve no TLS, and Traefik's routers are found through its API).",
    )


class CertificatePolicy(Strict):
    """What the certificates flow does and its limits."""

    thresholds: Thresholds = Thresholds()
    groups: dict[str, Thresholds] = Field(
        default_factory=dict, description="Thresholds per group (endpoint `group:`)."
    )
    targets: dict[str, Thresholds] = Field(
        default_factory=dict, description="Thresholds per target host name (wins over group)."
    )
    concurrency: int = Field(64, ge=1, le=1024, description="Endpoints probed at once.")
    connect_timeout_s: float = Field(3.0, gt=0, description="TCP connect timeout per target.")
    handshake_timeout_s: float = Field(5.0, gt=0, description="TLS handshake timeout per target.")
    trusted_roots: list[Path] = Field(
        default_factory=list, description="PEM files of internal roots (step-ca's root...)."
    )
    use_system_store: bool = Field(True, description="Also trust the machine's CA store.")
    weak_rsa_bits: int = Field(2048, ge=1024, description="RSA keys below this are weak.")
    reminder_hours: float = Field(
        24, gt=0, description="Remind about what stays critical this often (no other repeats)."
    )
    renewal: RenewalPolicy = RenewalPolicy()
    sources: CertificateSources = CertificateSources()
    dns: DnsDiscovery = DnsDiscovery()
    batch_size: int = Field(
        2000, ge=1, description="Endpoints per probing task run (each batch probes concurrently)."
    )
    traefik_page_size: int = Field(100, ge=1, le=1000, description="per_page of router lists.")

    def thresholds_for(self, name: str, group: str | None) -> Thresholds:
        """Target name first, then its group, then the defaults."""
        if name in self.targets:
            return self.targets[name]
        if group and group in self.groups:
            return self.groups[group]
        return self.thresholds
