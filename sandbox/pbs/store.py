"""The PBS datastore's contents, shared with the PVE API (vzdump to storage ``pbs`` writes here,
PVE's storage content lists it), and the seeded backup history.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sandbox.lab import Guest, Lab

DAY = 86400
PBS_NODE = "pbs"
PVE_OWNER = "root@pam!pve"
# The namespace of the datastore that PVE's second PBS storage ``pbs-home`` writes to.
HOME_NS = "home"


def ns_path(ns: Any) -> str:
    """A namespace parameter as a path (``a/b``), the root as ``""``."""
    return "/".join(part for part in str(ns or "").split("/") if part)


def ns_covers(start: Any, max_depth: int | None, ns: str) -> bool:
    """Whether a job on namespace ``start`` going ``max_depth`` levels down reaches ``ns``."""
    top = ns_path(start)
    if top == ns:
        depth = 0
    elif not top or ns.startswith(top + "/"):
        depth = ns.count("/") + 1 - (top.count("/") + 1 if top else 0)
    else:
        return False
    return max_depth is None or depth <= max_depth


def pbs_escape(text: str) -> str:
    """systemd-style escaping PBS applies to a UPID's worker id."""
    out = text.replace("\\", "\\x5c").replace("-", "\\x2d").replace(":", "\\x3a")
    return out.replace("/", "-")


_task_counter = itertools.count(1)


def pbs_upid(worker_type: str, worker_id: str | None, authid: str, starttime: int) -> str:
    """A 9-field PBS UPID (``task_id`` is the extra field PVE's UPIDs lack)."""
    pid = 0x1000 + os.getpid() % 0x8000
    return (
        f"UPID:{PBS_NODE}:{pid:08X}:{0x00AB0000 + pid:08X}:{next(_task_counter):08X}:"
        f"{starttime:08X}:{worker_type}:{pbs_escape(worker_id or '')}:{authid}:"
    )


@dataclass
class Snapshot:
    btype: str  # vm | ct | host
    bid: str
    btime: int
    files: list[dict[str, Any]]
    owner: str = PVE_OWNER
    comment: str | None = None
    protected: bool = False
    verification: dict[str, str] | None = None  # {"state": "ok"|"failed", "upid": ...}
    # Its namespace ("" the root). Not part of the key: the sandbox never holds one guest's
    # backups of the same second in two namespaces (seeded ones are minutes apart).
    ns: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.btype, self.bid, self.btime)

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.files)

    def iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.btime))

    def item(self) -> dict[str, Any]:
        """The ``SnapshotListItem`` PBS returns (kebab-case; verification only when verified)."""
        out: dict[str, Any] = {
            "backup-type": self.btype,
            "backup-id": self.bid,
            "backup-time": self.btime,
            "files": [dict(f) for f in self.files],
            "size": self.size,
            "owner": self.owner,
            "protected": self.protected,
        }
        if self.comment:
            out["comment"] = self.comment.splitlines()[0]
        if self.verification:
            out["verification"] = dict(self.verification)
        return out


def snapshot_files(btype: str, data_size: int) -> list[dict[str, Any]]:
    if btype == "vm":
        names = [
            ("index.json.blob", 520),
            ("qemu-server.conf.blob", 480),
            ("drive-scsi0.img.fidx", data_size),
            ("client.log.blob", 2100),
        ]
    elif btype == "ct":
        names = [
            ("index.json.blob", 452),
            ("pct.conf.blob", 380),
            ("root.pxar.didx", data_size),
            ("catalog.pcat1.didx", 900_000),
            ("client.log.blob", 1024),
        ]
    else:
        names = [("index.json.blob", 400), ("root.pxar.didx", data_size)]
    return [{"filename": n, "size": s, "crypt-mode": "none"} for n, s in names]


@dataclass
class Datastore:
    name: str = "store1"
    path: str = "/mnt/datastore/store1"
    total: int = 4 * 1024**4
    base_used: int = 1_150 * 1024**3
    snapshots: dict[tuple[str, str, int], Snapshot] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)
    gc_running: str | None = None  # UPID of a running GC
    verify_jobs: list[dict[str, Any]] = field(default_factory=list)
    # Snapshots whose next verification fails (the `verify_fail` fault of system pbs adds more).
    corrupt: set[tuple[str, str, int]] = field(default_factory=set)
    seed: dict[str, Any] = field(default_factory=dict)  # what the seed made special
    prune_jobs: list[dict[str, Any]] = field(default_factory=list)
    sync_jobs: list[dict[str, Any]] = field(default_factory=list)  # sync.cfg, with run state
    remotes: list[dict[str, Any]] = field(default_factory=list)  # remote.cfg (no passwords)
    # What the remotes' datastores hold, by (remote, datastore, namespace; "" the root one):
    # the copies sync jobs pushed there, as the remote lists them.
    remote_stores: dict[tuple[str, str, str], list[Snapshot]] = field(default_factory=dict)
    # Finished tasks of the seeded history: (upid, type, id, start, end, exitstatus, lines).
    history: list[tuple[str, str, str, int, int, str, list[str]]] = field(default_factory=list)

    def add(self, snap: Snapshot) -> None:
        self.snapshots[snap.key] = snap

    def listing(
        self, btype: str | None = None, bid: str | None = None, ns: str | None = ""
    ) -> list[Snapshot]:
        """Snapshots of namespace ``ns`` (the root by default, as PBS lists without ``ns``;
        None: every namespace)."""
        snaps = [
            s
            for s in self.snapshots.values()
            if (btype is None or s.btype == btype)
            and (bid is None or s.bid == bid)
            and (ns is None or s.ns == ns)
        ]
        return sorted(snaps, key=lambda s: (s.btype, s.bid, s.btime))

    def namespaces(self) -> list[str]:
        """Every namespace of the datastore (the root, ``home``, and any a snapshot is in)."""
        return sorted({"", HOME_NS} | {s.ns for s in self.snapshots.values()})

    @property
    def used(self) -> int:
        # Deduplication: chunks shared between snapshots count once (roughly a tenth).
        return self.base_used + sum(s.size for s in self.snapshots.values()) // 10

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for kind in ("ct", "vm", "host"):
            snaps = [s for s in self.snapshots.values() if s.btype == kind]
            out[kind] = {"groups": len({s.bid for s in snaps}), "snapshots": len(snaps)}
        out["other"] = {"groups": 0, "snapshots": 0}
        return out


def backup_type(guest: Guest) -> str:
    return "ct" if guest.type == "lxc" else "vm"


def shared_store(lab: Lab) -> Datastore:
    """The one datastore of the lab, seeded on first use (PVE and PBS both call this)."""
    with lab.lock:
        store = lab.shared.get("pbs")
        if store is None:
            store = seed_store(lab)
            lab.shared["pbs"] = store
        return store


def seed_info(lab: Lab) -> dict[str, Any]:
    """Which guests the seed made special, for tests and flows (see /_sandbox/state)."""
    return dict(shared_store(lab).seed)


def seed_store(lab: Lab, now: float | None = None) -> Datastore:
    """Ten days of nightly backups with the irregularities a backup audit must find."""
    rng = random.Random(lab.seed * 7919 + 3)
    now = now if now is not None else time.time()
    store = Datastore()
    # Nightly jobs run at 02:00 UTC; "night 0" is the most recent 02:00 before now.
    night0 = int(now // DAY * DAY + 2 * 3600)
    if night0 > now:
        night0 -= DAY
    eligible = [g for g in lab.guests if not g.template and "nobackup" not in g.tags]
    lxc_ids = [g.vmid for g in eligible if g.type == "lxc" and g.vmid not in (100, 150)]
    stale = sorted(rng.sample(lxc_ids, 2)) if len(lxc_ids) >= 2 else []
    recently_verified = {g.vmid for g in eligible if rng.random() < 0.45}
    verify_job_run = night0 - 9 * DAY + 2 * 3600  # the verify job last ran 9 days ago, 04:00
    yesterday_verify = night0 - DAY + 5 * 3600
    old_upid = pbs_upid("verificationjob", "store1:v-daily", "root@pam", verify_job_run)
    new_upid = pbs_upid("verify_group", "store1:manual", "root@pam", yesterday_verify)
    failed_vmid = None
    for idx, guest in enumerate(eligible):
        btype = backup_type(guest)
        nights = range(10, 14) if guest.vmid in stale else range(0, 10)
        for night in nights:
            btime = night0 - night * DAY + idx * 37 + rng.randint(0, 20)
            if btime > now:
                continue
            size = int(guest.disk_used * rng.uniform(0.55, 0.7))
            snap = Snapshot(
                btype=btype,
                bid=str(guest.vmid),
                btime=btime,
                files=snapshot_files(btype, size),
                comment=f"{guest.name} ({guest.node})",
            )
            if btime < verify_job_run:
                snap.verification = {"state": "ok", "upid": old_upid}
            elif guest.vmid in recently_verified and btime < yesterday_verify:
                snap.verification = {"state": "ok", "upid": new_upid}
            store.add(snap)
    # One guest whose newest verified snapshot failed verification yesterday.
    for vmid in sorted(recently_verified):
        snaps = [s for s in store.listing(bid=str(vmid)) if s.verification]
        if snaps and vmid not in stale:
            snaps[-1].verification = {"state": "failed", "upid": new_upid}
            failed_vmid = vmid
            break
    # A protected snapshot taken before an upgrade, and an orphan of a destroyed guest.
    protected_key = None
    first = next((s for s in store.listing(btype="ct", bid="100")), None)
    if first is not None:
        first.protected = True
        first.comment = "before upgrade to trixie"
        protected_key = first.key
    orphan_vmid = 199
    while lab.guest(orphan_vmid) is not None:
        orphan_vmid += 1
    for night in (20, 21):
        store.add(
            Snapshot(
                btype="ct",
                bid=str(orphan_vmid),
                btime=night0 - night * DAY + 60,
                files=snapshot_files("ct", 700 * 1024**2),
                comment="old-wiki (pve2)",
                verification={"state": "ok", "upid": old_upid},
            )
        )
    # Namespace "home" (PVE storage pbs-home): the VMs' nightly copies of the last five nights,
    # half an hour after their root ones, by a second PVE job.
    home_vmids = [g.vmid for g in eligible if g.type == "qemu"]
    for idx, guest in enumerate(g for g in eligible if g.vmid in home_vmids):
        for night in range(0, 5):
            btime = night0 - night * DAY + 1800 + idx * 41 + rng.randint(0, 20)
            if btime > now:
                continue
            store.add(
                Snapshot(
                    btype="vm",
                    bid=str(guest.vmid),
                    btime=btime,
                    files=snapshot_files("vm", int(guest.disk_used * 0.6)),
                    comment=f"{guest.name} ({guest.node})",
                    ns=HOME_NS,  # never verified: the verify job last ran before these
                )
            )
    # A host backup, which PVE's storage view must skip.
    store.add(
        Snapshot(
            btype="host",
            bid="pve1",
            btime=night0 - DAY + 3 * 3600,
            files=snapshot_files("host", 300 * 1024**2),
            owner="root@pam",
        )
    )
    gc_start = night0 - DAY + 3 * 3600
    gc_upid = pbs_upid("garbage_collection", "store1", "root@pam", gc_start)
    store.gc = {
        "upid": gc_upid,
        "index-file-count": len(store.snapshots) * 2,
        "index-data-bytes": sum(s.size for s in store.snapshots.values()),
        "disk-bytes": store.used,
        "disk-chunks": len(store.snapshots) * 310,
        "removed-bytes": 3 * 1024**3,
        "removed-chunks": 812,
        "pending-bytes": 512 * 1024**2,
        "pending-chunks": 140,
        "removed-bad": 0,
        "still-bad": 0,
        "schedule": "daily",
        "last-run-endtime": gc_start + 754,
        "last-run-state": "OK",
        "duration": 754,
    }
    store.seed = {
        "stale_vmids": stale,
        "orphan_vmid": orphan_vmid,
        "protected": list(protected_key) if protected_key else None,
        "failed_verification_vmid": failed_vmid,
        "recently_verified_vmids": sorted(recently_verified),
        "verify_job_last_run": verify_job_run,
        "home_vmids": home_vmids,
    }
    prune_start = night0 + 2 * 3600 - DAY
    prune_upid = pbs_upid("prunejob", "store1:p-daily", "root@pam", prune_start)
    store.prune_jobs = [
        {
            "id": "p-daily",
            "store": store.name,
            "schedule": "daily",
            "keep-last": 3,
            "keep-daily": 7,
            "keep-weekly": 4,
            "keep-monthly": 6,
            # the root namespace only: written before namespace "home" existed
            "max-depth": 0,
            "comment": "nightly prune",
            "last-run-upid": prune_upid,
            "last-run-state": "OK",
            "last-run-endtime": prune_start + 95,
            "next-run": night0 + DAY + 2 * 3600,
        }
    ]
    # Off-site: a push job of the containers to the remote PBS "pbs2" whose last run ended
    # "sync failed with some errors." for two groups (one owner check, one lost connection).
    sync_start = night0 + 4 * 3600 - DAY
    sync_id = "store1:pbs2:offsite::s-offsite"
    sync_upid = pbs_upid("syncjob", sync_id, "root@pam", sync_start)
    ct_groups = sorted({s.bid for s in store.listing(btype="ct")}, key=int)
    bad_groups = [f"ct/{b}" for b in ct_groups[1:3]]
    store.remotes = [
        {
            "name": "pbs2",
            "host": "pbs2.offsite.example",
            "port": 8007,
            "auth-id": "sync@pbs!push",
            "fingerprint": "64:d3:ff:3a:50:38:53:5a:9b:f7:50:aa:01:02:03:04:05:06:07:08:"
            "09:0a:0b:0c:0d:0e:0f:10:11:12:ab:fe",
            "comment": "off-site PBS",
        }
    ]
    store.sync_jobs = [
        {
            "id": "s-offsite",
            "store": store.name,
            "remote": "pbs2",
            "remote-store": "offsite",
            "remote-ns": "home",
            "sync-direction": "push",
            "group-filter": ["type:ct", "exclude:group:ct/100"],
            "remove-vanished": False,
            "schedule": "daily",
            "comment": "containers off-site",
            "last-run-upid": sync_upid,
            "last-run-state": "sync failed with some errors.",
            "last-run-endtime": sync_start + 420,
            "next-run": night0 + DAY + 4 * 3600,
        }
    ]
    sync_lines = [
        f"Starting datastore sync job '{sync_id}'",
        "sync datastore 'store1' to 'pbs2/offsite'",
        "----",
        "Syncing datastore 'store1', root namespace into datastore 'offsite', namespace 'home'",
        f"found {len(ct_groups) - 1} groups to sync (out of {len(ct_groups)} total)",
    ]
    sync_lines += [
        f"sync group {g} failed - "
        + ("owner check failed (sync@pbs != root@pam)" if i == 0 else "connection reset by peer")
        for i, g in enumerate(bad_groups)
    ]
    sync_lines.append("TASK ERROR: sync failed with some errors.")
    store.seed["sync_failed_groups"] = bad_groups
    # pbs2's datastore "offsite", namespace "home": the copies the push job made. A sync keeps
    # each snapshot's backup time; the groups its last run failed for last synced a week before
    # it (their newest copy is eight days old: past the default off-site RPO).
    copies: list[Snapshot] = []
    for bid in ct_groups[1:]:
        until = sync_start - (7 * DAY if f"ct/{bid}" in bad_groups else 0)
        copies += [
            replace(s, owner="sync@pbs!push", verification=None, protected=False)
            for s in store.listing("ct", bid)
            if s.btime < until
        ]
    store.remote_stores[("pbs2", "offsite", "home")] = copies
    store.remote_stores[("pbs2", "offsite", "")] = []
    store.history = [
        (
            sync_upid,
            "syncjob",
            sync_id,
            sync_start,
            sync_start + 420,
            "sync failed with some errors.",
            sync_lines,
        ),
        (
            old_upid,
            "verificationjob",
            "store1:v-daily",
            verify_job_run,
            verify_job_run + 1800,
            "OK",
            ["Starting datastore verify job 'store1:v-daily'", "verify datastore store1"],
        ),
        (
            new_upid,
            "verify_group",
            "store1:manual",
            yesterday_verify,
            yesterday_verify + 600,
            "verification failed - please check the log for details" if failed_vmid else "OK",
            ["verify datastore store1"],
        ),
        (
            gc_upid,
            "garbage_collection",
            "store1",
            gc_start,
            gc_start + 754,
            "OK",
            [
                "starting garbage collection on store store1",
                "Start GC phase1 (mark used chunks)",
                "Start GC phase2 (sweep unused chunks)",
                "Removed garbage: 3.0 GiB",
            ],
        ),
        (
            prune_upid,
            "prunejob",
            "store1:p-daily",
            prune_start,
            prune_start + 95,
            "OK",
            ["Starting datastore prune on datastore 'store1', root namespace"],
        ),
    ]
    store.verify_jobs = [
        {
            "id": "v-daily",
            "store": store.name,
            "schedule": "daily",
            "ignore-verified": True,
            "outdated-after": 30,
            "comment": "nightly verification",
            "last-run-upid": old_upid,
            "last-run-state": "OK",
            "last-run-endtime": verify_job_run + 1800,
            "next-run": night0 + DAY + 2 * 3600,
        }
    ]
    return store


# ---- prune selection (shared by PBS prune and PVE's prunebackups preview) ----

KEEP_RULES = (
    ("keep-last", None),
    ("keep-hourly", "%Y/%m/%d/%H"),
    ("keep-daily", "%Y/%m/%d"),
    ("keep-weekly", "%G/%V"),
    ("keep-monthly", "%Y/%m"),
    ("keep-yearly", "%Y"),
)


class Prunable(Protocol):
    @property
    def key(self) -> Any: ...
    @property
    def btime(self) -> int: ...
    @property
    def protected(self) -> bool: ...


def prune_marks(snaps: Sequence[Prunable], keeps: dict[str, int]) -> dict[Any, bool]:
    """PBS's ``mark_selections``: rule by rule, newest first, keep the first snapshot of each
    period not yet covered; protected snapshots are always kept; no rule keeps everything."""
    if not any(keeps.values()):
        return {s.key: True for s in snaps}
    newest_first = sorted(snaps, key=lambda s: s.btime, reverse=True)
    mark: dict[Any, bool] = {}
    for opt, fmt in KEEP_RULES:
        n = keeps.get(opt) or 0
        if n <= 0:
            continue

        def period(s: Prunable, fmt: str | None = fmt) -> str:
            return str(s.btime) if fmt is None else time.strftime(fmt, time.localtime(s.btime))

        covered = {period(s) for s in newest_first if mark.get(s.key) is True}
        included: set[str] = set()
        for s in newest_first:
            if s.key in mark:
                continue
            if s.protected:
                mark[s.key] = True
                continue
            sel = period(s)
            if sel in covered:
                continue
            if sel not in included:
                if len(included) >= n:
                    break
                included.add(sel)
                mark[s.key] = True
            else:
                mark[s.key] = False
    return {s.key: mark.get(s.key, False) or s.protected for s in snaps}
