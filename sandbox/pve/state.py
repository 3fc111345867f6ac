"""PVE-only state beside the shared :class:`~sandbox.lab.Lab`: local backup files, backup jobs,
snapshots, pending apt updates, node certificates, tickets.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.lab import Guest, Lab

DAY = 86400


@dataclass
class LocalVolume:
    """A vzdump archive on a node's ``local`` dir storage."""

    node: str
    vmid: int
    subtype: str  # lxc | qemu
    ctime: int
    size: int
    notes: str | None = None
    protected: bool = False

    @property
    def format(self) -> str:
        return "tar.zst" if self.subtype == "lxc" else "vma.zst"

    @property
    def volid(self) -> str:
        stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(self.ctime))
        return f"local:backup/vzdump-{self.subtype}-{self.vmid}-{stamp}.{self.format}"


@dataclass
class SnapshotRec:
    name: str
    snaptime: int
    description: str
    parent: str | None
    host_state: Any  # deep copy of lab.hosts[guest.name] at snapshot time (None: no state)
    had_state: bool


@dataclass
class NodeCerts:
    """PEMs of a node: pve-ssl (cluster CA) and, on ACME nodes, pveproxy-ssl."""

    pve_ssl: Any  # sandbox.tls.IssuedCert
    pveproxy_ssl: Any | None = None

    @property
    def effective(self) -> Any:
        return self.pveproxy_ssl or self.pve_ssl


_PKGS: list[tuple[str, str, str, str, str, str]] = [
    # Package, Title, Origin, Section, OldVersion, Version
    (
        "pve-manager",
        "Proxmox Virtual Environment management tools",
        "Proxmox",
        "admin",
        "9.1.1",
        "9.1.2",
    ),
    (
        "proxmox-kernel-6.17",
        "Latest Proxmox Kernel Image",
        "Proxmox",
        "kernel",
        "6.17.2-1",
        "6.17.2-2",
    ),
    ("libpve-common-perl", "Proxmox VE base library", "Proxmox", "perl", "9.0.11", "9.0.13"),
    ("qemu-server", "Qemu Server Tools", "Proxmox", "admin", "9.0.26", "9.0.29"),
    (
        "openssl",
        "Secure Sockets Layer toolkit - cryptographic utility",
        "Debian",
        "utils",
        "3.5.1-1",
        "3.5.1-1+deb13u1",
    ),
    (
        "libssl3t64",
        "Secure Sockets Layer toolkit - shared libraries",
        "Debian",
        "libs",
        "3.5.1-1",
        "3.5.1-1+deb13u1",
    ),
    (
        "tzdata",
        "time zone and daylight-saving time data",
        "Debian",
        "localization",
        "2025b-4",
        "2025b-4+deb13u1",
    ),
    (
        "zfsutils-linux",
        "command-line tools to manage OpenZFS filesystems",
        "Proxmox",
        "contrib/admin",
        "2.3.4-pve1",
        "2.3.5-pve1",
    ),
]


def seed_apt(node: str, rng: random.Random) -> list[dict[str, Any]]:
    """Pending updates per node: pve4 is current, the others lag by a few packages."""
    if node == "pve4":
        return []
    count = {"pve1": 6, "pve2": 3, "pve3": 8}.get(node, 2)
    out = []
    for pkg, title, origin, section, old, new in _PKGS[:count]:
        out.append(
            {
                "Package": pkg,
                "Title": title,
                "Description": f"{title}. Part of the sandbox lab's pending updates.",
                "Origin": origin,
                "OldVersion": old,
                "Version": new,
                "Arch": "amd64",
                "Priority": "optional" if origin == "Proxmox" else "important",
                "Section": section,
            }
        )
    if node == "pve1":  # a new dependency: no OldVersion
        out.append(
            {
                "Package": "proxmox-kernel-6.17.2-2-pve-signed",
                "Title": "Proxmox Kernel Image (signed)",
                "Description": "Proxmox Kernel Image (signed).",
                "Origin": "Proxmox",
                "Version": "6.17.2-2",
                "Arch": "amd64",
                "Priority": "optional",
                "Section": "kernel",
            }
        )
    rng.shuffle(out)
    return sorted(out, key=lambda p: p["Package"])


@dataclass
class BackupJob:
    id: str
    schedule: str
    storage: str
    vmids: list[int] = field(default_factory=list)
    enabled: bool = True
    node: str | None = None
    mode: str = "snapshot"
    comment: str = ""
    notes_template: str = "{{guestname}} ({{node}})"
    prune: dict[str, int] = field(default_factory=lambda: {"keep-daily": 7, "keep-weekly": 4})

    def item(self, next_run: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": "vzdump",
            "enabled": int(self.enabled),
            "schedule": self.schedule,
            "storage": self.storage,
            "mode": self.mode,
            "compress": "zstd",
            "vmid": ",".join(str(v) for v in self.vmids),
            "notes-template": self.notes_template,
            "prune-backups": dict(self.prune),
            "repeat-missed": 0,
            "fleecing": {"enabled": 0},
            "next-run": next_run,
        }
        if self.node:
            out["node"] = self.node
        if self.comment:
            out["comment"] = self.comment
        return out


def seed_jobs(lab: Lab) -> list[BackupJob]:
    """Nightly PBS jobs covering most guests; two apps and the "nobackup" guests fall through.
    A second nightly job writes the VMs to storage pbs-home (namespace home of the datastore),
    half an hour after the infra one: the copies the PBS seed holds there."""
    wanted = [g for g in lab.guests if not g.template and "nobackup" not in g.tags]
    infra = [g.vmid for g in wanted if "infra" in g.tags]
    apps = [g.vmid for g in wanted if "infra" not in g.tags]
    vms = [g.vmid for g in wanted if g.type == "qemu"]
    forgotten = apps[3:5]  # added to the lab after the job was written
    apps = [v for v in apps if v not in forgotten]
    return [
        BackupJob("backup-2c5f1e8a-91d3", "*-*-* 02:00", "pbs", infra, comment="infra nightly"),
        BackupJob("backup-7a0b4d62-e5f1", "*-*-* 02:30", "pbs", apps, comment="apps nightly"),
        BackupJob(
            "backup-5e3a9f14-c7d2", "*-*-* 02:30", "pbs-home", vms, comment="VMs to namespace home"
        ),
        BackupJob(
            "backup-d41e9c07-3b28",
            "sun 01:00",
            "local",
            infra[:3],
            enabled=False,
            node="pve1",
            comment="old weekly local copies",
            notes_template="{{guestname}}",
        ),
    ]


@dataclass
class ReplicationJob:
    """A storage replication job (``replication.cfg``) and the state its source node keeps
    (``pve-replication-state.json``): ``last_sync`` 0 until a sync succeeded."""

    guest: int
    jobnum: int
    target: str
    source: str  # the node the guest was on when the job last ran (PVE notes it to see moves)
    schedule: str = "*/15"
    disable: bool = False
    rate: float | None = None
    comment: str = ""
    last_sync: int = 0
    last_try: int = 0
    fail_count: int = 0
    error: str | None = None
    duration: float | None = None
    # Its log on the source node (/var/log/pve/replicate/<id>): the last run only, as pvesr
    # rewrites the file each run; "<local time> <id>: <message>" per line.
    log: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.guest}-{self.jobnum}"

    def config(self) -> dict[str, Any]:
        """Its ``GET /cluster/replication`` item (booleans 0/1, unset options absent)."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": "local",
            "guest": self.guest,
            "jobnum": self.jobnum,
            "target": self.target,
            "schedule": self.schedule,
            "source": self.source,
        }
        if self.disable:
            out["disable"] = 1
        if self.rate is not None:
            out["rate"] = self.rate
        if self.comment:
            out["comment"] = self.comment
        return out

    def status(self, vmtype: str, next_sync: int) -> dict[str, Any]:
        """Its ``GET /nodes/{node}/replication`` item: the config, the guest type, the kept
        state (error and duration only once set) and the next sync."""
        out = {**self.config(), "vmtype": vmtype, "next_sync": next_sync}
        out["last_sync"], out["last_try"], out["fail_count"] = (
            self.last_sync,
            self.last_try,
            self.fail_count,
        )
        if self.error is not None:
            out["error"] = self.error
        if self.duration is not None:
            out["duration"] = self.duration
        return out


# The failing seeded job's complaint, in its log only (the node's status keeps the command).
REPLICATION_CAUSE = "Host key verification failed."


def _zfs_send_failure(g: Guest, job: str, target: str, stamp: int) -> str:
    """The error ``pvesr`` keeps when the volume export to ``target`` fails (ssh refused)."""
    vol = f"local-zfs:subvol-{g.vmid}-disk-0"
    snap = f"__replicate_{job}_{stamp}__"
    return (
        f"command 'set -o pipefail && pvesm export {vol} zfs - -with-snapshots 1 -snapshot "
        f"{snap} | /usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={target}' "
        f"root@{target} -- pvesm import {vol} zfs - -with-snapshots 1 -snapshot {snap} "
        "-allow-rename 0' failed: exit code 255"
    )


def _log_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _replication_log(
    g: Guest, job: str, start: int, last_sync: int, cause: str | None, error: str | None
) -> list[str]:
    """The log ``pvesr`` writes for one run of ``job`` (ZFS, incremental from ``last_sync``):
    the steps, then the command's own complaint (``cause``) and the end line with the error."""
    kind = "CT" if g.type == "lxc" else "VM"
    vol = f"local-zfs:subvol-{g.vmid}-disk-0"
    snap, base = f"__replicate_{job}_{start}__", f"__replicate_{job}_{last_sync}__"
    steps = [
        "start replication job",
        f"guest => {kind} {g.vmid}, running => {1000 + g.vmid if g.status == 'running' else 0}",
        f"volumes => {vol}",
        f"create snapshot '{snap}' on {vol}",
        "using secure transmission, rate limit: none",
        f"incremental sync '{vol}' ({base} => {snap})",
    ]
    if cause is None:
        steps += [
            f"send from @{base} to rpool/data/subvol-{g.vmid}-disk-0@{snap} estimated size is "
            "2.13M",
            "total estimated size is 2.13M",
            f"successfully imported '{vol}'",
            f"delete previous replication snapshot '{base}' on {vol}",
            "end replication job",
        ]
    else:
        steps += [
            cause,
            f"delete previous replication snapshot '{snap}' on {vol}",
            f"end replication job with error: {error}",
        ]
    return [f"{_log_time(start + i // 3)} {job}: {line}" for i, line in enumerate(steps)]


def seed_replication(lab: Lab, now: float) -> list[ReplicationJob]:
    """Three ZFS replication jobs of infra containers: one healthy (synced minutes ago), one
    failing for a day (its target refuses ssh; last good sync two days ago) and one disabled
    (last synced three weeks ago)."""
    infra = [g for g in lab.guests if "infra" in g.tags and g.type == "lxc" and not g.template]
    on = {n: [g for g in infra if g.node == n] for n in ("pve1", "pve2")}
    if not on["pve1"] or len(on["pve2"]) < 2:
        return []
    ok, failing, disabled = (
        on["pve2"][0],
        on["pve1"][1 if len(on["pve1"]) > 1 else 0],
        on["pve2"][1],
    )
    t = int(now)
    error = _zfs_send_failure(failing, f"{failing.vmid}-0", "pve4", t - 300)
    return [
        ReplicationJob(
            ok.vmid,
            0,
            "pve1",
            "pve2",
            last_sync=t - 540,
            last_try=t - 540,
            duration=3.41,
            rate=50,
            log=_replication_log(ok, f"{ok.vmid}-0", t - 540, t - 1440, None, None),
        ),
        ReplicationJob(
            failing.vmid,
            0,
            "pve4",
            "pve1",
            last_sync=t - 2 * DAY,
            last_try=t - 300,
            fail_count=96,
            error=error,
            duration=1.07,
            # the status keeps only the failed command; its log says why: pve4 was
            # reinstalled and no longer has the key the source node knows it by
            log=_replication_log(
                failing, f"{failing.vmid}-0", t - 300, t - 2 * DAY, REPLICATION_CAUSE, error
            ),
        ),
        ReplicationJob(
            disabled.vmid,
            0,
            "pve4",
            "pve2",
            schedule="*/30",
            disable=True,
            comment="paused while pve4's pool is rebuilt",
            last_sync=t - 21 * DAY,
            last_try=t - 21 * DAY,
            duration=12.9,
            log=_replication_log(
                disabled, f"{disabled.vmid}-0", t - 21 * DAY, t - 21 * DAY - 1800, None, None
            ),
        ),
    ]


def seed_local(lab: Lab, now: float) -> list[LocalVolume]:
    """A few old weekly archives on pve1's local storage (the disabled weekly job's leftovers)."""
    out = []
    night = int(now // DAY * DAY) - 3 * DAY + 3600
    for guest in [g for g in lab.guests if g.node == "pve1" and not g.template][:3]:
        for week in range(3):
            out.append(
                LocalVolume(
                    node="pve1",
                    vmid=guest.vmid,
                    subtype=guest.type,
                    ctime=night - week * 7 * DAY,
                    size=int(guest.disk_used * 0.45),
                    notes=guest.name,
                    protected=(week == 2 and guest.vmid == 100),
                )
            )
    return out


def guest_stats(guest: Guest, lab: Lab, now: float) -> dict[str, Any]:
    """Deterministic, slowly moving runtime numbers for a guest."""
    r = random.Random(guest.vmid * 31 + lab.seed)
    running = guest.status == "running"
    up = int(now - lab.created) + r.randint(3600, 40 * DAY) if running else 0
    return {
        "cpu": round(r.uniform(0.001, 0.15), 6) if running else 0,
        "mem": int(guest.maxmem * r.uniform(0.15, 0.7)) if running else 0,
        "uptime": up,
        "netin": r.randint(10**6, 10**10) if running else 0,
        "netout": r.randint(10**6, 10**10) if running else 0,
        "diskread": r.randint(10**6, 10**9) if running else 0,
        "diskwrite": r.randint(10**6, 10**9) if running else 0,
        "cpus": 2 if guest.type == "lxc" else 4,
    }
