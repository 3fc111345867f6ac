"""Proxmox VE API payloads as models (what /api2/json returns, read leniently).

Payload models ignore unknown keys (newer PVE versions add fields) but type the ones labops uses.
PVE answers booleans as 0/1 and, in old versions, vmids as strings: both are accepted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labops.models.pve_net import interfaces

_TAG_SPLIT = re.compile(r"[;, ]+")
_WARNINGS = re.compile(r"^WARNINGS: (\d+)$")


class Payload(BaseModel):
    """Base of API payload models: unknown keys ignored, kebab-case aliases allowed."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class PveVersion(Payload):
    version: str
    release: str | None = None
    repoid: str | None = None


class PveClusterMember(Payload):
    """One item of ``GET /cluster/status``: the cluster itself or a node (with its address)."""

    type: str
    name: str = ""
    ip: str | None = None
    online: bool = False
    local: bool = False

    @field_validator("online", "local", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> bool:
        return _to_bool(value)


class PveNode(Payload):
    """One item of ``GET /nodes``."""

    node: str
    status: str = Field("unknown", description="online | offline | unknown")
    cpu: float | None = None
    maxcpu: int | None = None
    mem: int | None = None
    maxmem: int | None = None
    uptime: int | None = None
    level: str | None = None
    ssl_fingerprint: str | None = None

    @property
    def online(self) -> bool:
        return self.status == "online"


def tag_list(value: Any) -> list[str]:
    """A guest's ``tags`` (``a;b``, a list, or a bare number from Perl's JSON) as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [t for t in _TAG_SPLIT.split(value) if t]
    if isinstance(value, int | float):  # Perl's JSON writes a numeric-looking tag bare
        return [str(value)]
    if not isinstance(value, list | tuple):
        raise ValueError(f"tags: expected a string or a list, got {type(value).__name__}")
    return [str(t) for t in value]


class PveGuest(Payload):
    """One guest of ``GET /cluster/resources?type=vm`` (LXC or QEMU)."""

    vmid: int
    node: str
    type: str = Field(..., description="lxc | qemu")
    status: str = Field("unknown", description="running | stopped | unknown")
    name: str | None = None
    template: bool = False
    tags: list[str] = Field(default_factory=list)
    lock: str | None = None
    pool: str | None = None
    hastate: str | None = None
    uptime: int | None = None
    cpu: float | None = None
    maxcpu: float | None = None
    mem: int | None = None
    maxmem: int | None = None
    disk: int | None = None
    maxdisk: int | None = None

    @field_validator("template", mode="before")
    @classmethod
    def _template(cls, value: Any) -> bool:
        return _to_bool(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        return tag_list(value)

    @property
    def label(self) -> str:
        """``guest 101 (dns)`` — how reports name a guest."""
        return f"guest {self.vmid} ({self.name})" if self.name else f"guest {self.vmid}"

    @property
    def running(self) -> bool:
        return self.status == "running"


class TaskStatus(Payload):
    """``GET .../tasks/{upid}/status`` (PVE and PBS share the shape)."""

    upid: str
    node: str | None = None
    pid: int | None = None
    pstart: int | None = None
    starttime: int | None = None
    type: str | None = None
    id: str | None = None
    user: str | None = None
    tokenid: str | None = None
    status: str = Field(..., description="running | stopped")
    exitstatus: str | None = Field(
        None, description="Only when stopped: OK, 'WARNINGS: n' or the error message."
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str | None:
        return None if value is None else str(value)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def succeeded(self) -> bool:
        """True when stopped with ``OK`` or ``WARNINGS: n``."""
        if self.running or self.exitstatus is None:
            return False
        return self.exitstatus == "OK" or bool(_WARNINGS.match(self.exitstatus))

    @property
    def warnings(self) -> int:
        match = _WARNINGS.match(self.exitstatus or "")
        return int(match.group(1)) if match else 0

    @property
    def error(self) -> str | None:
        """The task's error message when it stopped without success, else None."""
        if self.running or self.succeeded:
            return None
        return self.exitstatus or "stopped without an exit status"


class PveTaskStatus(TaskStatus):
    """A PVE task's status."""


class PveUpid(BaseModel):
    """``UPID:node:pid:pstart:starttime:type:id:user:`` (8 fields and a trailing colon)."""

    node: str
    pid: int
    pstart: int
    starttime: datetime
    type: str
    id: str
    user: str

    @classmethod
    def parse(cls, upid: str) -> PveUpid:
        parts = upid.split(":")
        if len(parts) != 9 or parts[0] != "UPID" or parts[8] != "":
            raise ValueError(f"not a PVE UPID: {upid!r}")
        return cls(
            node=parts[1],
            pid=int(parts[2], 16),
            pstart=int(parts[3], 16),
            starttime=upid_time(parts[4], upid),
            type=parts[5],
            id=parts[6],
            user=parts[7],
        )


def upid_time(hex_seconds: str, upid: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(hex_seconds, 16), UTC)
    except (OverflowError, OSError) as exc:  # a start time no clock can hold
        raise ValueError(f"not a UPID: {upid!r} (start time {hex_seconds}: {exc})") from None


def is_upid(value: object) -> bool:
    """True for a UPID string (vzdump answers plain ``"OK"`` when no guest is on the node)."""
    return isinstance(value, str) and value.startswith("UPID:")


# -- backups (used by the backups flow and the restore drill) ----------------------------------


class PveVerification(Payload):
    state: str = Field(..., description="ok | failed")
    upid: str | None = None


class PveBackupVolume(Payload):
    """One item of ``GET /nodes/{node}/storage/{storage}/content?content=backup``."""

    volid: str
    vmid: int | None = None
    ctime: int | None = Field(None, description="Backup time, epoch seconds.")
    size: int = 0
    format: str | None = None
    subtype: str | None = None
    notes: str | None = None
    protected: bool = False
    verification: PveVerification | None = None
    encrypted: str | None = None

    @field_validator("protected", mode="before")
    @classmethod
    def _protected(cls, value: Any) -> bool:
        return _to_bool(value)

    @property
    def storage(self) -> str:
        return self.volid.split(":", 1)[0]


class PveStorage(Payload):
    """One item of ``GET /nodes/{node}/storage``."""

    storage: str
    type: str | None = None
    content: str = ""
    shared: bool = False
    active: bool = True
    enabled: bool = True

    @field_validator("shared", "active", "enabled", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> bool:
        return _to_bool(value)


class PveStorageConfig(Payload):
    """One storage definition of ``GET /storage`` (the cluster's storage.cfg; secrets are never
    returned). A ``pbs`` storage names its datastore and the namespace its backups go to (unset:
    the root namespace)."""

    storage: str
    type: str
    content: str = ""
    datastore: str | None = None
    namespace: str | None = None
    server: str | None = None
    disable: bool = False

    @field_validator("disable", mode="before")
    @classmethod
    def _disable(cls, value: Any) -> bool:
        return _to_bool(value)


class PveBackupJob(Payload):
    """One scheduled job of ``GET /cluster/backup``."""

    id: str
    enabled: bool = True
    schedule: str | None = None
    storage: str | None = None
    vmid: str | None = None
    all: bool = False
    exclude: str | None = None
    pool: str | None = None
    node: str | None = None
    next_run: int | None = Field(None, alias="next-run")

    @field_validator("enabled", "all", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> bool:
        return _to_bool(value)

    @field_validator("vmid", mode="before")
    @classmethod
    def _vmid(cls, value: Any) -> str | None:
        return None if value is None else str(value)


class PveReplicationJob(Payload):
    """One storage replication job of ``GET /cluster/replication`` (``replication.cfg``): the
    guest, the node it copies to and whether it is disabled; id ``<guest>-<jobnum>``."""

    id: str
    guest: int
    target: str
    jobnum: int | None = None
    schedule: str = "*/15"  # PVE's default when the job sets none
    disable: bool = False
    rate: float | None = None
    comment: str | None = None
    source: str | None = None
    remove_job: str | None = None

    @field_validator("disable", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> bool:
        return _to_bool(value)


class PveReplicationState(PveReplicationJob):
    """One job of ``GET /nodes/{node}/replication`` (``pvesr status``): its config plus the
    state the node keeps (``pve-replication-state.json``), each state field only once set:
    ``last_sync`` 0 or absent: never synced; ``pid`` present while a sync runs."""

    last_sync: int = 0
    last_try: int = 0
    fail_count: int = 0
    error: str | None = None
    duration: float | None = None
    next_sync: int | None = None
    pid: int | None = None
    vmtype: str | None = None


class PveGuestRef(Payload):
    """One item of ``GET /cluster/backup-info/not-backed-up``."""

    vmid: int
    type: str | None = None
    name: str | None = None


class PveTaskItem(Payload):
    """One item of ``GET /nodes/{node}/tasks`` (``status`` is the exit status or RUNNING)."""

    upid: str
    node: str | None = None
    starttime: int | None = None
    endtime: int | None = None
    type: str | None = None
    id: str | None = None
    user: str | None = None
    status: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str | None:
        return None if value is None else str(value)

    @property
    def running(self) -> bool:
        return self.endtime is None and self.status in (None, "RUNNING", "running")


class PveGuestState(Payload):
    """``GET /nodes/{node}/{lxc|qemu}/{vmid}/status/current`` (what backups and drills read)."""

    vmid: int | None = None
    status: str = "unknown"
    name: str | None = None
    lock: str | None = None
    template: bool = False

    @field_validator("template", mode="before")
    @classmethod
    def _template(cls, value: Any) -> bool:
        return _to_bool(value)


class PveGuestConfig(Payload):
    """``GET /nodes/{node}/{lxc|qemu}/{vmid}/config``: the keys the restore drill reads."""

    digest: str | None = Field(None, description="SHA1 of the config file (for PUT digest=).")
    lock: str | None = None
    tags: list[str] = Field(default_factory=list, description="The guest's tags, in order.")
    nets: dict[str, str] = Field(
        default_factory=dict, description="netN -> property string, in interface order."
    )
    ipconfigs: dict[str, str] = Field(
        default_factory=dict, description="ipconfigN (a VM's cloud-init addresses)."
    )
    local: dict[str, str] = Field(
        default_factory=dict,
        description="Keys that may tie the guest to its node: hostpciN, usbN (VMs), mpN, devN "
        "(containers).",
    )

    @model_validator(mode="before")
    @classmethod
    def _collect(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "nets" in data:
            return data
        ipconfigs = {k: str(v) for k, v in data.items() if re.fullmatch(r"ipconfig\d+", k)}
        local = {k: str(v) for k, v in data.items() if re.fullmatch(r"(hostpci|usb|mp|dev)\d+", k)}
        return {
            **data,
            "nets": interfaces(data),
            "ipconfigs": dict(sorted(ipconfigs.items())),
            "local": dict(sorted(local.items())),
        }

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        return tag_list(value)


class PveSnapshot(Payload):
    """One item of ``GET /nodes/{node}/lxc/{vmid}/snapshot`` (the pseudo entry ``current`` is
    dropped by ``PveClient.snapshots``)."""

    name: str
    snaptime: int | None = None
    description: str | None = None
    parent: str | None = None


class PveNodeStatus(Payload):
    """``GET /nodes/{node}/status`` (only what the patch flow reads; more keys exist)."""

    uptime: int | None = None
    pveversion: str | None = None
    kversion: str | None = None
