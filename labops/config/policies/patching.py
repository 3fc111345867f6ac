"""Policy of the patching operation (owned by its flow): what is checked, how it is reached, when
and how changes are rolled out, and what makes a host healthy afterwards."""

from __future__ import annotations

import re
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from labops.config.policies.cves import CvePolicy
from labops.config.systems import Strict
from labops.patching.packages import valid_package_name

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class MaintenanceWindow(Strict):
    """When apply mode may change hosts. ``end`` before ``start`` means the window runs past
    midnight (sat 23:00-03:00 ends on Sunday)."""

    days: list[Day] = Field(
        default_factory=lambda: list(ALL_DAYS),
        min_length=1,
        description="Days the window opens on.",
    )
    start: str = Field("02:00", description="HH:MM local time the window opens.")
    end: str = Field("05:00", description="HH:MM local time the window closes.")
    timezone: str = Field("UTC", description="IANA zone, e.g. Europe/Paris.")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("expected HH:MM (24 h)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class Exclusions(Strict):
    """Hosts and packages never touched (checked still, unless the host is excluded)."""

    vmids: list[int] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, description="PVE tags, e.g. nopatch.")
    hosts: list[str] = Field(default_factory=list, description="Host or guest names.")
    packages: list[str] = Field(
        default_factory=list,
        description="Packages never upgraded: left out of named upgrades; around a dist-upgrade "
        "(always on nodes) the pending ones not already held are apt-mark held, then unheld. "
        "apk hosts upgrade the named list instead. Reported per host as left pending.",
    )

    @field_validator("packages")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [
            n for n in value if not (valid_package_name("apt", n) or valid_package_name("apk", n))
        ]
        if bad:
            raise ValueError(f"not in the package-name grammar: {', '.join(map(repr, bad))}")
        return value


class HealthCheck(Strict):
    """What must answer after a host is patched (besides its configured services)."""

    command: str | None = Field(None, description="Run on the host; exit 0 means healthy.")
    url: str | None = Field(None, description="Fetched from the controller; 2xx/3xx is healthy.")
    services: list[str] = Field(
        default_factory=list, description="systemd units (or OpenRC services) that must be active."
    )
    timeout_s: float = Field(30.0, gt=0)


class RequireBackup(Strict):
    """Backup-gated apply: a guest is patched only after a recent enough good backup of it
    (taken now by labops when there is none); a guest without one is skipped, never patched."""

    enabled: bool = Field(False, description="Gate every guest's upgrade on a backup.")
    max_age_h: float = Field(
        24.0, gt=0, description="The newest good backup must be at most this old."
    )
    verified: bool = Field(
        False, description="Only a backup whose verification passed counts (PBS verify)."
    )
    storage: str | None = Field(
        None,
        description="Where the gate's backups are looked for and written (None: the backups "
        "policy's default storage).",
    )
    backup_now: bool = Field(
        True,
        description="Run vzdump for a guest without a good enough backup (within the backups' "
        "per-node/per-storage limits) and wait for it; off: skip such a guest.",
    )
    auto_restore: bool = Field(
        False,
        description="When a guest's upgrade fails and its fresh backup is its rollback point (no "
        "snapshot possible), restore it from that backup over itself through the PVE API "
        "(stopped first, started again if it ran), while the window is open; off: the report "
        "names the exact restore command and API call only.",
    )
    restore_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="How long an automatic restore's PVE task is followed; one that outlives it "
        "is reported 'restore failed' with the task left running (never started twice).",
    )


class Drain(Strict):
    """What happens to a node's running guests around its reboot (``reboot`` says when a node
    reboots, ``drain`` what its guests do meanwhile)."""

    mode: Literal["migrate", "shutdown", "none"] = Field(
        "none",
        description="migrate: VMs live, containers by restart, to the online node with the most "
        "free memory, back after the node returns healthy; shutdown: clean shutdown, started "
        "after; none: left to the reboot.",
    )
    pinned: Literal["shutdown", "refuse"] = Field(
        "shutdown",
        description="Guests local resources pin (passthrough, bind mount, device) in migrate "
        "mode: shut down and started after, or refuse the node's reboot.",
    )
    migrate_back: bool = Field(True, description="Move migrated guests home after the reboot.")
    task_timeout_s: float = Field(1800.0, gt=0, description="Longest wait for one migration.")


class PatchPolicy(Strict):
    """What the patching flow does and its limits."""

    refresh: bool = Field(True, description="Refresh package lists (apt-get update) first.")
    exclusions: Exclusions = Exclusions()
    stopped_containers: Literal["skip", "start-check-stop"] = Field(
        "skip", description="Stopped containers: report as skipped, or start, check, stop again."
    )
    access: Literal["ssh", "pct"] | None = Field(
        None,
        description="How containers are reached when the host list does not say "
        "(None: inventory.container_access).",
    )
    windows: list[MaintenanceWindow] = Field(
        default_factory=lambda: [MaintenanceWindow()],
        description="Apply mode refuses to run outside every window.",
    )
    canaries: list[str] = Field(
        default_factory=list, description="Hosts patched first; the rollout stops if one fails."
    )
    canary_count: int = Field(
        1, ge=0, description="When no canary is named: this many hosts of the plan go first."
    )
    batch_size: int = Field(5, ge=1, description="Hosts per batch after the canaries.")
    per_node_parallel: int = Field(
        2, ge=1, description="Containers of one node patched at the same time."
    )
    max_failures: int = Field(1, ge=0, description="Stop the rollout after more failures.")
    max_fail_ratio: float = Field(
        0.2, ge=0, le=1, description="Stop when failed/done passes this (max_fail_percentage)."
    )
    snapshot_before: bool = Field(True, description="LXC snapshot before changing a container.")
    rollback_on_failure: bool = Field(True, description="Roll back to the snapshot on failure.")
    delete_snapshots_after_h: float = Field(
        24.0, ge=0, description="Snapshots of healthy hosts are deleted after this (0: at once)."
    )
    reboot: Literal["never", "when-required"] = Field("when-required")
    drain: Drain = Drain()
    overlaps: Literal["refuse-same-node", "list"] = Field(
        "refuse-same-node",
        description="Jobs running while the apply is expected to run (PVE backup, PBS verify/"
        "prune, labops schedules) are listed; refuse-same-node: a PVE backup job touching a "
        "node being patched refuses that node and its guests.",
    )
    security_only: bool = Field(False, description="Apply only security updates by default.")
    preapproved_scheduled: bool = Field(
        False, description="Scheduled (deployment) runs apply without waiting for approval."
    )
    approval_timeout_s: float = Field(3600.0, gt=0, description="Pause before giving up.")
    health: HealthCheck = HealthCheck()
    health_by_host: dict[str, HealthCheck] = Field(
        default_factory=dict, description="Per-host health checks (replace the default)."
    )
    check_timeout_s: float = Field(120.0, gt=0, description="Timeout of the check command.")
    refresh_timeout_s: float = Field(300.0, gt=0, description="Timeout of apt-get/apk update.")
    upgrade_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Longest wait for one upgrade. A node's upgrade runs detached on the node and "
        "is left running past it (reported still running, never killed).",
    )
    upgrade_poll_s: float = Field(
        10.0, gt=0, description="Pause between polls of a node's detached upgrade."
    )
    busy_wait_s: float = Field(
        900.0,
        ge=0,
        description="How long a node busy with a backup, restore or migration (or with a locked "
        "guest) is waited for before its upgrade or reboot is skipped (0: skip at once).",
    )
    busy_poll_s: float = Field(15.0, gt=0, description="Pause between looks at a busy node.")
    step_estimate_s: float = Field(
        600.0,
        gt=0,
        description="Expected length of one rollout step (a batch, or a node with its reboot): "
        "the plan's length, shown against the window's end.",
    )
    fresh_backup_h: float = Field(
        26.0,
        gt=0,
        description="A guest with a backup this recent counts as protected in the plan (when no "
        "snapshot is taken before its upgrade).",
    )
    require_backup: RequireBackup = RequireBackup()
    lock_wait_s: float = Field(
        120.0, ge=0, description="How long to wait for a held dpkg/apt lock before failing."
    )
    node_boot_timeout_s: float = Field(600.0, gt=0, description="Wait for a rebooted node.")
    guest_boot_allowance_s: float = Field(
        180.0,
        gt=0,
        description="How long a container's or VM's reboot may take: a guest is rebooted only "
        "while the window stays open that long, else its reboot is left for later.",
    )
    started_ssh_wait_s: float = Field(
        120.0,
        ge=0,
        description="How long a container started for its check (start-check-stop) may take "
        "to answer SSH; it is asked again every few seconds until then.",
    )
    parallel: int = Field(50, ge=1, le=1000, description="Hosts checked at once.")
    cves: CvePolicy | None = Field(
        None, description="CVE lookup of pending updates (OSV, Debian tracker, KEV); None: off."
    )

    @model_validator(mode="after")
    def _canaries_not_excluded(self) -> PatchPolicy:
        both = set(self.canaries) & set(self.exclusions.hosts)
        if both:
            raise ValueError(f"canaries also excluded: {', '.join(sorted(both))}")
        return self

    def health_for(self, host: str) -> HealthCheck:
        return self.health_by_host.get(host, self.health)
