"""Restore drill decisions, pure: which guest to drill (given, or the one tested longest ago),
which backup to restore, which scratch vmid to use (never one that exists), and what the scratch
guest's network interfaces get before it starts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel

from labops.config.policies.backups import BackupPolicy, NetworkMode
from labops.models.backups import BackupCopy, BackupGuest
from labops.parsers.pve_net import (
    check_net_string,
    describe_net,
    link_is_down,
    net_parts,
    with_link_down,
)
from labops.planners.backups import by_vmid, exclusion_reason, last_good
from labops.reports_backups import DrillHistory


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
    wanted = set(policy.restore_drill.guests)
    candidates: list[tuple[float, int, BackupGuest, BackupCopy]] = []
    for guest in guests:
        if guest.template:
            continue
        if wanted and guest.vmid not in wanted:
            continue
        if not wanted and exclusion_reason(guest, policy.selection, policy) is not None:
            continue
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


def choose_scratch_vmid(
    used: Iterable[int], low: int, high: int, requested: int | None = None
) -> int:
    """A vmid in [low, high] no guest uses; a requested one that exists is refused."""
    taken = set(used)
    if requested is not None:
        if requested in taken:
            raise DrillRefused(f"scratch vmid {requested} exists: refusing to touch it")
        return requested
    for vmid in range(low, high + 1):
        if vmid not in taken:
            return vmid
    raise DrillRefused(f"no free scratch vmid in {low}-{high}")


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
