"""The SSH fleet of the sandbox homelab: one real SSH server (asyncssh) per Proxmox node and per LXC
container, each with its own host key and simulated OS state (packages, pending updates, reboot
flags, needrestart, services, dpkg locks) and a command interpreter printing the real tools' output.

The runner finds :data:`SERVICE`; see ``server.FleetService`` for the control API and faults.
"""

from sandbox.fleet.server import FleetService

SERVICE = FleetService

__all__ = ["SERVICE", "FleetService"]
