"""The off-site Proxmox Backup Server ("pbs2"): a second PBS on a port of its own, with its own
datastore ``offsite``. It knows the lab's PBS as its remote ``home`` and pulls the VMs' backup
groups from there every night (a pull sync job configured on pbs2, the way an off-site PBS that
the lab cannot reach in is set up). Its last pull "finished" with ``sync failed with some
errors.``: two groups failed, each named in the task log in PBS's own format, and their newest
copies are a week older than the others'.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from sandbox.pbs import PbsService
from sandbox.pbs.store import DAY, Datastore, pbs_upid, shared_store
from sandbox.services import ca_bundle_path

REMOTE = "home"  # how pbs2's remote.cfg names the lab's PBS
PULL_NS = "lab"  # where on pbs2's datastore the pulled groups land


def offsite_store(home: Datastore, now: float) -> Datastore:
    """pbs2's datastore, its remote and pull job, and the copies and task log of its last pull."""
    night0 = int(now // DAY * DAY + 2 * 3600)
    if night0 > now:
        night0 -= DAY
    store = Datastore(name="offsite", path="/mnt/datastore/offsite", base_used=80 * 1024**3)
    start = night0 + 5 * 3600 - DAY  # 05:00, after the lab's nightly backups
    if start + 900 > now:
        start -= DAY
    job_id = "s-pull"
    worker = f"{REMOTE}:{home.name}:{store.name}:{PULL_NS}:{job_id}"
    upid = pbs_upid("syncjob", worker, "root@pam", start)
    groups = sorted({s.bid for s in home.listing(btype="vm")}, key=int)
    failed = {f"vm/{b}" for b in groups[1:3]}
    reasons = {
        g: (
            "unable to acquire lock on snapshot directory "
            f'"/mnt/datastore/{store.name}/ns/{PULL_NS}/{g}" - locked by another operation'
            if i == 0
            else "error trying to connect: error connecting to https://pbs.lab.internal:8007/ "
            "- operation timed out"
        )
        for i, g in enumerate(sorted(failed))
    }
    store.remotes = [
        {
            "name": REMOTE,
            "host": "pbs.lab.internal",
            "port": 8007,
            "auth-id": "sync@pbs!pull",
            "fingerprint": "ab:13:9d:6e:2c:01:7f:44:90:3b:5e:c8:21:0a:77:f2:"
            "1c:d9:43:88:6b:02:e5:3f:91:ad:c4:58:7e:10:b6:29",
            "comment": "the lab's PBS",
        }
    ]
    store.sync_jobs = [
        {
            "id": job_id,
            "store": store.name,
            "ns": PULL_NS,
            "remote": REMOTE,
            "remote-store": home.name,
            "max-depth": 0,  # the root namespace of store1 only
            "group-filter": ["type:vm"],
            "remove-vanished": False,
            "schedule": "05:00",
            "comment": "the lab's VMs, pulled nightly",
            "last-run-upid": upid,
            "last-run-state": "sync failed with some errors.",
            "last-run-endtime": start + 840,
            "next-run": start + DAY,
        }
    ]
    lines = [
        f"Starting datastore sync job '{worker}'",
        f"sync datastore '{store.name}' from '{REMOTE}/{home.name}'",
        "----",
        f"Syncing datastore '{home.name}', root namespace into datastore '{store.name}', "
        f"namespace '{PULL_NS}'",
        f"found {len(groups)} groups to sync (out of {len(groups)} total)",
    ]
    for i, bid in enumerate(groups, start=1):
        group = f"vm/{bid}"
        until = start - (7 * DAY if group in failed else 0)
        snaps = [s for s in home.listing("vm", bid) if s.btime < until]
        for s in snaps:  # a pull keeps each snapshot's backup time; never verified here
            store.add(replace(s, owner="sync@pbs!pull", verification=None, ns=PULL_NS))
        if group in failed:
            lines.append(f"sync group {group} failed - {reasons[group]}")
        elif snaps:
            stamp = snaps[-1].iso()
            lines += [
                f"sync snapshot {group}/{stamp}",
                "sync archive qemu-server.conf.blob",
                "sync archive drive-scsi0.img.fidx",
                "downloaded 1.24 GiB (61.80 MiB/s)",
                'got backup log file "client.log.blob"',
                f"sync snapshot {group}/{stamp} done",
            ]
        lines.append(f"percentage done: {100 * i / len(groups):.2f}% ({i}/{len(groups)} groups)")
    lines.append("TASK ERROR: sync failed with some errors.")
    store.history = [
        (upid, "syncjob", worker, start, start + 840, "sync failed with some errors.", lines)
    ]
    store.seed = {"pull_failed_groups": sorted(failed), "pull_job": job_id, "pull_ns": PULL_NS}
    return store


class PbsOffsiteService(PbsService):
    name = "pbs_offsite"
    host_name = "pbs2"

    def datastore(self) -> Datastore:
        lab = self.ctx.lab
        home = shared_store(lab)  # seeded first: pbs2's copies are of its snapshots
        with lab.lock:
            store = lab.shared.get("pbs_offsite")
            if store is None:
                store = offsite_store(home, time.time())
                # the copies the home PBS's push job made here ("pbs2" to the home PBS)
                for (remote, name, ns), snaps in home.remote_stores.items():
                    if (remote, name) == ("pbs2", store.name):
                        for s in snaps:
                            store.add(replace(s, ns=ns))
                lab.shared["pbs_offsite"] = store
        return store

    def config_fragment(self) -> dict[str, Any]:
        return {
            "systems": {
                "pbs_offsite": {
                    "name": "pbs2",
                    "home_remote": REMOTE,
                    "url": f"https://{self.ctx.host}:{self.port}",
                    "token_id": "root@pam!labops",
                    "token_secret": self.token_ref,
                    "tls": {"ca_bundle": str(ca_bundle_path(self.ctx))},
                    "datastore": "offsite",
                },
            },
        }


SERVICE = PbsOffsiteService
