"""Where hosts answer SSH: the one lookup of a Proxmox node's SSH target (patch flow, restore
drill) and the host list the patch flow checks."""

from __future__ import annotations

from labops.config.inventory import Host
from labops.config.model import LabopsConfig
from labops.config.systems import ProxmoxNode
from labops.ssh import SshTarget


def inventory_hosts(config: LabopsConfig) -> list[Host]:
    """Inventory hosts plus the nodes whose SSH address ``systems.proxmox.nodes`` names."""
    hosts = list(config.inventory.hosts)
    names = {h.name for h in hosts}
    pve = config.systems.proxmox
    for name, node in (pve.nodes if pve else {}).items():
        if name not in names and node.ssh_host:
            hosts.append(Host(name=name, kind="node", address=node.ssh_host, port=node.ssh_port))
    return hosts


def node_target(config: LabopsConfig, node: str) -> SshTarget:
    """Where Proxmox node ``node`` answers SSH: its inventory entry, else its
    ``systems.proxmox.nodes`` override, else its own name on port 22."""
    for host in config.inventory.hosts:
        if host.name == node and host.kind == "node":
            return SshTarget(name=node, address=host.address or host.name, port=host.port)
    pve = config.systems.proxmox
    override = pve.nodes.get(node, ProxmoxNode()) if pve else ProxmoxNode()
    return SshTarget(name=node, address=override.ssh_host or node, port=override.ssh_port)
