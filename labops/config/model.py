"""The one labops config file, validated as a whole."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from labops.config.inventory import Inventory
from labops.config.policies.backups import BackupPolicy
from labops.config.policies.certificates import CertificatePolicy
from labops.config.policies.digest import DigestPolicy
from labops.config.policies.docs import DocsPolicy
from labops.config.policies.patching import PatchPolicy
from labops.config.policies.platform import PlatformPolicy
from labops.config.systems import Strict, Systems


class Lab(Strict):
    """The lab as a whole: its name, time zone, UI link and state directory."""

    name: str = Field(
        "homelab",
        min_length=1,
        description="Shown in reports and notifications; every artifact key, concurrency limit, "
        "metric (label lab) and MQTT notification topic of the lab carries it, so labs sharing "
        "one Prefect server, VictoriaMetrics or broker never see each other's results (the "
        "bridge's run and event prefixes are set per lab under platform).",
    )
    timezone: str = Field("UTC", description="IANA zone for schedules and windows.")
    ui_url: str | None = Field(
        None,
        description="Prefect UI base URL for links in reports and notifications, when the "
        "operator reaches the UI elsewhere than PREFECT_UI_URL (or the UI of PREFECT_API_URL) "
        "says, e.g. through a reverse proxy. Unset: the server the run reports to.",
    )
    state_dir: Path = Field(
        Path(".labops/state"), description="Where flows keep what they compare run to run."
    )


class LabopsConfig(Strict):
    """Root of the config file."""

    lab: Lab = Lab()
    systems: Systems = Systems()
    inventory: Inventory = Inventory()
    backups: BackupPolicy = BackupPolicy()
    certificates: CertificatePolicy = CertificatePolicy()
    patching: PatchPolicy = PatchPolicy()
    digest: DigestPolicy = DigestPolicy()
    docs: DocsPolicy = DocsPolicy()
    platform: PlatformPolicy = PlatformPolicy()
