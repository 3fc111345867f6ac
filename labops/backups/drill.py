"""Restore drill decisions, pure: which guest to drill (given, or the one tested longest ago),
which backup to restore, which scratch vmid to use (inside the configured range, never one that
exists), the tag that marks the scratch guest of one run, which privileges the drill's token
needs, whether a guest may be destroyed, and what the scratch guest's network interfaces get
before it starts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from labops.backups.models import BackupCopy, BackupGuest
from labops.backups.plan import by_vmid, exclusion_reason, last_good
from labops.backups.report import DrillHistory
from labops.config.policies.backups import BackupPolicy, NetworkMode
from labops.models.pve_net import (
    check_net_string,
    describe_net,
    link_is_down,
    net_parts,
    with_link_down,
)


class DrillChoice(BaseModel):
    guest: BackupGuest
    backup: BackupCopy
    reason: str


class DrillRefused(Exception):
    """The drill cannot run as asked; the message says why (shown as the report's failure)."""


def choose_guest(
    guests: Sequence[BackupGuest],
    copies: Sequence[BackupCopy],
    policy: BackupPolicy,
    history: DrillHistory,
    vmid: int | None = None,
    usable_nodes: Iterable[str] | None = None,
) -> DrillChoice:
    """The guest to drill and its newest good backup.

    Given ``vmid``: that guest (it must exist and have a good backup). Otherwise, among the
    guests the backup policy selects (or ``restore_drill.guests``) that have a good backup, the
    one never drilled, else the one drilled longest ago (ties: lowest vmid).
    """
    groups = by_vmid(copies)
    nodes = set(usable_nodes) if usable_nodes is not None else None
    if vmid is not None:
        guest = next((g for g in guests if g.vmid == vmid), None)
        if guest is None:
            raise DrillRefused(f"guest {vmid} does not exist")
        backup = last_good(groups.get(vmid, []))
        if backup is None:
            raise DrillRefused(f"{guest.label} has no good backup to restore")
        return DrillChoice(guest=guest, backup=backup, reason="asked for")
    candidates: list[tuple[float, int, BackupGuest, BackupCopy]] = []
    for guest in drill_scope(guests, policy):
        if nodes is not None and guest.node not in nodes:
            continue
        backup = last_good(groups.get(guest.vmid, []))
        if backup is None:
            continue
        last = history.last.get(guest.vmid)
        candidates.append((last.when if last else 0.0, guest.vmid, guest, backup))
    if not candidates:
        raise DrillRefused("no guest with a good backup to drill")
    when, _, guest, backup = min(candidates, key=lambda c: (c[0], c[1]))
    reason = "never drilled" if when == 0 else "drilled longest ago"
    return DrillChoice(guest=guest, backup=backup, reason=reason)


def drill_scope(guests: Iterable[BackupGuest], policy: BackupPolicy) -> list[BackupGuest]:
    """The guests the drills rotate over: ``restore_drill.guests`` when set, else every guest
    the backup policy selects; never a template."""
    wanted = set(policy.restore_drill.guests)
    return [
        g
        for g in guests
        if not g.template
        and (g.vmid in wanted if wanted else exclusion_reason(g, policy.selection, policy) is None)
    ]


def choose_scratch_vmid(
    used: Iterable[int], low: int, high: int, requested: int | None = None
) -> int:
    """A vmid in [low, high] no guest uses; a requested one outside the range or that exists
    is refused (the range is the only place the drill ever destroys anything)."""
    taken = set(used)
    if requested is not None:
        if not low <= requested <= high:
            raise DrillRefused(
                f"scratch vmid {requested} is outside restore_drill's scratch range "
                f"{low}-{high}: refused"
            )
        if requested in taken:
            raise DrillRefused(f"scratch vmid {requested} exists: refusing to touch it")
        return requested
    for vmid in range(low, high + 1):
        if vmid not in taken:
            return vmid
    raise DrillRefused(f"no free scratch vmid in {low}-{high}")


# -- marking, permissions and the destroy decision -------------------------------------------

TAG_PREFIX = "labops-drill-"
# pve-tag (pve-common): PVE stores tags lowercased unless datacenter.cfg makes them case-sensitive.
_PVE_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$")


def run_tag(run_id: str) -> str:
    """The tag that marks the scratch guest of one drill run: ``labops-drill-<run id>``."""
    tag = f"{TAG_PREFIX}{run_id}".lower()
    if not _PVE_TAG.match(tag):
        raise ValueError(f"{tag!r} is not a PVE tag")
    return tag


class RestoreSeen(BaseModel):
    """What this run knows of its own restore: the task PVE started for it (its UPID) and how
    that task ended. Only a restore this run saw succeed made the guest at ``vmid``."""

    vmid: int
    node: str
    kind: str
    upid: str | None = Field(None, description="The UPID PVE answered; None: never started.")
    state: Literal["not started", "refused", "running", "failed", "ok"] = "not started"
    detail: str = ""


def destroy_refusal(
    seen: RestoreSeen, tags: Sequence[str] | None, tag: str, low: int, high: int
) -> str | None:
    """Why the guest at ``seen.vmid`` must not be destroyed; None when it may.

    It may only when all three hold: this run's restore task was seen (its UPID) and succeeded;
    the guest carries this run's tag as read back from its config just now (``tags``; None: not
    readable); its vmid is in the scratch range.
    """
    if seen.upid is None:
        return "this run's restore never started, so whatever is there was made by someone else"
    if seen.state != "ok":
        return f"this run's restore task {seen.upid} did not succeed ({seen.state}: {seen.detail})"
    if not low <= seen.vmid <= high:
        return f"vmid {seen.vmid} is outside the scratch range {low}-{high}"
    if tags is None:
        return "its config could not be read to check its tag"
    if tag not in tags:
        shown = ";".join(tags) or "none"
        return f"it does not carry this run's tag {tag} (its tags: {shown})"
    return None


class Need(BaseModel):
    """Privileges the drill needs, held on any of ``paths`` taken together, and why."""

    paths: list[str]
    privs: list[str]
    why: str


def source_needs(guest: int | None, backup_storage: str) -> list[Need]:
    """What reading the guest and its backups takes (``guest`` None: not chosen yet, the
    privileges are looked for on ``/vms``). Without them PVE does not refuse: it hides."""
    source = f"/vms/{guest}" if guest is not None else "/vms"
    return [
        Need(paths=[source], privs=["VM.Audit"], why="see the guest to drill"),
        Need(paths=[source], privs=["VM.Backup"], why="list and restore its backups"),
        Need(
            paths=[f"/storage/{backup_storage}"],
            privs=["Datastore.AllocateSpace"],
            why="list and restore the backups stored there",
        ),
    ]


def scratch_needs(
    target_storage: str, pool: str | None, scratch: int, network: NetworkMode
) -> list[Need]:
    """What restoring, marking, starting and destroying the scratch guest takes. Its privileges
    count from ``/vms/<scratch>`` and from the pool it is restored into, as PVE derives them for
    a pool's guests. The bridges of the restored interfaces (SDN.Use) are left to PVE's own
    check at restore time (its message names the bridge)."""
    own = [f"/vms/{scratch}"] + ([f"/pool/{pool}"] if pool else [])
    needs = [
        Need(
            paths=[f"/storage/{target_storage}"],
            privs=["Datastore.AllocateSpace"],
            why="create the scratch guest's disks",
        ),
        Need(paths=own, privs=["VM.Allocate"], why="restore the scratch guest and destroy it"),
        Need(paths=own, privs=["VM.Audit"], why="read the scratch guest's config and state"),
        Need(paths=own, privs=["VM.Config.Options"], why="tag the scratch guest with the run"),
        Need(paths=own, privs=["VM.PowerMgmt"], why="start and stop the scratch guest"),
    ]
    if network != "keep":
        needs.append(
            Need(paths=own, privs=["VM.Config.Network"], why="unplug its network before the start")
        )
    return needs


def missing_privileges(needs: Sequence[Need], held: Mapping[str, Iterable[str]]) -> list[str]:
    """One line per need the token does not meet, naming the privilege and the path to grant it
    on (the pool when there is one); ``held`` maps each path to the privileges held there."""
    out = []
    for need in needs:
        have = {p for path in need.paths for p in held.get(path, ())}
        for priv in need.privs:
            if priv not in have:
                out.append(f"{priv} on {need.paths[-1]} ({need.why})")
    return out


# -- the scratch guest's network --------------------------------------------------------------


def network_changes(
    nets: Mapping[str, str],
    mode: NetworkMode,
    replace: Mapping[str, str],
    kind: str,
) -> dict[str, str]:
    """The ``netN`` values to set on the restored scratch guest before it starts.

    ``nets`` are its interfaces as restored. isolate: each interface gets ``link_down=1`` with its
    other parts unchanged (one already down is left alone). replace: the interfaces of
    ``replace`` get those values, every other one is unplugged. keep: nothing.
    """
    if mode == "keep":
        return {}
    wanted = dict(replace) if mode == "replace" else {}
    for key, value in wanted.items():
        problem = check_net_string(value, kind)
        if problem:
            raise DrillRefused(
                f"restore_drill.replace_nets.{key}: {problem} (the guest is {_kind(kind)})"
            )
    changes = {
        key: with_link_down(value)
        for key, value in nets.items()
        if key not in wanted and not link_is_down(value)
    }
    return {**changes, **wanted}


def network_problems(
    nets: Mapping[str, str], mode: NetworkMode, replace: Mapping[str, str]
) -> list[str]:
    """What the config read back before the start does not show of the plan (empty: as asked)."""
    if mode == "keep":
        return []
    wanted = dict(replace) if mode == "replace" else {}
    problems = []
    for key, value in wanted.items():
        got = nets.get(key)
        if got is None:
            problems.append(f"{key} is missing")
            continue
        # PVE rewrites the string (key order, a made-up MAC): compare what decides the network.
        have = dict(net_parts(got))
        for part, val in net_parts(value):
            if part in ("bridge", "tag", "ip", "ip6", "link_down") and have.get(part) != val:
                problems.append(f"{key} has {part}={have.get(part)} instead of {val}")
    problems += [
        f"{key} is still plugged in ({describe_net(value)})"
        for key, value in nets.items()
        if key not in wanted and not link_is_down(value)
    ]
    return problems


def network_intent(mode: NetworkMode, replace: Mapping[str, str]) -> str:
    """What the drill does to the scratch guest's network, for a dry run."""
    if mode == "isolate":
        return "unplug every network interface (link_down=1) before starting it"
    if mode == "replace":
        given = ", ".join(f"{k}={v}" for k, v in replace.items())
        return f"set {given} and unplug every other interface before starting it"
    return (
        "keep its backed-up network (network: keep; WARNING: the original guest's addresses on "
        "the same bridge can conflict)"
    )


def network_done(
    nets: Mapping[str, str],
    mode: NetworkMode,
    replace: Mapping[str, str],
    label: str,
    ipconfigs: Mapping[str, str] | None = None,
) -> str:
    """The report step for the network, from the config read back before the start
    (``ipconfigs``: a VM's cloud-init addresses, shown with a kept network)."""
    shown = "; ".join(f"{k} {describe_net(v)}" for k, v in nets.items()) or "no interfaces"
    if mode == "keep":
        if ipconfigs:
            shown += "; " + "; ".join(f"{k} {v}" for k, v in ipconfigs.items())
        return (
            f"network keep: WARNING starting with the backed-up interfaces ({shown}): the "
            f"addresses of {label}, which can conflict with it on the same network while the "
            "drill runs"
        )
    if not nets:
        return f"network {mode}: no interfaces"
    if mode == "isolate":
        return f"network isolate: {', '.join(nets)} unplugged (link_down=1, read back: {shown})"
    others = [k for k in nets if k not in replace]
    unplugged = f"; {', '.join(others)} unplugged" if others else ""
    return f"network replace: {', '.join(replace)} set{unplugged} (read back: {shown})"


def _kind(kind: str) -> str:
    return "a container" if kind == "lxc" else "a VM"
