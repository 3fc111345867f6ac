"""Proxmox Backup Server API payloads as models (kebab-case keys, read leniently)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from labops.models.pve import Payload, TaskStatus, upid_time


class PbsVersion(Payload):
    version: str
    release: str | None = None
    repoid: str | None = None


class PbsDatastore(Payload):
    """One item of ``GET /admin/datastore``."""

    store: str
    comment: str | None = None
    maintenance: str | None = None
    mount_status: str | None = Field(None, alias="mount-status")
    backend_type: str | None = Field(None, alias="backend-type")


class PbsDatastoreConfig(Payload):
    """One item of ``GET /config/datastore`` (the fields labops reads): the datastore's
    garbage collection runs on its ``gc-schedule`` (a calendar event; unset: never)."""

    name: str
    path: str | None = None
    gc_schedule: str | None = Field(None, alias="gc-schedule")


class PbsSnapshotFile(Payload):
    filename: str
    size: int | None = None
    crypt_mode: str | None = Field(None, alias="crypt-mode")


class PbsVerification(Payload):
    state: str = Field(..., description="ok | failed")
    upid: str | None = None


class PbsSnapshot(Payload):
    """One backup snapshot of ``GET /admin/datastore/{store}/snapshots``."""

    backup_type: str = Field(..., alias="backup-type", description="vm | ct | host")
    backup_id: str = Field(..., alias="backup-id")
    backup_time: int = Field(..., alias="backup-time", description="Epoch seconds (UTC).")
    files: list[PbsSnapshotFile] = Field(default_factory=list)
    size: int | None = None
    comment: str | None = None
    verification: PbsVerification | None = None
    fingerprint: str | None = None
    owner: str | None = None
    protected: bool = False

    @field_validator("backup_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return str(value)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.backup_time, UTC)

    @property
    def vmid(self) -> int | None:
        """The guest id for vm/ct snapshots (None for host backups or odd ids)."""
        if self.backup_type in ("vm", "ct") and self.backup_id.isdigit():
            return int(self.backup_id)
        return None

    @property
    def verified_ok(self) -> bool | None:
        """True/False after a verification, None when never verified."""
        return None if self.verification is None else self.verification.state == "ok"


class PbsGroup(Payload):
    """One backup group of ``GET /admin/datastore/{store}/groups`` or of a remote's
    ``GET /config/remote/{name}/scan/{store}/groups``."""

    backup_type: str = Field(..., alias="backup-type", description="vm | ct | host")
    backup_id: str = Field(..., alias="backup-id")
    last_backup: int = Field(..., alias="last-backup", description="Newest snapshot (epoch s).")
    backup_count: int | None = Field(None, alias="backup-count")
    owner: str | None = None

    @field_validator("backup_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return str(value)

    @property
    def group(self) -> str:
        """``ct/101``, as the sync job log and group filters name it."""
        return f"{self.backup_type}/{self.backup_id}"


class PbsTaskStatus(TaskStatus):
    """A PBS task's status (``exitstatus`` OK, 'WARNINGS: n', 'unknown' or the error)."""


class PbsUpid(BaseModel):
    """``UPID:node:pid:pstart:task_id:starttime:worker_type:worker_id:authid:`` (9 fields)."""

    node: str
    pid: int
    pstart: int
    task_id: int
    starttime: datetime
    worker_type: str
    worker_id: str
    authid: str

    @classmethod
    def parse(cls, upid: str) -> PbsUpid:
        parts = upid.split(":")
        if len(parts) != 10 or parts[0] != "UPID" or parts[9] != "":
            raise ValueError(f"not a PBS UPID: {upid!r}")
        return cls(
            node=parts[1],
            pid=int(parts[2], 16),
            pstart=int(parts[3], 16),
            task_id=int(parts[4], 16),
            starttime=upid_time(parts[5], upid),
            worker_type=parts[6],
            worker_id=_unescape(parts[7]),
            authid=parts[8],
        )


def _unescape(value: str) -> str:
    r"""Undo systemd escaping (``\x3a`` -> ``:``) of a PBS worker id."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("\\x", i) and i + 4 <= len(value):
            try:
                out.append(chr(int(value[i + 2 : i + 4], 16)))
                i += 4
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return "".join(out)


# -- maintenance jobs (used by the backups flow's audit) ---------------------------------------


class PbsGcStatus(Payload):
    """``GET /admin/datastore/{store}/gc`` (only the fields the audit reads)."""

    upid: str | None = None
    schedule: str | None = None
    last_run_endtime: int | None = Field(None, alias="last-run-endtime")
    last_run_state: str | None = Field(None, alias="last-run-state")
    removed_bytes: int | None = Field(None, alias="removed-bytes")
    pending_bytes: int | None = Field(None, alias="pending-bytes")


class PbsJobStatus(Payload):
    """A verify or prune job of ``GET /admin/verify`` / ``GET /admin/prune``: the job's config
    (``ns``: the namespace it starts at, the root when unset; ``max-depth``: how many levels
    below it, all when unset) flattened with its schedule state."""

    id: str
    store: str | None = None
    ns: str | None = None
    max_depth: int | None = Field(None, alias="max-depth")
    schedule: str | None = None
    last_run_upid: str | None = Field(None, alias="last-run-upid")
    last_run_state: str | None = Field(None, alias="last-run-state")
    last_run_endtime: int | None = Field(None, alias="last-run-endtime")
    next_run: int | None = Field(None, alias="next-run")


class PbsTaskItem(Payload):
    """One item of ``GET /nodes/localhost/tasks``."""

    upid: str
    starttime: int | None = None
    endtime: int | None = None
    worker_type: str | None = Field(None, alias="worker_type")
    worker_id: str | None = Field(None, alias="worker_id")
    status: str | None = None


class PbsSyncJob(Payload):
    """A sync job of ``GET /admin/sync`` (pull: ``remote`` -> ``store``; push, PBS 3.3+:
    ``store`` -> ``remote``'s ``remote-store``); ``ns``/``remote-ns`` are the namespaces."""

    id: str
    store: str
    ns: str | None = None
    remote: str | None = None
    remote_store: str = Field(..., alias="remote-store")
    remote_ns: str | None = Field(None, alias="remote-ns")
    sync_direction: str = Field("pull", alias="sync-direction")
    group_filter: list[str] = Field(default_factory=list, alias="group-filter")
    max_depth: int | None = Field(None, alias="max-depth")
    schedule: str | None = None
    last_run_upid: str | None = Field(None, alias="last-run-upid")
    last_run_state: str | None = Field(None, alias="last-run-state")
    last_run_endtime: int | None = Field(None, alias="last-run-endtime")
