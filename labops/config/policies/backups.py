"""Policy of the backups operation (owned by its flow): what is backed up, how often, where, how
fast, what counts as verified, how the weekly restore drill runs, what must be off-site (PBS
sync jobs) and which backups of deleted guests are kept on purpose (archived)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from labops.config.policies.drill_checks import GuestCheck
from labops.config.systems import Strict
from labops.models.pve_net import NET_ID, check_net_string

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: object) -> float:
    """Seconds from ``"26h"``, ``"7d"``, ``"90m"``, ``"2w"`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 24h, 7d, 90m")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            if seconds > 0:
                return seconds
    raise ValueError("expected a duration like 24h, 7d, 90m (or seconds)")


def format_duration(seconds: float) -> str:
    """The shortest exact form: 86400 -> "1d", 93600 -> "26h", 90 -> "90s"."""
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]

BackupMode = Literal["snapshot", "suspend", "stop"]
Compress = Literal["0", "1", "gzip", "lzo", "zstd"]


class _Policy(Strict):
    # Defaults are written as "2d"/"60s" for readability, so they must go through the parser too.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Selection(_Policy):
    """Which guests the flow looks after. Empty lists mean "no filter" on that criterion; a guest
    must match every non-empty filter. Exclusions win over inclusions."""

    nodes: list[str] = Field(default_factory=list, description="Only guests on these nodes.")
    pools: list[str] = Field(default_factory=list, description="Only guests in these pools.")
    tags: list[str] = Field(
        default_factory=list, description="Only guests carrying at least one of these tags."
    )
    vmids: list[int] = Field(default_factory=list, description="Only these guests.")
    exclude_tags: list[str] = Field(
        default_factory=lambda: ["nobackup"],
        description="Guests with any of these tags are skipped.",
    )
    exclude_vmids: list[int] = Field(default_factory=list, description="Never these guests.")
    templates: bool = Field(
        False,
        description="Back up templates too (otherwise they are only checked for coverage).",
    )


class RpoTier(_Policy):
    """One recovery point objective: the oldest a guest's last good backup may be."""

    rpo: Duration = Field(..., description="Maximum age of the last good backup, e.g. 26h, 7d.")
    refresh_after: Duration | None = Field(
        None,
        description=(
            "Age from which the flow takes a new backup (default: 90% of the RPO, so that a "
            "nightly run does not skip a backup that would go stale before the next night)."
        ),
    )
    storage: str | None = Field(
        None, description="Storage for this tier (default: backups.storage)."
    )
    mode: BackupMode | None = Field(None, description="vzdump mode for this tier.")

    @property
    def refresh_after_s(self) -> float:
        return self.refresh_after if self.refresh_after is not None else self.rpo * 0.9


class GuestOverride(_Policy):
    """Per-guest exceptions, keyed by vmid."""

    tier: str | None = Field(None, description="Tier of this guest (a name of backups.tiers).")
    storage: str | None = Field(None, description="Storage for this guest's backups.")
    mode: BackupMode | None = Field(None, description="vzdump mode for this guest.")
    exclude: bool = Field(False, description="Never back this guest up.")


class Retention(_Policy):
    """Retention as a prune would apply it (reported as a dry run; the flow never prunes)."""

    keep_last: int | None = Field(None, ge=0, description="Keep the newest N backups.")
    keep_hourly: int | None = Field(None, ge=0, description="Keep one per hour for N hours.")
    keep_daily: int | None = Field(7, ge=0, description="Keep one per day for N days.")
    keep_weekly: int | None = Field(4, ge=0, description="Keep one per ISO week for N weeks.")
    keep_monthly: int | None = Field(6, ge=0, description="Keep one per month for N months.")
    keep_yearly: int | None = Field(None, ge=0, description="Keep one per year for N years.")

    def options(self) -> dict[str, int]:
        """The keep-* options that are set, in PBS's own spelling."""
        return {
            name.replace("_", "-"): value
            for name, value in self.model_dump().items()
            if value is not None and value > 0
        }


class PbsJobAges(_Policy):
    """How recently PBS's own maintenance must have run (unknown counts as too old)."""

    prune: Duration = Field(172800, description="Last prune (job or task) at most this old.")
    gc: Duration = Field(691200, description="Last garbage collection at most this old.")
    verify: Duration = Field(691200, description="Last verify job run at most this old.")


def _net_id(value: str) -> str:
    match = NET_ID.match(value)
    # PVE numbers a guest's interfaces net0..net31 (lxc and qemu alike).
    if match is None or int(match.group(1)) > 31:
        raise ValueError(f"{value!r} is not an interface name (net0 .. net31)")
    return value


def _net_string(value: str) -> str:
    problem = check_net_string(value)
    if problem:
        raise ValueError(f"not a PVE net string: {problem}")
    return value


NetId = Annotated[str, AfterValidator(_net_id)]
NetString = Annotated[str, AfterValidator(_net_string)]
NetworkMode = Literal["isolate", "keep", "replace"]


class RestoreDrillPolicy(_Policy):
    """Restore drill: the latest backup restored as a scratch guest, checked, then destroyed."""

    scratch_vmid_min: int = Field(
        9900,
        ge=100,
        le=999_999_999,
        description=(
            "First vmid the drill may use. It restores only into this range, and destroys a "
            "guest only inside it (and only one it restored and tagged in the same run)."
        ),
    )
    scratch_vmid_max: int = Field(
        9999, ge=100, le=999_999_999, description="Last vmid the drill may use."
    )
    pool: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9.\-_]+$",
        description=(
            "PVE pool the scratch guest is restored into (it must exist: pveum pool add). The "
            "drill's token then holds its privileges to create, change, start and destroy "
            "guests on /pool/<pool> only (docs/production.md, section 8). Without a pool it "
            "needs them on /vms, i.e. on every guest."
        ),
    )
    node: str | None = Field(None, description="Node to restore on (default: the guest's node).")
    storage: str = Field("local-lvm", description="Storage for the scratch guest's disks.")
    guests: list[int] = Field(
        default_factory=list,
        description="Guests drilled in turn (empty: every selected guest with a backup).",
    )
    check_command: str | None = Field(
        None,
        description=(
            "Command run inside every scratch guest (pct exec for a container, the QEMU guest "
            "agent for a VM); must exit 0."
        ),
    )
    check_host: str | None = Field(
        None, description="Address the restored guest answers on, for check_port."
    )
    check_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port that must accept (needs network: replace or keep).",
    )
    start_wait: Duration = Field(60, description="How long the scratch guest may take to run.")
    healthy_boot: bool = Field(
        True,
        description=(
            "Check that the scratch guest booted healthy: `systemctl is-system-running --wait` "
            "(OpenRC: runlevel default reached, no crashed service), through pct exec for a "
            "container and the QEMU guest agent for a VM."
        ),
    )
    boot_wait: Duration = Field(
        300, description="How long the scratch guest may take from start to a healthy boot."
    )
    checks: dict[int, list[GuestCheck]] = Field(
        default_factory=dict,
        description=(
            "Per-guest checks inside the scratch guest, by the original's vmid: "
            "{kind: tcp, port: 5432}, {kind: http, port: 8080, path: /health}, "
            "{kind: command, command: ...}. Guest tags drill-tcp-<port> and drill-http-<port> "
            "add tcp and http (path /) checks too."
        ),
    )
    period: Duration = Field(
        90 * 86400,
        description="Every guest in scope is drilled within this period (the rotation).",
    )
    rto_regression: float = Field(
        0.5,
        gt=0,
        description="A drill slower than its guest's recent drills by more than this is a finding.",
    )
    rto_baseline: int = Field(
        3, ge=1, le=20, description="How many recent passed drills of a guest make its baseline."
    )
    timeout: Duration = Field(1800, description="Restore task timeout.")
    network: NetworkMode = Field(
        "isolate",
        description=(
            "The scratch guest's network before it starts. A restore keeps the backed-up "
            "interfaces (the original's bridge, VLAN and static addresses; only MACs are new), "
            "so on the same bridge it would take the production guest's address. isolate: "
            "every netN gets link_down=1 (unplugged; command checks through pct exec still "
            "work). replace: the interfaces of replace_nets get those values, every other one "
            "is unplugged. keep: as backed up (address conflicts possible; the report warns)."
        ),
    )
    replace_nets: dict[NetId, NetString] = Field(
        default_factory=dict,
        description=(
            "For network: replace, interface -> its whole PVE net string, e.g. "
            '{net0: "name=eth0,bridge=vmbr1,ip=10.99.0.50/24"} for a container or '
            '{net0: "virtio,bridge=vmbr1"} for a VM (PVE makes up a MAC when none is given; a '
            "VM's addresses stay in its cloud-init ipconfigN)."
        ),
    )

    @model_validator(mode="after")
    def _range(self) -> RestoreDrillPolicy:
        if self.scratch_vmid_max < self.scratch_vmid_min:
            raise ValueError("scratch_vmid_max must not be below scratch_vmid_min")
        return self

    @model_validator(mode="after")
    def _network(self) -> RestoreDrillPolicy:
        if self.network == "replace" and not self.replace_nets:
            raise ValueError(
                "network: replace needs replace_nets (interface -> PVE net string, e.g. "
                "net0: name=eth0,bridge=vmbr1,ip=10.99.0.50/24)"
            )
        if self.network != "replace" and self.replace_nets:
            raise ValueError(
                f"replace_nets is used only with network: replace (network is {self.network!r})"
            )
        if self.network == "isolate" and self.check_port is not None:
            # Refused rather than skipped: a drill that silently drops a configured check would
            # report "passed" for less than the operator asked for.
            raise ValueError(
                "check_port cannot reach a scratch guest whose interfaces are unplugged "
                "(network: isolate); use network: replace with an isolated bridge labops "
                "reaches (and check_host its address there), or remove check_port"
            )
        return self


def _default_tiers() -> dict[str, RpoTier]:
    return {"24h": RpoTier(rpo=26 * 3600), "7d": RpoTier(rpo=7 * 86400 + 2 * 3600)}


class ArchivedGuest(_Policy):
    """Backups of a deleted guest kept on purpose: shown, never a coverage gap."""

    vmid: int = Field(..., ge=1, description="The deleted guest's id.")
    note: str | None = Field(None, max_length=200, description="Why it is kept.")
    keep_until: date | None = Field(
        None, description="Keep until this day; after it the archive is flagged again."
    )


class OffsitePolicy(_Policy):
    """Off-site copies: how old a guest's newest copy on each off-site target may be."""

    targets: list[str] = Field(
        default_factory=list,
        description=(
            "Off-site targets every covered guest must have a copy on, as PBS names them "
            "('remote:store' or 'remote:store/ns' for push jobs, 'store' or 'store/ns' on "
            "this PBS for pull jobs); empty: every target a sync job writes to."
        ),
    )
    rpo: Duration = Field(7 * 86400, description="Default off-site RPO (newest copy age).")
    tier_tags: dict[str, Duration] = Field(
        default_factory=dict, description="Guest tag -> off-site RPO (the shortest one wins)."
    )
    guests: dict[int, Duration] = Field(
        default_factory=dict, description="Per-guest off-site RPO (wins over tags)."
    )
    exclude_tags: list[str] = Field(
        default_factory=lambda: ["no-offsite"], description="Guests never expected off-site."
    )
    replication: bool = Field(
        True,
        description=(
            "Also check PVE storage replication: each replicated guest gets an off-site row per "
            "job on target 'replication:<node>', aged from its last sync."
        ),
    )


class BackupPolicy(_Policy):
    """What the backups flow does and its limits."""

    selection: Selection = Selection()
    tiers: dict[str, RpoTier] = Field(
        default_factory=_default_tiers, description="RPO tiers by name."
    )
    default_tier: str = Field("24h", description="Tier of a guest no tag or override places.")
    tier_tags: dict[str, str] = Field(
        default_factory=lambda: {"rpo-7d": "7d", "rpo-24h": "24h"},
        description="Guest tag -> tier name; the first matching tag in this order wins.",
    )
    guests: dict[int, GuestOverride] = Field(
        default_factory=dict, description="Per-guest overrides by vmid."
    )
    storage: str | None = Field(
        None, description="Backup storage (default: systems.pbs.pve_storage)."
    )
    scan_storages: list[str] = Field(
        default_factory=list,
        description="Further storages whose backups count as recovery points.",
    )
    mode: BackupMode = Field("snapshot", description="vzdump mode: snapshot, suspend or stop.")
    compress: Compress = Field("zstd", description="vzdump compression (ignored by PBS).")
    notes_template: str = Field(
        "{{guestname}} ({{node}})",
        max_length=1024,
        description="Notes of each backup; {{cluster}} {{guestname}} {{node}} {{vmid}}.",
    )
    protected: bool = Field(False, description="Mark new backups protected.")
    per_node_limit: int = Field(1, ge=1, le=16, description="Backups at once on one node.")
    per_storage_limit: int = Field(2, ge=1, le=64, description="Backups at once to one storage.")
    task_timeout: Duration = Field(7200, description="Longest one vzdump may run.")
    poll_interval: Duration = Field(2, description="Longest pause between task polls.")
    lock_wait: Duration = Field(600, description="How long to wait for a locked guest.")
    lock_retry: Duration = Field(15, description="Pause between looks at a locked guest.")
    slot_wait: Duration | None = Field(
        None, description="Longest wait for a concurrency slot (default: task_timeout)."
    )
    lease: Duration = Field(
        60,
        ge=60,
        description=(
            "Lease of a concurrency slot; a crashed run's slots free themselves after this "
            "(Prefect's minimum is 60s)."
        ),
    )
    limits_scope: str = Field(
        "labops",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description=(
            "Prefix of the Prefect concurrency-limit names (<scope>-<lab>-node-<node>, "
            "<scope>-<lab>-storage-<storage>); the lab's name already keeps labs apart."
        ),
    )
    start_attempts: int = Field(
        5,
        ge=1,
        le=10,
        description="vzdump starts tried when an answer is lost (after checking none began).",
    )
    lost_answer_wait: Duration = Field(
        30,
        description=(
            "After a vzdump, restore, start or destroy whose answer was lost, how long the "
            "node's task list is watched for the task it may have begun before it is sent again."
        ),
    )
    min_size_bytes: int = Field(
        1024 * 1024, ge=0, description="A new backup smaller than this is implausible."
    )
    min_size_ratio: float = Field(
        0.1, ge=0, le=1, description="... or smaller than this fraction of the previous one."
    )
    verification_max_age: Duration = Field(
        30 * 86400, description="A last good backup verified longer ago than this is flagged."
    )
    retention: Retention = Retention()
    pbs_jobs: PbsJobAges = PbsJobAges()
    restore_drill: RestoreDrillPolicy = RestoreDrillPolicy()
    archived: list[ArchivedGuest] = Field(
        default_factory=list,
        description="Backups of deleted guests kept on purpose (never a coverage gap).",
    )
    offsite: OffsitePolicy | None = Field(
        None, description="Off-site copies per guest (PBS sync jobs); None: not audited."
    )

    @model_validator(mode="after")
    def _tiers_exist(self) -> BackupPolicy:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of the tiers")
        for tag, tier in self.tier_tags.items():
            if tier not in self.tiers:
                raise ValueError(f"tier_tags.{tag}: tier {tier!r} is not one of the tiers")
        for vmid, override in self.guests.items():
            if override.tier is not None and override.tier not in self.tiers:
                raise ValueError(f"guests.{vmid}.tier: {override.tier!r} is not one of the tiers")
        return self
