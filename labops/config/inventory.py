"""The lab's inventory: SSH hosts and extra HTTPS endpoints, beside what Proxmox lists."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labops.config.systems import Strict


class Host(Strict):
    """A host labops reaches: a Proxmox node, a container, a VM or any other machine."""

    name: str = Field(..., description="The name the operator uses (hostname or guest name).")
    kind: Literal["node", "container", "vm", "host"] = Field(
        "host", description="node (Proxmox), container (LXC), vm (QEMU) or host (anything else)."
    )
    address: str | None = Field(None, description="SSH address; defaults to the name.")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    vmid: int | None = Field(None, ge=100, le=999_999_999, description="Proxmox id of a guest.")
    node: str | None = Field(None, description="Proxmox node of a guest.")
    access: Literal["ssh", "pct"] = Field(
        "ssh", description="ssh: direct; pct: `pct exec` through the guest's node."
    )
    tags: list[str] = Field(
        default_factory=list, description="Free labels (policies select hosts by tag)."
    )


class HttpsEndpoint(Strict):
    """A TLS endpoint to watch: connect to address:port, present `name` as SNI."""

    name: str = Field(..., description="Host name expected in the certificate (SNI).")
    address: str | None = Field(None, description="Where to connect; defaults to the name.")
    port: int = Field(443, ge=1, le=65535)
    group: str | None = Field(None, description="Threshold group (see certificates.groups).")


class Inventory(Strict):
    """Hosts and endpoints beside the ones discovered from Proxmox, Traefik and DNS."""

    discover_from_proxmox: bool = Field(
        True, description="List nodes and guests from the Proxmox API."
    )
    container_access: Literal["ssh", "pct"] = Field(
        "ssh", description="Default way to reach containers that the host list does not name."
    )
    hosts: list[Host] = Field(default_factory=list, description="Hosts reached over SSH.")
    endpoints: list[HttpsEndpoint] = Field(
        default_factory=list, description="TLS endpoints whose certificates are watched."
    )
