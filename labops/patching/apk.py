"""Alpine's apk: the commands labops runs (check, refresh, upgrade, simulation) and the parsers
of their output (``apk version -l '<'``, pinned packages, ``apk upgrade -s``).

apk has no security flag for an upgrade (no security suite), so ``security`` stays None: unknown,
never reported as "no security updates".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from labops.patching.packages import PendingUpdate, shell_line

VERSION_COMMAND = "apk version -l '<' 2>/dev/null"
"""Check: the upgradable packages (:func:`parse_version`)."""

WORLD_COMMAND = "cat /etc/apk/world 2>/dev/null"
"""Check: the world file, whose ``name=version`` entries are pins (:func:`parse_world_pins`)."""

UPDATE_COMMAND = "apk update -q"
"""Refresh the package index."""


def upgrade_command(packages: Sequence[str]) -> str:
    """``apk upgrade`` of ``packages`` (empty: all) (CHANGES THE HOST)."""
    return shell_line("apk upgrade", *packages)


def simulate_command(packages: Sequence[str]) -> str:
    """What :func:`upgrade_command` would do, changing nothing
    (:func:`parse_upgrade_simulation`)."""
    return shell_line("apk upgrade -s", *packages)


# "busybox-1.36.1-r29    < 1.36.1-r31" (an apk version is <digits...>[_suffix]-r<N>)
_VERSION_LINE = re.compile(r"^(?P<pkg>\S+)\s+(?P<op>[<>=?~]+)\s+(?P<avail>\S+)")
_PKG = re.compile(r"^(?P<name>.+?)-(?P<version>\d[^-]*-r\d+)$")
# "(1/3) Upgrading busybox (1.36.1-r29 -> 1.36.1-r31)"
_UPGRADING = re.compile(
    r"^\(\d+/\d+\) (?:Upgrading|Replacing) (?P<name>\S+) \((?P<old>\S+) -> (?P<new>\S+)\)"
)


def split_name_version(pkg: str) -> tuple[str, str]:
    """``libcrypto3-3.3.2-r0`` -> (``libcrypto3``, ``3.3.2-r0``)."""
    m = _PKG.match(pkg)
    if not m:
        raise ValueError(f"not an apk package-version: {pkg!r}")
    return m["name"], m["version"]


def parse_version(text: str) -> list[PendingUpdate]:
    """Parse ``apk version -l '<'`` (the ``Installed: Available:`` header skipped)."""
    out: list[PendingUpdate] = []
    for raw in text.splitlines():
        m = _VERSION_LINE.match(raw.strip())
        if not m or m["op"] != "<":
            continue
        try:
            name, installed = split_name_version(m["pkg"])
        except ValueError:
            continue
        out.append(PendingUpdate(name=name, from_version=installed, to_version=m["avail"]))
    return out


def parse_world_pins(text: str) -> list[str]:
    """Packages pinned in ``/etc/apk/world`` (``name=1.2-r0``, ``name<2``, ``name~1.2``):
    apk's nearest thing to a held package."""
    held = set()
    for raw in text.split():
        m = re.match(r"^([^=<>~@\s]+)(?:@\S+)?[=<>~]", raw)
        if m:
            held.add(m[1])
    return sorted(held)


def parse_upgrade_simulation(text: str) -> list[PendingUpdate]:
    """Parse ``apk upgrade -s`` (``(n/m) Upgrading pkg (old -> new)`` lines)."""
    out = []
    for raw in text.splitlines():
        m = _UPGRADING.match(raw.strip())
        if m:
            out.append(PendingUpdate(name=m["name"], from_version=m["old"], to_version=m["new"]))
    return out
