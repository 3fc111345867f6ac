"""Draining a node before its reboot: where each running guest goes, and what stays. Pure: the
flow feeds in the node's guests, the other nodes' room and which guests local resources pin, and
gets back the moves (each a PVE migration task it waits for), the shutdowns and the guests left.

Policy ``patching.drain`` (``migrate`` | ``shutdown`` | ``none``): ``migrate`` online-migrates
running VMs and restart-migrates running containers to the online node with the most free
memory that fits them, and brings them back once the node is healthy again; ``shutdown`` shuts
them down cleanly and starts them again after; ``none`` leaves them to the reboot (PVE's own
stop/start on boot). A guest pinned by local resources (a passed-through device, a bind mount, a
local disk PVE cannot move) is handled per ``drain.pinned``: shut down, or refuse the reboot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

DrainMode = Literal["migrate", "shutdown", "none"]
PinnedRule = Literal["shutdown", "refuse"]


class DrainGuest(BaseModel):
    """A running guest of the node to drain."""

    vmid: int
    name: str = ""
    type: Literal["lxc", "qemu"]
    mem: int = Field(0, ge=0, description="Memory it is given (maxmem), bytes.")
    pinned: str = Field("", description="Why it cannot leave its node ('' when it can).")

    @property
    def label(self) -> str:
        return f"{self.type} {self.vmid}" + (f" ({self.name})" if self.name else "")


class NodeRoom(BaseModel):
    """Another node a guest may go to."""

    name: str
    online: bool = True
    free_mem: int = Field(0, description="maxmem - mem of the node, bytes.")


class Move(BaseModel):
    vmid: int
    type: Literal["lxc", "qemu"]
    source: str
    target: str
    online: bool = Field(..., description="qemu: live migration; lxc: restart migration.")
    label: str = ""


class DrainPlan(BaseModel):
    node: str
    mode: DrainMode
    moves: list[Move] = Field(default_factory=list)
    shutdowns: list[DrainGuest] = Field(default_factory=list)
    pinned: list[str] = Field(default_factory=list, description="Pinned guests and their rule.")
    refused: str = Field("", description="Why the node must not be rebooted ('' when it may).")

    def lines(self) -> list[str]:
        """The plan as the report and the approval show it."""
        out = [f"move {m.label} {m.source} -> {m.target}" for m in self.moves]
        out += [f"shut down {g.label}, start after" for g in self.shutdowns]
        out += self.pinned
        if self.refused:
            out.append(f"reboot refused: {self.refused}")
        return out

    def back(self) -> list[Move]:
        """The moves that bring every migrated guest home again, once the node is back."""
        return [
            m.model_copy(update={"source": m.target, "target": m.source})
            for m in reversed(self.moves)
        ]


def plan_drain(
    node: str,
    guests: Sequence[DrainGuest],
    others: Sequence[NodeRoom],
    mode: DrainMode,
    pinned_rule: PinnedRule = "shutdown",
) -> DrainPlan:
    """Where every running guest of ``node`` goes before its reboot. A guest that fits on no
    other online node refuses the reboot (migrate mode): it is never shut down in its place,
    since the operator asked for no downtime."""
    plan = DrainPlan(node=node, mode=mode)
    if mode == "none":
        return plan
    room: dict[str, int] = {o.name: o.free_mem for o in others if o.online and o.name != node}
    for g in sorted(guests, key=lambda g: (-g.mem, g.vmid)):  # biggest first: best fit
        if mode == "shutdown":
            plan.shutdowns.append(g)
            continue
        if g.pinned:
            if pinned_rule == "refuse":
                plan.pinned.append(f"{g.label}: pinned ({g.pinned}): the reboot is refused")
                plan.refused = plan.refused or f"{g.label} is pinned ({g.pinned})"
            else:
                plan.pinned.append(f"{g.label}: pinned ({g.pinned}): shut down, started after")
                plan.shutdowns.append(g)
            continue
        target = _roomiest(room, g.mem)
        if target is None:
            plan.refused = plan.refused or f"no online node has room for {g.label}"
            continue
        room[target] -= g.mem
        plan.moves.append(
            Move(
                vmid=g.vmid,
                type=g.type,
                source=node,
                target=target,
                online=g.type == "qemu",
                label=g.label,
            )
        )
    return plan


def _roomiest(room: Mapping[str, int], need: int) -> str | None:
    fits = [(free, name) for name, free in room.items() if free >= need]
    return min(fits, key=lambda x: (-x[0], x[1]))[1] if fits else None  # ties: by name


def pinned_by(kind: Literal["lxc", "qemu"], config: Mapping[str, object]) -> str:
    """Why a guest's config pins it to its node ('' when nothing does): a passed-through PCI or
    USB device (VMs), a bind mount or a device (containers)."""
    for key, value in sorted(config.items()):
        text = str(value)
        if kind == "qemu" and (key.startswith("hostpci") or key.startswith("usb")):
            if key.startswith("usb") and "spice" in text:
                continue
            return f"{key}: {text}"
        source = text.split(",")[0]
        if kind == "lxc" and key[:2] == "mp" and key[2:].isdigit() and source.startswith("/"):
            return f"bind mount {key}: {source}"  # a host path, not a storage volume
        if kind == "lxc" and key.startswith("dev") and key[3:].isdigit():
            return f"device {key}: {text}"
    return ""
