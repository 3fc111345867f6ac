"""What the backups flow works with: guests, their backups (recovery points), the plan for each
guest, and the outcome of one vzdump. Plain pydantic models, no I/O and no Prefect."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from labops.models.pve import PveBackupVolume, PveGuest

GuestType = Literal["lxc", "qemu"]


class BackupGuest(BaseModel):
    """A guest as ``/cluster/resources`` lists it (only what backups need)."""

    vmid: int
    name: str = ""
    node: str
    type: GuestType
    status: str = "unknown"
    template: bool = False
    tags: list[str] = Field(default_factory=list)
    pool: str | None = None
    lock: str | None = None

    @property
    def label(self) -> str:
        return f"guest {self.vmid} ({self.name})" if self.name else f"guest {self.vmid}"

    @classmethod
    def from_pve(cls, guest: PveGuest) -> BackupGuest:
        return cls(
            vmid=guest.vmid,
            name=guest.name or "",
            node=guest.node,
            type="lxc" if guest.type == "lxc" else "qemu",
            status=guest.status,
            template=guest.template,
            tags=[t.lower() for t in guest.tags],
            pool=guest.pool,
            lock=guest.lock,
        )


class BackupCopy(BaseModel):
    """One backup of one guest on one storage (PVE storage content, or a PBS snapshot)."""

    volid: str
    storage: str
    vmid: int
    ctime: float = Field(..., description="Backup time, epoch seconds.")
    size: int = 0
    format: str | None = None
    notes: str | None = None
    protected: bool = False
    verify_state: str | None = Field(None, description="ok | failed | None (never verified)")
    verify_upid: str | None = None

    @classmethod
    def from_volume(cls, volume: PveBackupVolume) -> BackupCopy | None:
        """None for an item that names no guest or time (not a guest backup)."""
        if volume.vmid is None or volume.ctime is None:
            return None
        return cls(
            volid=volume.volid,
            storage=volume.storage,
            vmid=volume.vmid,
            ctime=float(volume.ctime),
            size=volume.size,
            format=volume.format,
            notes=volume.notes,
            protected=volume.protected,
            verify_state=volume.verification.state if volume.verification else None,
            verify_upid=volume.verification.upid if volume.verification else None,
        )

    @property
    def good(self) -> bool:
        """A recovery point to count on: has data and did not fail verification."""
        return self.size > 0 and self.verify_state != "failed"


class GuestPolicy(BaseModel):
    """The policy that applies to one guest, resolved from tags, overrides and defaults."""

    tier: str
    rpo_s: float
    refresh_after_s: float
    storage: str
    mode: str


class PlanAction(StrEnum):
    BACKUP = "backup"
    SKIP = "skip"  # last good backup inside its window
    EXCLUDED = "excluded"
    NODE_OFFLINE = "node-offline"
    TEMPLATE = "template"  # not selected; only checked for coverage


class GuestPlan(BaseModel):
    """What the flow does with one guest, and why (this is what a dry run shows)."""

    guest: BackupGuest
    action: PlanAction
    reason: str
    policy: GuestPolicy | None = None
    last_good: BackupCopy | None = None
    age_s: float | None = None


class TaskResult(BaseModel):
    """The end of one PVE/PBS task as read from its status."""

    upid: str
    status: Literal["ok", "warning", "error"]
    exitstatus: str
    started: float | None = None
    ended: float | None = None


class BackupOutcome(BaseModel):
    """What happened to one guest's backup task."""

    vmid: int
    status: Literal["ok", "warning", "failed", "fresh"]
    reason: str = ""
    upid: str | None = None
    exitstatus: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    lock_waits: int = 0
    adopted: bool = Field(
        False, description="An already running vzdump of this guest was waited for, not started."
    )

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


class RetentionMark(BaseModel):
    volid: str
    ctime: float
    mark: Literal["keep", "remove", "protected"]


class RetentionGroup(BaseModel):
    """What a prune with the configured keep-* options would do to one guest's backups."""

    vmid: int
    storage: str
    keep: int
    remove: int
    protected: int
    marks: list[RetentionMark] = Field(default_factory=list)


class OrphanGroup(BaseModel):
    """Backups of a guest that no longer exists."""

    vmid: int
    storage: str
    count: int
    newest: float
    size: int
    notes: str | None = None
    protected: int = Field(0, description="How many of these backups are protected.")

    @property
    def key(self) -> str:
        return f"{self.vmid}@{self.storage}"


class JobCheck(BaseModel):
    """Whether one of PBS's maintenance jobs (prune, gc, verify) ran recently enough."""

    job: str
    last_run: float | None = None
    state: str | None = None
    max_age_s: float
    ok: bool
    detail: str = ""
