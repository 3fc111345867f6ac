"""The OS state of each simulated host, and its seeding from the lab.

A :class:`HostState` lives in ``lab.hosts[name]``. It holds only plain data (str, int, float, bool,
lists and dicts), because the PVE API's LXC snapshot/rollback deep-copies it; the fleet therefore
looks the state up by name on every command and never keeps a reference across awaits.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.fleet.catalog import (
    CATALOG,
    PVE_KERNEL_NEW,
    PVE_KERNEL_RUNNING,
    PVE_NEW_KERNEL,
    RELEASES,
    CatalogEntry,
)
from sandbox.lab import Guest, Lab

DATA = Path(__file__).parent / "data"

# Main service of a container, from its name; everything else runs a unit named like the guest.
_SERVICE_OF = {
    "postgres": "postgresql",
    "grafana": "grafana-server",
    "dns-primary": "dns",
    "dns-secondary": "dns",
    "pbs": "proxmox-backup-proxy",
    "mqtt": "mosquitto",
    "redis": "redis-server",
    "homeassistant": "home-assistant",
    "wazuh": "wazuh-manager",
}
NODE_SERVICES = ["pveproxy", "pvedaemon", "pvestatd", "pve-cluster", "corosync", "ssh", "cron"]


@dataclass
class HostState:
    """Everything a command on the host can see or change. Plain data only (deep-copyable)."""

    name: str
    kind: str  # "node" | "container" | "vm" (a VM: reached only through its guest agent)
    os: str  # debian10 | debian12 | debian13 | ubuntu2404 | alpine320
    vmid: int | None = None
    node: str | None = None
    sshd: bool = True
    # name -> [version, arch, description]
    packages: dict[str, list[str]] = field(default_factory=dict)
    # name -> {"version", "arch", "suites": [...], "security": bool, "pulls": [[n, v, arch, d]]}
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    half_configured: list[str] = field(default_factory=list)  # dpkg "iF" after a failed postinst
    kernel_running: str | None = None  # nodes only; containers report their node's kernel
    kernels: list[str] = field(default_factory=list)  # installed kernel releases (nodes)
    reboot_required: bool = False
    reboot_pkgs: list[str] = field(default_factory=list)
    needrestart: bool = True  # the needrestart package is installed
    needrestart_svc: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # unit -> active|inactive|failed
    main_service: str | None = None
    lock_until: float = 0.0  # wall time until which an apt-get holds the dpkg/apt locks
    # A lock fault's hold time starts when a command first meets the lock, not when the fault
    # is set: however slow the client is to arrive, it finds the lock held for this long.
    lock_hold_s: float = 0.0
    lock_pid: int = 0
    lock_holder: str = "apt-get"
    boot_id: str = ""
    booted_at: float = 0.0
    db_files: int = 20000  # "(Reading database ... N files and directories currently installed.)"
    files: dict[str, str] = field(default_factory=dict)  # files written by commands (> redirects)
    transient: list[str] = field(default_factory=list)  # units systemd-run started (gone at boot)
    eol: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def family(self) -> str:
        return "alpine" if self.os.startswith("alpine") else "debian"

    def lock_held(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.lock_hold_s > 0:
            self.lock_until, self.lock_hold_s = now + self.lock_hold_s, 0.0
        return self.lock_until > now


def os_release(os_name: str) -> str:
    return _OS_RELEASE_CACHE.setdefault(
        os_name, (DATA / "os-release" / f"{os_name}.txt").read_text()
    )


_OS_RELEASE_CACHE: dict[str, str] = {}


def host_names(lab: Lab) -> list[tuple[str, str, Guest | None]]:
    """(name, kind, guest) of every fleet host, in a stable order: nodes, then LXC by vmid."""
    out: list[tuple[str, str, Guest | None]] = [(n.name, "node", None) for n in lab.nodes]
    for g in sorted(lab.guests, key=lambda g: g.vmid):
        if g.type == "lxc" and not g.template:
            out.append((g.name, "container", g))
    return out


def no_sshd_names(lab: Lab) -> set[str]:
    """Containers without sshd (every 7th container; never PBS), reached only via `pct exec`."""
    cts = [
        g
        for g in sorted(lab.guests, key=lambda g: g.vmid)
        if g.type == "lxc" and not g.template and g.name != "pbs"
    ]
    return {g.name for i, g in enumerate(cts) if i % 7 == 6}


def eol_name(lab: Lab) -> str | None:
    """The one container left on an end-of-life release (Debian 10 buster)."""
    cands = [
        g
        for g in sorted(lab.guests, key=lambda g: g.vmid)
        if g.type == "lxc"
        and not g.template
        and g.os == "debian12"
        and g.name != "pbs"
        and g.status == "running"
    ]
    return cands[len(cands) // 2].name if cands else None


def seed_hosts(lab: Lab) -> None:
    """Fill ``lab.hosts`` for every node and LXC container that has no state yet."""
    no_sshd = no_sshd_names(lab)
    eol = eol_name(lab)
    with lab.lock:
        for name, kind, guest in host_names(lab):
            if name not in lab.hosts:
                lab.hosts[name] = new_host_state(
                    lab, name, kind, guest, name in no_sshd, name == eol
                )


def new_host_state(
    lab: Lab, name: str, kind: str, guest: Guest | None, no_sshd: bool = False, eol: bool = False
) -> HostState:
    # One RNG per host, from the lab seed and the name: adding a host changes no other host.
    rng = random.Random(f"{lab.seed}:{name}")
    if kind == "node":
        os_name = lab.node(name).os if lab.node(name) else "debian13"  # type: ignore[union-attr]
    else:
        assert guest is not None
        os_name = "debian10" if eol else guest.os
    st = HostState(
        name=name,
        kind=kind,
        os=os_name,
        vmid=guest.vmid if guest else None,
        node=guest.node if guest else None,
        sshd=not no_sshd,
        eol=eol,
        lock_pid=rng.randint(900, 32000),
        boot_id=str(uuid.UUID(int=rng.getrandbits(128))),
        booted_at=time.time() - rng.randint(3600, 40 * 86400),
        db_files=rng.randint(14000, 60000) if kind == "container" else rng.randint(70000, 90000),
    )
    entries = list(CATALOG[os_name]) + (CATALOG["pve"] if kind == "node" else [])
    # Share of the updatable packages still pending: some hosts are fully up to date.
    share = 0.0 if rng.random() < 0.15 or eol else rng.uniform(0.3, 0.9)
    for e in entries:
        pending = e.new is not None and rng.random() < share
        if e.kind == "kern" and kind == "node" and rng.random() < 0.6:
            pending = True  # most nodes have a kernel upgrade waiting
        version = e.old if pending or e.new is None else e.new
        st.packages[e.name] = [version, e.arch, e.description]
        if pending:
            st.pending[e.name] = pending_entry(os_name, e)
    if kind == "node":
        st.kernel_running = PVE_KERNEL_RUNNING
        st.kernels = [PVE_KERNEL_RUNNING]
        st.needrestart = True
        if "proxmox-kernel-6.14" not in st.pending:
            # Up-to-date meta package: the new kernel is installed; some nodes not rebooted yet.
            st.packages[PVE_NEW_KERNEL.name] = [
                PVE_NEW_KERNEL.new or "",
                "amd64",
                PVE_NEW_KERNEL.description,
            ]
            st.kernels.append(PVE_KERNEL_NEW)
            if rng.random() < 0.5:
                st.reboot_required = True
                st.reboot_pkgs = [PVE_NEW_KERNEL.name]
            else:
                st.kernel_running = PVE_KERNEL_NEW
        st.services = {f"{s}.service": "active" for s in NODE_SERVICES}
        st.main_service = "pveproxy"
    else:
        assert guest is not None
        base = guest.name.rsplit("-", 1)[0] if guest.name[-1].isdigit() else guest.name
        st.main_service = _SERVICE_OF.get(base, base)
        units = [st.main_service, "cron"] + (["ssh"] if st.sshd else [])
        if st.family == "debian":
            st.services = {f"{u}.service": "active" for u in units}
            st.needrestart = os_name == "ubuntu2404" or (rng.random() < 0.75 and not eol)
            if rng.random() < 0.2:
                st.needrestart_svc = ["cron.service", f"{st.main_service}.service"]
            if os_name == "ubuntu2404" and rng.random() < 0.3:
                st.reboot_required = True
                st.reboot_pkgs = ["libc6"]
        else:
            st.services = {u: "started" for u in units}  # OpenRC
            st.needrestart = False
    # A few hosts hold one pending package back (`apt-mark hold`; on Alpine a pin in the world
    # file, `name=version`).
    if st.pending and rng.random() < 0.25:
        st.held = [rng.choice(sorted(st.pending))]
    return st


def pending_entry(os_name: str, e: CatalogEntry) -> dict[str, Any]:
    rel = RELEASES[os_name]
    if e.kind in ("pve", "kern"):
        suites = ["stable"]
    elif e.kind == "sec":
        suites = list(rel.get("security") or [])  # type: ignore[call-overload]
    elif e.kind == "sec2":
        suites = list(rel.get("both") or [])  # type: ignore[call-overload]
    else:
        suites = list(rel.get("regular") or [])  # type: ignore[call-overload]
    if os_name.startswith("alpine"):
        suites = ["main"]
    pulls = []
    if e.kind == "kern":
        n = PVE_NEW_KERNEL
        pulls.append([n.name, n.new or "", n.arch, n.description])
    return {
        "version": e.new,
        "arch": e.arch,
        "suites": suites or ["stable"],
        "security": e.kind in ("sec", "sec2"),
        "pve": e.kind in ("pve", "kern"),
        "pulls": pulls,
    }
