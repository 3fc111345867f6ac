"""Backup-gated apply: may a guest be upgraded, judged by its backups? Pure: backups in, verdict
out; the flow lists the backups, runs vzdump for the guests that need one and asks again.

A guest passes when its newest good backup (verified, when the policy says so) is at most
``max_age_h`` old. That backup is the guest's rollback point whenever no snapshot is taken
before its upgrade; a failed upgrade then names the exact restore command and API call.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from labops.backups.models import BackupCopy
from labops.config.policies.patching import RequireBackup

GateState = Literal["passed", "needs-backup", "refused"]


class GateVerdict(BaseModel):
    """One guest's standing before its upgrade."""

    vmid: int
    state: GateState
    reason: str
    backup: BackupCopy | None = None

    @property
    def passed(self) -> bool:
        return self.state == "passed"


def _age_h(copy: BackupCopy, now: float) -> float:
    return max(0.0, now - copy.ctime) / 3600


def counts(copy: BackupCopy, policy: RequireBackup) -> bool:
    """A backup the gate accepts at all (age aside): it holds data that did not fail
    verification, and passed verification when the policy asks for verified backups."""
    if copy.verify_state == "failed":
        return False
    return copy.verify_state == "ok" if policy.verified else True


def judge(
    vmid: int,
    copies: Sequence[BackupCopy],
    policy: RequireBackup,
    now: float,
    tried: str | None = None,
) -> GateVerdict:
    """The gate's verdict for guest ``vmid`` from its backups (any storage). ``tried``: why the
    backup labops ran for it failed (the guest is then refused, never patched)."""
    mine = [c for c in copies if c.vmid == vmid and counts(c, policy)]
    best = max(mine, key=lambda c: (c.ctime, c.volid)) if mine else None
    kind = "verified backup" if policy.verified else "good backup"
    if best is not None and _age_h(best, now) <= policy.max_age_h:
        return GateVerdict(
            vmid=vmid,
            state="passed",
            backup=best,
            reason=f"{kind} {best.volid} is {_age_h(best, now):.1f} h old "
            f"(at most {policy.max_age_h:g} h)",
        )
    seen = (
        f"newest {kind} is {_age_h(best, now):.1f} h old (more than {policy.max_age_h:g} h)"
        if best is not None
        else f"no {kind}"
    )
    if tried is not None:
        return GateVerdict(
            vmid=vmid, state="refused", reason=f"{seen}; the backup taken now failed: {tried}"
        )
    if policy.verified:
        # a backup taken now is not verified yet: waiting for it would never pass the gate
        return GateVerdict(
            vmid=vmid, state="refused", reason=f"{seen}; a new backup is not verified yet"
        )
    if not policy.backup_now:
        return GateVerdict(
            vmid=vmid, state="refused", reason=f"{seen} (require_backup.backup_now is off)"
        )
    return GateVerdict(vmid=vmid, state="needs-backup", reason=seen)


def restore_hint(kind: Literal["lxc", "qemu"], node: str, vmid: int, copy: BackupCopy) -> str:
    """The exact command and API call that put the guest back to ``copy`` (over the guest)."""
    volid, storage = shlex.quote(copy.volid), shlex.quote(copy.storage)
    if kind == "lxc":
        command = f"pct restore {vmid} {volid} --force 1 --storage <rootfs storage>"
        api = (
            f"POST /nodes/{node}/lxc vmid={vmid} ostemplate={copy.volid} restore=1 force=1 "
            "storage=<rootfs storage>"
        )
    else:
        command = f"qmrestore {volid} {vmid} --force 1"
        api = f"POST /nodes/{node}/qemu vmid={vmid} archive={copy.volid} force=1"
    del storage  # the backup's storage is in the volid; the rootfs storage is the operator's
    return f"restore from {copy.volid}: `{command}` (stop the guest first), or API {api}"


def rollback_point(snapshot: str | None, backup: BackupCopy | None) -> str | None:
    """What the guest is rolled back to after a failed upgrade: its snapshot when one is taken,
    else the gate's backup (None: neither)."""
    if snapshot:
        return f"snapshot {snapshot}"
    return f"backup {backup.volid}" if backup is not None else None
