"""The seeded lab: nodes, guests and hosts, reproducible from (size, seed).

Every service of the sandbox reads and changes one :class:`Lab`; the PVE API lists its guests, the
SSH fleet serves one host per running container and node, PBS holds their backups.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

GuestType = Literal["lxc", "qemu"]
OsName = Literal["debian12", "debian13", "ubuntu2404", "alpine320"]

# Names of a real-looking homelab; CT ids follow the usual "100s infra, 200s apps" habit.
_INFRA = [
    "dns-primary",
    "dns-secondary",
    "step-ca",
    "authentik",
    "wazuh",
    "crowdsec",
    "headscale",
    "victoriametrics",
    "grafana",
    "beszel",
    "traefik",
    "uptime-kuma",
    "semaphore",
    "pbs-proxy",
    "mqtt",
    "vaultwarden",
    "gitea",
    "postgres",
    "redis",
    "ntfy",
]
_APPS = [
    "nextcloud",
    "immich",
    "jellyfin",
    "paperless",
    "homeassistant",
    "n8n",
    "mealie",
    "linkwarden",
    "freshrss",
    "actual",
    "audiobookshelf",
    "calibre-web",
    "stirling-pdf",
    "it-tools",
    "searxng",
    "changedetection",
    "homepage",
    "glance",
    "ollama",
    "open-webui",
    "litellm",
    "agent-ops",
    "agent-sec",
    "agent-docs",
    "syncthing",
    "minio",
    "docmost",
    "wikijs",
    "excalidraw",
    "umami",
    "plausible",
    "listmonk",
    "kuma-status",
]


@dataclass
class Node:
    name: str
    ip: str
    online: bool = True
    on_demand: bool = False  # powered on only for backups (pve3 in the model lab)
    maxcpu: int = 8
    maxmem: int = 32 * 1024**3
    os: OsName = "debian13"


@dataclass
class Guest:
    vmid: int
    name: str
    node: str
    type: GuestType
    os: OsName
    ip: str
    status: Literal["running", "stopped"] = "running"
    template: bool = False
    tags: list[str] = field(default_factory=list)
    pool: str | None = None
    lock: str | None = None  # "backup", "snapshot", ... while a task holds it
    # Counts the boots PVE gave the guest (start, reboot), so the fleet sees a reboot it was
    # too slow to see as "stopped" in between.
    boots: int = 0
    maxmem: int = 1024**3
    maxdisk: int = 8 * 1024**3
    disk_used: int = 2 * 1024**3


@dataclass
class Lab:
    """The whole seeded state. Services mutate it under ``lock``."""

    seed: int
    nodes: list[Node]
    guests: list[Guest]
    cluster_name: str = "homelab"
    domain: str = "lab.internal"
    created: float = field(default_factory=time.time)
    # Per-host OS state (packages, reboot flags, locks), keyed by host name; owned by
    # sandbox/fleet, snapshotted and rolled back by the PVE API's LXC snapshots.
    hosts: dict[str, Any] = field(default_factory=dict)
    # State two services share, keyed by owner (e.g. "pbs": the datastore PVE's vzdump writes to).
    shared: dict[str, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def guest(self, vmid: int) -> Guest | None:
        return next((g for g in self.guests if g.vmid == vmid), None)


def generate_lab(containers: int = 52, vms: int = 3, seed: int = 42) -> Lab:
    """The default lab: pve1..pve4 (pve3 on demand), ``containers`` LXC plus the PBS container
    (53 LXC in all), ``vms`` QEMU guests and one template.

    Larger sizes (benchmarks ask for hundreds) reuse the name lists with numeric suffixes.
    """
    rng = random.Random(seed)
    nodes = [
        Node("pve1", "192.168.1.11", maxcpu=8),
        Node("pve2", "192.168.1.12", maxcpu=16, maxmem=64 * 1024**3),
        Node("pve3", "192.168.1.13", on_demand=True, maxcpu=4, maxmem=16 * 1024**3),
        Node("pve4", "192.168.1.14", maxcpu=8),
    ]
    weights: list[tuple[OsName, int]] = [
        ("debian12", 5),
        ("debian13", 3),
        ("ubuntu2404", 1),
        ("alpine320", 1),
    ]
    oses: list[OsName] = [name for name, count in weights for _ in range(count)]
    guests: list[Guest] = []
    names = _INFRA + _APPS
    for i in range(containers):
        base = names[i % len(names)]
        name = base if i < len(names) else f"{base}-{i // len(names) + 1}"
        vmid = 100 + i if i < 20 else 200 + (i - 20)
        # Infra containers rotate over the three always-on nodes; apps favour the big pve2.
        node = ("pve1", "pve2", "pve4")[i % 3] if i < 20 else ("pve2" if i % 4 else "pve4")
        if containers > 60:  # large labs spread evenly
            node = nodes[i % len(nodes)].name if nodes[i % len(nodes)].name != "pve3" else "pve2"
        tags = ["infra"] if i < 20 else ["app"]
        if i % 17 == 16:
            tags.append("nobackup")
        if i % 11 == 5:
            tags.append("rpo-7d")
        status: Literal["running", "stopped"] = "stopped" if i % 19 == 18 else "running"
        guests.append(
            Guest(
                vmid=vmid,
                name=name,
                node=node,
                type="lxc",
                os=rng.choice(oses),
                ip=_ip(vmid),
                tags=tags,
                status=status,
                pool="infra" if i < 20 else "apps",
                disk_used=rng.randint(1, 12) * 256 * 1024**2,
            )
        )
    for j in range(vms):
        vmid = 800 + j
        guests.append(
            Guest(
                vmid=vmid,
                name=["haos", "win11", "opnsense-lab"][j % 3] + ("" if j < 3 else f"-{j}"),
                node="pve2",
                type="qemu",
                os="debian12",
                ip=_ip(vmid),
                tags=["vm"],
                maxmem=4 * 1024**3,
                maxdisk=32 * 1024**3,
                disk_used=12 * 1024**3,
            )
        )
    guests.append(  # a template, so template handling is exercised
        Guest(
            vmid=9000,
            name="debian12-tpl",
            node="pve1",
            type="qemu",
            os="debian12",
            ip=_ip(9000),
            status="stopped",
            template=True,
            tags=["template"],
        )
    )
    # The on-demand backup node hosts PBS itself.
    guests.append(
        Guest(
            vmid=150,
            name="pbs",
            node="pve3",
            type="lxc",
            os="debian12",
            ip=_ip(150),
            tags=["infra", "backup"],
            pool="infra",
        )
    )
    return Lab(seed=seed, nodes=nodes, guests=guests)


def _ip(vmid: int) -> str:
    if vmid < 256:
        return f"192.168.1.{vmid}"
    return f"192.168.{2 + vmid // 250}.{vmid % 250 + 2}"
