"""Pure decisions of the patch flow: which hosts, in which order, when, and when to stop.

No I/O and no Prefect here: the flow feeds in what Proxmox and the config say, and gets back
targets, a rollout plan, a window verdict and a stop verdict.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from labops.config.inventory import Host
from labops.config.policies.patching import Exclusions
from labops.models.pve import PveGuest, PveTaskItem
from labops.patching import apk, apt
from labops.patching.hostcheck import HostFacts
from labops.patching.packages import (
    PendingUpdate,
    shell_words,
    shown,
    valid_package_name,
    valid_version,
)
from labops.patching.report import HostCheck, cve_plan_line


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

    @classmethod
    def of(cls, g: PveGuest) -> PveGuestInfo:
        """From an item of ``/cluster/resources``."""
        return cls(
            vmid=g.vmid,
            name=g.name or f"CT{g.vmid}",
            node=g.node,
            type="lxc" if g.type == "lxc" else "qemu",
            status=g.status,
            template=g.template,
            tags=g.tags,
            lock=g.lock,
        )


class Target(BaseModel):
    """A host the patch flow checks: how to reach it and what Proxmox knows of it."""

    name: str
    kind: Literal["node", "container", "vm", "host"]
    address: str
    port: int = 22
    access: Literal["ssh", "pct", "agent"] = Field(
        "ssh", description="agent: a VM without an SSH address, through its QEMU guest agent."
    )
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
    skipped (reported) when there is no way to reach it. A VM without an SSH address is reached
    through its QEMU guest agent (``access`` agent).
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
        access: Literal["ssh", "pct", "agent"] = host.access if host else container_access
        if kind == "vm" and (host is None or access == "pct"):
            access = "agent"  # no SSH address: checked through PVE's QEMU guest agent
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


def plan_length(rollout: RolloutPlan, step_s: float) -> timedelta:
    """How long the rollout is expected to take: ``step_s`` per step (a batch, or one node with
    its reboot)."""
    return timedelta(seconds=step_s * len(rollout.steps))


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
    installed: dict[str, str] = Field(
        default_factory=dict,
        description="Installed versions of the planned and excluded packages (a dry run keeps "
        "the held ones at theirs).",
    )
    named: bool = Field(
        False,
        description="Upgrade exactly ``packages`` by name, never everything pending (set when "
        "the host changed between the plan and its approval).",
    )

    def upgrade(
        self, manager: Literal["apt", "apk"] | None, names: Sequence[str] | None
    ) -> Upgrade:
        """This host's :class:`Upgrade`: ``names`` (None: everything pending), holding
        :attr:`hold` around a dist-upgrade."""
        holds = upgrade_holds(self.kind, manager, names, self.hold)
        return decide_upgrade(self.kind, manager, names, {h: self.installed.get(h) for h in holds})


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


def canaries_only(rollout: RolloutPlan) -> tuple[RolloutPlan, list[str]]:
    """The rollout cut to its canary step(s), and the hosts left waiting for a later run."""
    kept = [s for s in rollout.steps if s.phase == "canary"]
    waiting = [h.name for s in rollout.steps if s.phase != "canary" for h in s.hosts]
    return RolloutPlan(steps=kept), waiting


def narrowed(rollout: RolloutPlan, exclude: Iterable[str], security_only: bool) -> RolloutPlan:
    """The rollout shown for approval, narrowed by the answer: ``exclude``-d hosts left out and,
    with ``security_only``, each guest's non-security packages (a node keeps its dist-upgrade,
    as :func:`plan_host` plans it). Only ever removes: no host, package or step the plan did not
    show comes in (a host it refused stays out), and the steps keep their phase and index."""
    out = set(exclude)
    steps = []
    for s in rollout.steps:
        hosts = []
        for h in s.hosts:
            if h.name in out:
                continue
            if security_only and h.kind != "node":
                sec = set(h.security_packages)
                h = h.model_copy(update={"packages": [n for n in h.packages if n in sec]})
            if h.packages:
                hosts.append(h)
        if hosts:
            steps.append(s.model_copy(update={"hosts": hosts}))
    return RolloutPlan(steps=steps)


UNKNOWN_SHOWN = 3
"""Unknown names of an approval's ``exclude_hosts`` quoted at most (the rest only counted)."""
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]")


def inert_name(value: object, limit: int = 40) -> str:
    """A name from outside made safe for any report, message or log line: only letters,
    digits, ``.``, ``_`` and ``-`` kept (each other character a ``?``), at most ``limit``."""
    text = _NOT_NAME.sub("?", value if isinstance(value, str) else repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_exclusions(rollout: RolloutPlan, exclude: Iterable[object]) -> tuple[list[str], str]:
    """The answer's ``exclude_hosts`` that the plan shows (in the plan's order, each once), and
    one bounded line about the others ("" when none): the form is input from outside, so a
    name the plan never showed is never echoed as it came, only as :func:`inert_name`, at most
    :data:`UNKNOWN_SHOWN` of them and the rest counted."""
    asked = list(exclude)
    planned = [h.name for s in rollout.steps for h in s.hosts]
    known = [n for n in dict.fromkeys(planned) if n in asked]
    unknown = list(dict.fromkeys(n for n in asked if n not in set(planned)))
    if not unknown:
        return known, ""
    quoted = ", ".join(f"'{inert_name(n)}'" for n in unknown[:UNKNOWN_SHOWN])
    more = len(unknown) - UNKNOWN_SHOWN
    tail = f" (and {more} more)" if more > 0 else ""
    noun = "host" if len(unknown) == 1 else "hosts"
    return known, f"unknown {noun} ignored (not in the plan): {quoted}{tail}"


def widening(shown_security_only: bool, answer_security_only: bool) -> str:
    """What an answer asks beyond the plan shown ("" when nothing): all updates of a plan that
    showed security updates only. The form's other fields can only narrow."""
    if shown_security_only and not answer_security_only:
        return "all updates (the plan showed security updates only; only those are applied)"
    return ""


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
    mgr = facts.package_manager
    usable = [p for p in facts.pending if _usable(mgr, p)]
    row.refused = [
        shown(p.name) if not valid_package_name(mgr, p.name) else f"{shown(p.name)} (version)"
        for p in facts.pending
        if not _usable(mgr, p)
    ] + [shown(h) for h in facts.held if not valid_package_name(mgr, h)]
    row.packages = [p for p in usable if p.name not in skip]
    row.excluded = sorted(p.name for p in usable if p.name in skip)
    row.held = [h for h in facts.held if valid_package_name(mgr, h)]
    row.installed = {p.name: p.from_version for p in usable if p.from_version}
    row.systemd = facts.systemd
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


def _usable(manager: str | None, update: PendingUpdate) -> bool:
    """A pending update whose name and versions may reach a command line."""
    versions = [v for v in (update.from_version, update.to_version) if v is not None]
    return valid_package_name(manager, update.name) and all(valid_version(v) for v in versions)


# -- apply commands -------------------------------------------------------------------------------


class Upgrade(BaseModel):
    """One host's upgrade, decided once (:func:`decide_upgrade`). :meth:`command` is what apply
    runs and :meth:`simulation` what a dry run runs instead: the same verb, the same named
    packages, the same packages kept at their version."""

    manager: Literal["apt", "apk"]
    verb: Literal["dist-upgrade", "install --only-upgrade", "upgrade"]
    packages: list[str] = Field(default_factory=list, description="Named packages (empty: all).")
    hold: dict[str, str | None] = Field(
        default_factory=dict,
        description="Packages kept at their installed version (name -> that version) for the "
        "length of a dist-upgrade.",
    )

    def command(self, lock_wait_s: float) -> str:
        """The command that upgrades the host (CHANGES IT).

        A held package is ``apt-mark hold``-ed before the dist-upgrade and unheld after it,
        whether it succeeded or not; the command exits with the upgrade's status (or the
        hold's, when holding failed and nothing was upgraded)."""
        if self.manager == "apk":
            return apk.upgrade_command(self.packages)
        return apt.upgrade_command(self.verb, self.packages, self.hold, lock_wait_s)

    def simulation(self) -> str:
        """What :meth:`command` would do, changing nothing. A hold is simulated without
        ``apt-mark`` (which writes): ``name=<installed version>`` on the dist-upgrade's command
        line keeps that package where it is, as the hold would."""
        if self.manager == "apk":
            return apk.simulate_command(self.packages)
        pins = [f"{n}={v}" for n, v in self.hold.items() if v]
        return apt.simulate_command(self.verb, self.packages, pins)


def decide_upgrade(
    kind: str,
    manager: Literal["apt", "apk"] | None,
    packages: Sequence[str] | None,
    hold: Mapping[str, str | None] | Sequence[str] = (),
) -> Upgrade:
    """How one host is upgraded. ``packages`` None means everything pending.

    Nodes always get ``dist-upgrade`` (Proxmox requires it; plain ``upgrade`` can leave a node
    half-upgraded); config files are kept (``--force-confold``), nothing asks a question.

    ``hold``: excluded packages that are pending and not held by the operator (with their
    installed versions when known). A dist-upgrade upgrades everything, so they are held for
    it; packages held by the operator are never in ``hold``, so they stay held. A named upgrade
    (``install --only-upgrade``) already leaves them out and needs no hold.

    apk has no hold that can be undone exactly (a ``name=version`` pin in /etc/apk/world replaces
    whatever constraint the operator wrote there), so an apk host with excluded packages pending
    upgrades the named list instead: pass ``packages`` (pending minus excluded).
    """
    versions = dict(hold) if isinstance(hold, Mapping) else dict.fromkeys(hold)
    if manager == "apk":
        if packages is None and versions:
            raise ValueError(
                "apk cannot hold packages around an upgrade: upgrade the named packages "
                f"instead of everything (held back: {', '.join(versions)})"
            )
        return Upgrade(manager="apk", verb="upgrade", packages=list(packages or []))
    if kind == "node" or packages is None:
        return Upgrade(manager="apt", verb="dist-upgrade", hold=versions)
    return Upgrade(manager="apt", verb="install --only-upgrade", packages=list(packages))


def upgrade_command(
    kind: str,
    manager: Literal["apt", "apk"] | None,
    packages: Sequence[str] | None,
    lock_wait_s: float,
    hold: Sequence[str] = (),
) -> str:
    """The upgrade command of one host (see :func:`decide_upgrade`)."""
    return decide_upgrade(kind, manager, packages, hold).command(lock_wait_s)


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


def services_command(manager: Literal["apt", "apk"] | None, services: Sequence[str]) -> str:
    """Exit 0 only when every service is active (names quoted: they come from the config)."""
    if manager == "apk":
        return " && ".join(f"rc-service {shlex.quote(s)} status" for s in services)
    return "systemctl is-active --quiet " + shell_words(services)


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
        installed={n: v for n, v in row.installed.items() if n in set(names) | set(row.excluded)},
    )


# -- busy nodes -----------------------------------------------------------------------------------

# PVE worker task types during which a node must not be upgraded or rebooted (pve-manager,
# pve-container, qemu-server, pve-ha-manager): backups, restores, migrations.
BUSY_TASKS = {
    "vzdump": "backup",
    "vzrestore": "restore",
    "qmrestore": "restore",
    "vzmigrate": "migration",
    "qmigrate": "migration",
    "hamigrate": "HA migration",
}


def node_busy(node: str, tasks: Iterable[PveTaskItem], guests: Iterable[PveGuestInfo]) -> list[str]:
    """Why ``node`` is busy: running backup/restore/migration tasks on it (``/nodes/{node}/tasks
    ?source=active``) and its locked guests (a lock is PVE's own "something runs on me")."""
    why = [
        f"{BUSY_TASKS[t.type]} running ({t.type}{' ' + t.id if t.id else ''}, {t.upid})"
        for t in tasks
        if t.running and t.type in BUSY_TASKS and t.node in (None, node)
    ]
    why += [
        f"{'CT' if g.type == 'lxc' else 'VM'} {g.vmid} ({g.name}) locked: {g.lock}"
        for g in guests
        if g.node == node and g.lock
    ]
    return why


# -- what the operator approves -------------------------------------------------------------------


def recheck_at_approval(
    planned: PlanHost, shown: HostCheck, now: HostCheck
) -> tuple[PlanHost | None, str]:
    """What may still be applied on a host re-checked when the approval arrived.

    Only what the plan showed is applied: planned packages still pending at the version shown.
    Packages that appeared since (or whose version changed) are never added silently: a named
    upgrade leaves them out, a dist-upgrade holds them. Returns the host to apply (None: nothing
    left) and what changed ("" when nothing did)."""
    if not now.known:
        return None, f"re-check at approval failed: {now.state}: {now.detail}".rstrip(": ")
    before = {p.name: p.to_version for p in shown.packages}
    current = {p.name: p.to_version for p in now.packages}
    pending_now = set(current) | set(now.excluded)
    keep = [n for n in planned.packages if n in current and current[n] == before.get(n)]
    gone = [n for n in planned.packages if n not in pending_now]
    changed = sorted(n for n in current.keys() & before.keys() if current[n] != before[n])
    new = sorted(pending_now - set(before) - set(shown.excluded) - set(now.held))
    notes = []
    if new:
        notes.append(f"new since the plan, not applied: {', '.join(new)}")
    if changed:
        notes.append(f"other version than planned, not applied: {', '.join(changed)}")
    if gone:
        notes.append(f"no longer pending: {', '.join(gone)}")
    if not notes:
        return planned, ""
    if not keep:
        return None, "; ".join([*notes, "nothing approved is left to apply"])
    unapproved = [n for n in [*new, *changed] if n not in planned.hold]
    return planned.model_copy(
        update={
            "packages": keep,
            "named": True,
            "hold": [*planned.hold, *unapproved],
            "installed": {**planned.installed, **now.installed},
        }
    ), "; ".join(notes)


def protection(host: PlanHost, snapshot: bool, backup_age_h: float | None, fresh_h: float) -> str:
    """How a host can be rolled back: a PVE snapshot (container or VM) taken before its upgrade,
    a backup younger than ``fresh_h`` hours, or nothing."""
    if snapshot and host.kind in ("container", "vm") and host.vmid is not None:
        return "snapshot"
    if backup_age_h is not None and backup_age_h <= fresh_h:
        return f"fresh backup ({backup_age_h:.0f} h old)"
    return "none"


def left_out(row: HostCheck, security_only: bool) -> str:
    """Why a checked host is not in the plan."""
    if row.state == "skipped":
        return row.detail or "skipped"
    if not row.known:
        return f"not checked: {row.state}" + (f": {row.detail}" if row.detail else "")
    if not row.packages:
        return "up to date" + (" (pending but excluded or held)" if row.excluded else "")
    if security_only and row.kind != "node" and not any(p.security for p in row.packages):
        return "no security updates (security only)"
    return "only held packages pending"


def _marked(host: PlanHost) -> str:
    sec = set(host.security_packages)
    return ", ".join(f"{n} (security)" if n in sec else n for n in host.packages)


def cve_cell(row: HostCheck, packages: Sequence[str], no_lookup: str | None) -> str:
    """The plan table's CVE/KEV cell of a planned host: how many CVEs its planned packages fix
    and how many of those are known exploited ("3 CVEs, 1 KEV"), or why that is not known
    (``no_lookup``: why no CVE lookup ran; None: it ran). Never "0" for unknown."""
    if row.cve_unchecked:
        return f"not checked: {row.cve_unchecked}"
    if no_lookup:
        return f"not checked: {no_lookup}"
    planned = set(packages)
    fixed = {c.cve for c in row.cves if c.package in planned}
    kev = {c.cve for c in row.cves if c.package in planned and c.kev}
    return f"{len(fixed)} CVE{'' if len(fixed) == 1 else 's'}, {len(kev)} KEV"


def plan_table(
    rollout: RolloutPlan,
    rows: Sequence[HostCheck],
    protections: Mapping[str, str],
    security_only: bool,
    no_cve_lookup: str | None = "the CVE lookup did not run",
) -> list[dict[str, str]]:
    """The plan as a table: one row per host, planned or left out (with why). ``no_cve_lookup``
    says why the CVEs of the pending updates were not looked up (None: they were)."""
    phase = {h.name: f"{s.phase} {s.index}" for s in rollout.steps for h in s.hosts}
    planned = {h.name: h for h in rollout.hosts}
    out = []
    for row in rows:
        h = planned.get(row.host)
        kept = [*(h.held_back if h else [*row.held, *row.excluded])]
        kept += [f"refused {r}" for r in row.refused]
        out.append(
            {
                "host": row.host,
                "phase": phase.get(row.host, "left out"),
                "node": row.node or "",
                # how the upgrade reaches the host: ssh, pct (through its node) or agent (a VM
                # without SSH, through its QEMU guest agent)
                "access": row.access,
                "packages": _marked(h) if h else "",
                "security": str(len(h.security_packages)) if h else "",
                "cve/kev": cve_cell(row, h.packages, no_cve_lookup) if h else "",
                "held/excluded": ", ".join(kept),
                "reboot expected": ("yes" if h.reboot_expected else "no") if h else "",
                "protection": protections.get(row.host, "none") if h else "",
                "left out because": "" if h else left_out(row, security_only),
            }
        )
    return sorted(out, key=lambda r: (r["phase"] == "left out", r["phase"], r["host"]))


def approval_summary(
    rollout: RolloutPlan,
    rows: Sequence[HostCheck],
    protections: Mapping[str, str],
    security_only: bool,
    window_end: datetime | None,
    needs: timedelta,
    link: str | None = None,
) -> str:
    """The text an operator judges the plan by (the Resume form, and the phone approval):
    totals, what has no way back, when the window closes, and where the full table is."""
    hosts = rollout.hosts
    packages = sum(len(h.packages) for h in hosts)
    security = sum(len(h.security_packages) for h in hosts)
    reboots = [h.name for h in hosts if h.reboot_expected]
    bare = [h.name for h in hosts if protections.get(h.name, "none") == "none"]
    nodes = sum(1 for h in hosts if h.kind == "node")
    left = len(rows) - len(hosts)
    if window_end is None:
        window = "no maintenance window is open"
    else:
        window = f"the window closes at {window_end:%H:%M} ({window_end.tzname()})"
    lines = [
        f"**Patch plan** ({'security updates only' if security_only else 'all updates'}): "
        f"{len(hosts)} hosts ({nodes} nodes), {packages} packages, {security} security updates, "
        f"{len(reboots)} reboots expected.",
        f"- Hosts without a rollback point: {len(bare)}"
        + (f" ({', '.join(bare[:10])}{', ...' if len(bare) > 10 else ''})" if bare else ""),
        f"- Reboots: {', '.join(reboots) if reboots else 'none'}",
        f"- Timing: {window}; the plan needs about {needs.total_seconds() / 60:.0f} min "
        f"({len(rollout.steps)} steps).",
        f"- Left out: {left} hosts (why: in the table).",
    ]
    cves = cve_plan_line(list(rows), {h.name for h in hosts}, {h.name: h.packages for h in hosts})
    if cves:
        lines.append(cves)
    if link:
        lines.append(f"- Every host, package and protection: [plan table]({link})")
    return "\n".join(lines)


SnapshotStatus = Literal["in-progress", "keep-until", "rolled-back", "kept"]


def settled_status(patched: bool, rolled_back: bool) -> SnapshotStatus:
    """What a settled run's snapshot is kept as: ``keep-until`` for a patched host (deleted when
    its keep time ends), ``rolled-back`` only when the host really went back to it, else
    ``kept`` (the upgrade failed and was not rolled back, or still ran at the timeout: the
    snapshot is the operator's way back, never deleted by labops)."""
    if patched:
        return "keep-until"
    return "rolled-back" if rolled_back else "kept"


class SnapshotRecord(BaseModel):
    """A snapshot labops made, kept in the state store until it is deleted."""

    host: str
    node: str
    vmid: int
    name: str
    created: datetime
    status: SnapshotStatus = "in-progress"
    delete_after: datetime | None = None
    kind: Literal["lxc", "qemu"] = Field(
        "lxc", description="The guest's kind (books written before VMs had snapshots: lxc)."
    )


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
        out.append(f"{host} ({vmid}): {name}")
    return sorted(out)
