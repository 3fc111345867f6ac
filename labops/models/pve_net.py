"""PVE guest network interfaces (``netN`` config values), pure.

A ``netN`` value is a PVE property string: comma-separated ``key=value`` parts. Containers use
``name=eth0,bridge=vmbr0,hwaddr=..,ip=../24,type=veth``; VMs put the model first, alone or as
``<model>=<mac>`` (``virtio=BC:24:11:..,bridge=vmbr0,firewall=1``). Both formats have
``link_down`` ("pull the plug"): the interface exists but carries no traffic (pve-api-schema.json,
``net[n]`` of ``/nodes/{node}/lxc/{vmid}/config`` and ``/nodes/{node}/qemu/{vmid}/config``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Keys of the two net[n] formats (PVE 9 API schema).
QEMU_MODELS = frozenset(
    {
        "e1000",
        "e1000-82540em",
        "e1000-82544gc",
        "e1000-82545em",
        "e1000e",
        "i82551",
        "i82557b",
        "i82559er",
        "ne2k_isa",
        "ne2k_pci",
        "pcnet",
        "rtl8139",
        "virtio",
        "vmxnet3",
    }
)
LXC_NET_KEYS = frozenset(
    {
        "name",
        "bridge",
        "firewall",
        "gw",
        "gw6",
        "host-managed",
        "hwaddr",
        "ip",
        "ip6",
        "link_down",
        "mtu",
        "rate",
        "tag",
        "trunks",
        "type",
    }
)
QEMU_NET_KEYS = QEMU_MODELS | {
    "model",
    "bridge",
    "firewall",
    "link_down",
    "macaddr",
    "mtu",
    "queues",
    "rate",
    "tag",
    "trunks",
}
NET_KEYS = LXC_NET_KEYS | QEMU_NET_KEYS

NET_ID = re.compile(r"^net(\d+)$")
_TRUE = {"1", "yes", "on", "true"}


def interfaces(config: Mapping[str, object]) -> dict[str, str]:
    """The ``netN`` entries of a guest config, in interface order (net2 before net10)."""
    nets = {k: str(v) for k, v in config.items() if NET_ID.match(k)}
    return dict(sorted(nets.items(), key=lambda kv: int(kv[0][3:])))


def net_parts(value: str) -> list[tuple[str | None, str]]:
    """The parts of a net string as ``(key, value)``; ``key`` is None for a bare value (a VM's
    model written without its MAC, ``virtio,bridge=vmbr0``)."""
    parts: list[tuple[str | None, str]] = []
    for part in value.split(","):
        key, sep, val = part.partition("=")
        parts.append((key.strip(), val.strip()) if sep else (None, part.strip()))
    return parts


def check_net_string(value: str, kind: str | None = None) -> str | None:
    """Why ``value`` is not a net string of ``kind`` (lxc | qemu | None: either), else None.

    Checks what a config file can get wrong before PVE sees it (empty parts, unknown or repeated
    keys, a container interface without ``name``); PVE still checks the values themselves.
    """
    if not value.strip():
        return "empty net string"
    if any(c.isspace() for c in value):
        return "a net string has no spaces (key=value parts separated by commas)"
    allowed = {"lxc": LXC_NET_KEYS, "qemu": QEMU_NET_KEYS}.get(kind or "", NET_KEYS)
    seen: set[str] = set()
    for i, (key, val) in enumerate(net_parts(value)):
        if key is None:
            if i == 0 and val in QEMU_MODELS and kind != "lxc":
                seen.add("model")
                continue
            return f"part {val!r} is not key=value"
        if not key or not val:
            return f"part {key or ''}={val} has an empty key or value"
        if key not in allowed:
            what = f"a {kind} " if kind else "a "
            return f"unknown key {key!r} for {what}network interface"
        name = "model" if key in QEMU_MODELS else key
        if name in seen:
            return f"key {name!r} given twice"
        seen.add(name)
    if kind == "lxc" and "name" not in seen:
        return "a container interface needs name= (e.g. name=eth0)"
    return None


def link_is_down(value: str) -> bool:
    """True when the interface is unplugged (``link_down`` set to a true value)."""
    return any(k == "link_down" and v.lower() in _TRUE for k, v in net_parts(value))


def with_link_down(value: str) -> str:
    """``value`` with ``link_down=1``; every other part kept as it was, in its place."""
    kept = [
        part
        for part, (key, _val) in zip(value.split(","), net_parts(value), strict=True)
        if key != "link_down"
    ]
    return ",".join([*kept, "link_down=1"])


def describe_net(value: str) -> str:
    """The parts that decide where an interface lands: bridge, VLAN and addresses."""
    shown = [
        f"{k}={v}"
        for k, v in net_parts(value)
        if k in ("bridge", "tag", "ip", "ip6", "link_down", "trunks")
    ]
    return ",".join(shown) or value
