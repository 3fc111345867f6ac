"""Pure decisions of the patch flow: which hosts, in which order, when, and when to stop.

No I/O and no Prefect here: the flow feeds in what Proxmox and the config say, and gets back
targets, a rollout plan, a window verdict and a stop verdict.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from labops.config.inventory import Host
from labops.config.policies.patching import Exclusions, MaintenanceWindow
from labops.models.patching import HostCheck
from labops.parsers.hostcheck import HostFacts

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class PveNodeInfo(BaseModel):
    name: str
    online: bool = True


class PveGuestInfo(BaseModel):
    vmid: int
    name: str
    node: str
    type: Literal["lxc", "qemu"] = "lxc"
    status: str = "running"
    template: bool = False
    tags: list[str] = Field(default_factory=list)
    lock: str | None = None


class Target(BaseModel):
    """A host the patch flow checks: how to reach it and what Proxmox knows of it."""

    name: str
    kind: Literal["node", "container", "vm", "host"]
    address: str
    port: int = 22
    access: Literal["ssh", "pct"] = "ssh"
    node: str | None = None
    vmid: int | None = None
    tags: list[str] = Field(default_factory=list)
    status: str = "running"
    lock: str | None = None


class Skip(BaseModel):
    name: str
    reason: str
    kind: Literal["node", "container", "vm", "host"] = "container"
    node: str | None = None
    vmid: int | None = None


class Selection(BaseModel):
    targets: list[Target] = Field(default_factory=list)
    skipped: list[Skip] = Field(default_factory=list)
    to_start: list[Target] = Field(
        default_factory=list, description="Stopped containers to start, check and stop again."
    )


def excluded_by(exclusions: Exclusions, name: str, vmid: int | None, tags: Iterable[str]) -> str:
    """Why a host is excluded ("" when it is not)."""
    if name in exclusions.hosts:
        return "excluded by name"
    if vmid is not None and vmid in exclusions.vmids:
        return f"excluded by vmid {vmid}"
    hit = sorted(set(tags) & set(exclusions.tags))
    if hit:
        return f"excluded by tag {hit[0]}"
    return ""


def select_targets(
    nodes: Sequence[PveNodeInfo],
    guests: Sequence[PveGuestInfo],
    hosts: Sequence[Host],
    exclusions: Exclusions,
    container_access: Literal["ssh", "pct"],
    stopped: Literal["skip", "start-check-stop"] = "skip",
) -> Selection:
    """Every Proxmox node and running container (plus configured hosts PVE does not list).

    A guest is matched to its inventory host by vmid, then by name; a guest with no inventory
    entry is reached through its node with ``pct exec`` when the default access says so, and is
    skipped (reported) when there is no way to reach it. VMs are not patched (no ``pct exec``).
    """
    by_vmid = {h.vmid: h for h in hosts if h.vmid is not None}
    by_name = {h.name: h for h in hosts}
    node_host: dict[str, Host | None] = {n.name: by_name.get(n.name) for n in nodes}
    sel = Selection()
    used: set[str] = set()
    for node in nodes:
        host = node_host[node.name]
        used.add(node.name)
        why = excluded_by(exclusions, node.name, None, host.tags if host else [])
        if why:
            sel.skipped.append(Skip(name=node.name, kind="node", reason=why, node=node.name))
        elif not node.online:
            sel.skipped.append(
                Skip(name=node.name, kind="node", reason="node offline", node=node.name)
            )
        elif host is None:
            sel.skipped.append(
                Skip(
                    name=node.name,
                    kind="node",
                    node=node.name,
                    reason="no SSH address in inventory.hosts",
                )
            )
        else:
            sel.targets.append(
                Target(
                    name=node.name,
                    kind="node",
                    address=host.address or host.name,
                    port=host.port,
                    node=node.name,
                    tags=host.tags,
                )
            )
    online = {n.name for n in nodes if n.online}
    for g in sorted(guests, key=lambda g: g.vmid):
        host = by_vmid.get(g.vmid) or by_name.get(g.name)
        name = host.name if host else g.name
        used.add(name)
        kind: Literal["container", "vm"] = "container" if g.type == "lxc" else "vm"
        base = {"name": name, "kind": kind, "node": g.node, "vmid": g.vmid}
        if g.template:
            continue  # templates are never started nor patched
        why = excluded_by(exclusions, name, g.vmid, [*g.tags, *(host.tags if host else [])])
        if why:
            sel.skipped.append(Skip(**base, reason=why))
            continue
        if g.node not in online:
            sel.skipped.append(Skip(**base, reason=f"node {g.node} offline"))
            continue
        access = host.access if host else container_access
        if kind == "vm" and (host is None or access == "pct"):
            sel.skipped.append(Skip(**base, reason="VM without an SSH address in inventory"))
            continue
        if kind == "container" and access == "ssh" and host is None:
            sel.skipped.append(Skip(**base, reason="no SSH address in inventory.hosts"))
            continue
        if access == "pct" and node_host.get(g.node) is None:
            sel.skipped.append(Skip(**base, reason=f"pct access needs SSH to node {g.node}"))
            continue
        target = Target(
            name=name,
            kind=kind,
            node=g.node,
            vmid=g.vmid,
            access=access,
            address=(host.address or host.name) if host else g.node,
            port=host.port if host else 22,
            tags=sorted({*g.tags, *(host.tags if host else [])}),
            status=g.status,
            lock=g.lock,
        )
        if g.status != "running":
            if stopped == "start-check-stop" and kind == "container":
                sel.to_start.append(target)
                sel.targets.append(target)
            else:
                sel.skipped.append(Skip(**base, reason=f"{g.status}"))
            continue
        sel.targets.append(target)
    for host in hosts:  # hosts outside Proxmox (a VPS, a NAS) are checked too
        if host.name in used:
            continue
        why = excluded_by(exclusions, host.name, host.vmid, host.tags)
        if why:
            sel.skipped.append(Skip(name=host.name, kind=host.kind, reason=why))
            continue
        if host.access == "pct":
            continue  # a pct host PVE does not list cannot be reached
        sel.targets.append(
            Target(
                name=host.name,
                kind=host.kind,
                address=host.address or host.name,
                port=host.port,
                node=host.node,
                vmid=host.vmid,
                tags=host.tags,
            )
        )
    return sel


# -- maintenance window ----------------------------------------------------------------------------


def window_open(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether ``now`` (timezone-aware) falls inside ``window`` in the window's own zone."""
    local = now.astimezone(ZoneInfo(window.timezone))
    start, end = window.start_time(), window.end_time()
    t = local.time()
    today = _DAYS[local.weekday()]
    yesterday = _DAYS[(local.weekday() - 1) % 7]
    if start <= end:
        return today in window.days and start <= t < end
    # past midnight: the evening part opens on a listed day, the morning part belongs to the day
    # before
    return (today in window.days and t >= start) or (yesterday in window.days and t < end)


def in_any_window(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    return any(window_open(w, now) for w in windows)


def next_opening(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """The next time a window opens (minute resolution, within 8 days), for the refusal message."""
    probe = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        if in_any_window(windows, probe):
            return probe
        probe += timedelta(minutes=1)
    return None


# -- rollout ---------------------------------------------------------------------------------------


class PlanHost(BaseModel):
    """A host that needs patching, as the rollout planner sees it."""

    name: str
    kind: Literal["node", "container", "vm", "host"]
    node: str | None = None
    vmid: int | None = None
    packages: list[str] = Field(default_factory=list)
    security_packages: list[str] = Field(default_factory=list)
    reboot_expected: bool = False
    held_back: list[str] = Field(
        default_factory=list,
        description="Pending packages that stay at their version: held by the operator or in "
        "patching.exclusions.packages.",
    )
    hold: list[str] = Field(
        default_factory=list,
        description="Excluded pending packages not held by the operator: held around a "
        "dist-upgrade, unheld after it.",
    )


class Step(BaseModel):
    """Hosts changed at the same time. A step holds containers of several nodes (at most
    ``per_node_parallel`` of each) or exactly one node."""

    phase: Literal["canary", "batch", "node"]
    index: int
    hosts: list[PlanHost]


class RolloutPlan(BaseModel):
    steps: list[Step] = Field(default_factory=list)

    @property
    def hosts(self) -> list[PlanHost]:
        return [h for s in self.steps for h in s.hosts]

    def describe(self) -> str:
        lines = []
        for s in self.steps:
            names = ", ".join(
                f"{h.name} ({len(h.packages)} pkgs{', reboot' if h.reboot_expected else ''}"
                + (f"; held back: {', '.join(h.held_back)}" if h.held_back else "")
                + ")"
                for h in s.hosts
            )
            lines.append(f"{s.phase} {s.index}: {names}")
        return "\n".join(lines)


def _pack(hosts: list[PlanHost], size: int, per_node: int) -> list[list[PlanHost]]:
    """Greedy batches of at most ``size`` hosts with at most ``per_node`` per node."""
    pending = list(hosts)
    batches: list[list[PlanHost]] = []
    while pending:
        batch: list[PlanHost] = []
        per: dict[str | None, int] = {}
        rest: list[PlanHost] = []
        for h in pending:
            if len(batch) < size and per.get(h.node, 0) < per_node:
                batch.append(h)
                per[h.node] = per.get(h.node, 0) + 1
            else:
                rest.append(h)
        batches.append(batch)
        pending = rest
    return batches


def plan_rollout(
    hosts: Sequence[PlanHost],
    canaries: Sequence[str],
    canary_count: int,
    batch_size: int,
    per_node_parallel: int,
) -> RolloutPlan:
    """Canaries first (named ones, else the first ``canary_count`` containers), then batches of
    containers, then the nodes one at a time (a node's reboot must not meet its own guests'
    upgrades, and two nodes are never down together)."""
    guests = [h for h in hosts if h.kind != "node"]
    nodes = sorted((h for h in hosts if h.kind == "node"), key=lambda h: h.name)
    named = [h for h in guests if h.name in set(canaries)]
    if not named and canary_count > 0:
        named = guests[:canary_count]
    canary_names = {h.name for h in named}
    rest = [h for h in guests if h.name not in canary_names]
    steps: list[Step] = []
    for i, batch in enumerate(_pack(named, max(len(named), 1), per_node_parallel), 1):
        steps.append(Step(phase="canary", index=i, hosts=batch))
    for i, batch in enumerate(_pack(rest, batch_size, per_node_parallel), 1):
        steps.append(Step(phase="batch", index=i, hosts=batch))
    named_nodes = [h for h in nodes if h.name in set(canaries)]
    for i, node in enumerate([*named_nodes, *[n for n in nodes if n not in named_nodes]], 1):
        steps.append(Step(phase="node", index=i, hosts=[node]))
    return RolloutPlan(steps=steps)


class StopRule(BaseModel):
    """Stop the rollout like Ansible's ``max_fail_percentage``: past ``max_failures`` failed
    hosts, or when the failed share of finished hosts passes ``max_fail_ratio``; any failed
    canary stops it."""

    max_failures: int
    max_fail_ratio: float

    def verdict(self, failed: int, done: int, canary_failed: bool = False) -> str | None:
        if canary_failed:
            return "a canary failed"
        if failed > self.max_failures:
            return f"{failed} failures (limit {self.max_failures})"
        if done and failed / done > self.max_fail_ratio:
            return f"{failed}/{done} failed (limit {self.max_fail_ratio:.0%})"
        return None


def snapshot_name(run_key: str) -> str:
    """A PVE snapshot name for the run (``[a-z][a-z0-9_-]+``, at most 40 characters)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_key.lower())
    return ("labops-patch-" + safe)[:40].rstrip("-_")


def is_labops_snapshot(name: str) -> bool:
    return name.startswith("labops-patch-")


# -- check rows -----------------------------------------------------------------------------------


def check_row(
    target: Target,
    state: str,
    detail: str,
    facts: HostFacts | None,
    checked_at: datetime,
    excluded_packages: Sequence[str] = (),
) -> HostCheck:
    """One compliance row from a host's SSH outcome and parsed facts.

    ``state`` is the SSH outcome (ok, unreachable, host-key-rejected, auth-failed, timeout,
    error). A host whose output could not be read completely is "error", never "up-to-date".
    """
    row = HostCheck(
        host=target.name,
        kind=target.kind,
        node=target.node,
        vmid=target.vmid,
        access=target.access,
        state="error",
        detail=detail,
        last_checked=checked_at,
    )
    if state != "ok" or facts is None:
        row.state = state if state != "ok" else "error"  # type: ignore[assignment]
        return row
    row.os = facts.os.label
    row.eol = facts.eol
    row.end_of_life = facts.end_of_life
    row.package_manager = facts.package_manager
    if facts.problem:
        row.detail = "; ".join(x for x in (facts.problem, detail) if x)
        return row
    skip = set(excluded_packages)
    row.packages = [p for p in facts.pending if p.name not in skip]
    row.excluded = sorted(p.name for p in facts.pending if p.name in skip)
    row.held = facts.held
    nr = facts.needrestart
    # A container's reboot is only its own /run/reboot-required: needrestart skips kernels there.
    row.reboot_required = facts.reboot_required or (
        target.kind == "node" and nr is not None and nr.reboot_advised
    )
    row.reboot_packages = facts.reboot_packages
    if target.kind == "node" and nr is not None and nr.reboot_advised and not facts.reboot_packages:
        row.reboot_packages = [f"kernel {nr.kernel_expected or '?'}"]
    row.restart_services = nr.services if nr else []
    row.state = "updates" if row.packages else "up-to-date"
    return row


# -- apply commands -------------------------------------------------------------------------------

_APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -o DPkg::Lock::Timeout={lock}"
_KEEP_CONF = "-o Dpkg::Options::=--force-confold"


def upgrade_command(
    kind: str,
    manager: Literal["apt", "apk"] | None,
    packages: Sequence[str] | None,
    lock_wait_s: float,
    hold: Sequence[str] = (),
) -> str:
    """The upgrade command of one host. ``packages`` None means everything pending.

    Nodes always get ``dist-upgrade`` (Proxmox requires it; plain ``upgrade`` can leave a node
    half-upgraded); config files are kept (``--force-confold``), nothing asks a question.

    ``hold``: excluded packages that are pending and not held by the operator. A dist-upgrade
    upgrades everything, so they are held first (``apt-mark hold``; dist-upgrade keeps held
    packages back) and unheld afterwards whether the upgrade succeeded or not; the command exits
    with the upgrade's status (or the hold's, when holding failed and nothing was upgraded).
    Packages held by the operator are never in ``hold``, so they stay held. A named upgrade
    (``install --only-upgrade``) already leaves them out and needs no hold.

    apk has no hold that can be undone exactly (a ``name=version`` pin in /etc/apk/world replaces
    whatever constraint the operator wrote there), so an apk host with excluded packages pending
    upgrades the named list instead: pass ``packages`` (pending minus excluded).
    """
    lock = int(lock_wait_s)
    if manager == "apk":
        if packages is None and hold:
            raise ValueError(
                "apk cannot hold packages around an upgrade: upgrade the named packages "
                f"instead of everything (held back: {', '.join(hold)})"
            )
        return "apk upgrade" if packages is None else "apk upgrade " + _words(packages)
    base = f"{_APT.format(lock=lock)} {_KEEP_CONF}"
    if kind == "node" or packages is None:
        upgrade = f"{base} dist-upgrade"
        if not hold:
            return upgrade
        held = _words(hold)
        # `a && b; rc=$?` keeps the hold's failure when b never ran; the unhold always runs
        return (
            f"apt-mark hold {held} && {upgrade}; labops_rc=$?; "
            f"apt-mark unhold {held}; exit $labops_rc"
        )
    return f"{base} install --only-upgrade " + _words(packages)


def upgrade_holds(
    kind: str,
    manager: Literal["apt", "apk"] | None,
    packages: Sequence[str] | None,
    hold: Sequence[str],
) -> list[str]:
    """The packages :func:`upgrade_command` holds for its upgrade: ``hold`` around an apt
    dist-upgrade, none for a named upgrade (nor on apk)."""
    if manager == "apk" or (kind != "node" and packages is not None):
        return []
    return list(hold)


def _words(names: Sequence[str]) -> str:
    return " ".join(shlex.quote(n) for n in names)


def simulate_command(manager: Literal["apt", "apk"] | None) -> str:
    """The dry-run command: what the upgrade would do, changing nothing."""
    if manager == "apk":
        return "apk upgrade -s"
    return "apt-get -s -o Debug::NoLocking=1 dist-upgrade"


def services_command(manager: Literal["apt", "apk"] | None, services: Sequence[str]) -> str:
    """Exit 0 only when every service is active."""
    if manager == "apk":
        return " && ".join(f"rc-service {s} status" for s in services)
    return "systemctl is-active --quiet " + " ".join(services)


def plan_host(row: HostCheck, security_only: bool) -> PlanHost | None:
    """The rollout entry of a checked host, or None when there is nothing to apply."""
    if not row.known or not row.packages:
        return None
    # held packages stay held: apt refuses to upgrade them by name, dist-upgrade skips them
    held = set(row.held)
    security = [p.name for p in row.packages if p.security and p.name not in held]
    everything = [p.name for p in row.packages if p.name not in held]
    names = security if security_only and row.kind != "node" else everything
    if not names:
        return None
    return PlanHost(
        name=row.host,
        kind=row.kind,
        node=row.node,
        vmid=row.vmid,
        packages=names,
        security_packages=security,
        reboot_expected=row.reboot_required,
        held_back=sorted({p.name for p in row.packages if p.name in held} | set(row.excluded)),
        hold=[p for p in row.excluded if p not in held],
    )


class SnapshotRecord(BaseModel):
    """A snapshot labops made, kept in the state store until it is deleted."""

    host: str
    node: str
    vmid: int
    name: str
    created: datetime
    status: Literal["in-progress", "keep-until", "rolled-back"] = "in-progress"
    delete_after: datetime | None = None


class SnapshotBook(BaseModel):
    """Every labops snapshot believed to exist (state key ``patch-snapshots``)."""

    records: list[SnapshotRecord] = Field(default_factory=list)

    def due(self, now: datetime) -> list[SnapshotRecord]:
        return [
            r
            for r in self.records
            if r.status == "keep-until" and r.delete_after is not None and r.delete_after <= now
        ]

    def upsert(self, record: SnapshotRecord) -> None:
        self.records = [
            r for r in self.records if (r.vmid, r.name) != (record.vmid, record.name)
        ] + [record]

    def drop(self, vmid: int, name: str) -> None:
        self.records = [r for r in self.records if (r.vmid, r.name) != (vmid, name)]


def leftovers(found: Sequence[tuple[str, int, str]], book: SnapshotBook, current: str) -> list[str]:
    """labops snapshots that exist but are neither this run's nor waiting for their planned
    deletion: left by a killed run (``in-progress``) or unknown to the state store."""
    planned = {(r.vmid, r.name) for r in book.records if r.status == "keep-until"}
    out = []
    for host, vmid, name in found:
        if name == current or (vmid, name) in planned or not is_labops_snapshot(name):
            continue
        out.append(f"{host} (CT {vmid}): {name}")
    return sorted(out)
