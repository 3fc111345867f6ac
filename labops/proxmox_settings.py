"""Settings of the Proxmox VE and PBS clients (``labops.proxmox``): API URL, token id, TLS.

The token's secret is not here: the config holds a reference to it, a block holds it, and the
clients take it beside these settings. Kept apart from ``labops.proxmox`` so that loading the
config does not import proxmoxer.
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field

from labops.http_settings import HttpSettings
from labops.settings import Strict

TOKEN_ID = r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$"


class ProxmoxNode(Strict):
    """Per-node overrides: where its own API and SSH answer (for certificate probes and SSH)."""

    url: AnyHttpUrl | None = Field(None, description="This node's own API URL (:8006).")
    ssh_host: str | None = Field(None, description="Address for SSH to this node.")
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port of this node.")


class ProxmoxSettings(HttpSettings):
    """Proxmox VE cluster API (any node's https://host:8006) and the token labops uses."""

    token_id: str = Field(..., pattern=TOKEN_ID, description="USER@REALM!TOKENID")
    nodes: dict[str, ProxmoxNode] = Field(
        default_factory=dict, description="Per-node API URL and SSH address overrides."
    )


class PbsSettings(HttpSettings):
    """Proxmox Backup Server API (https://host:8007), the token and the lab's datastore."""

    token_id: str = Field(..., pattern=TOKEN_ID, description="USER@REALM!TOKENID")
    datastore: str = Field("store1", description="Datastore holding the lab's backups.")
    pve_storage: str | None = Field(
        None, description="Name of the PVE storage that points at this datastore."
    )


class PbsOffsiteSettings(PbsSettings):
    """The off-site Proxmox Backup Server, read directly: its datastore (``datastore``), the
    pull sync jobs it runs to copy the lab's backups from the home PBS (``systems.pbs``, one of
    its remotes) and their task logs. Its targets are named ``<name>:<store>[/<ns>]``, like a
    push job's on the home PBS: name it as the home PBS's remote.cfg names it, and push targets
    to it are read directly too."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$",
        description="How targets name this PBS (as the home PBS's remote for it, e.g. pbs2).",
    )
    home_remote: str = Field(
        ...,
        description="The name this PBS's remote.cfg gives the home PBS (systems.pbs): its pull "
        "jobs from that remote are the lab's off-site copies.",
    )
