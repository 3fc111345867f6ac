"""Package catalogues of the simulated OS releases: what is installed and what an update offers.

Versions follow each distribution's real numbering (``+deb12uN``, ``ubuntuN``, ``-rN``), so the
product's version handling meets the real shapes. Suites are the Release ``Suite`` (archive) names
that ``apt list`` prints: on this date trixie is ``stable`` and bookworm ``oldstable`` (captured
from a Debian 12 machine, see ``data/captured/``). Sources point at the lab's own package mirror
(``mirror.lab.internal``), as a homelab behind an apt cache would; nothing ever contacts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    arch: str
    kind: str  # base | upd | sec | sec2 (in both suites) | pve | kern
    old: str
    new: str | None
    description: str


def _load(path: Path) -> dict[str, list[CatalogEntry]]:
    """``data/packages.txt``: ``[section]`` headers, then ``name arch kind old new description``."""
    out: dict[str, list[CatalogEntry]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = []
            continue
        name, arch, kind, old, new, *desc = line.split()
        out[section].append(
            CatalogEntry(name, arch, kind, old, None if new == "-" else new, " ".join(desc))
        )
    return out


CATALOG: dict[str, list[CatalogEntry]] = _load(Path(__file__).parent / "data" / "packages.txt")

# The kernel package a pending ``proxmox-kernel-6.14`` upgrade pulls in (a NEW package, so only
# dist-upgrade installs it; ``apt-get upgrade`` keeps the meta package back).
PVE_NEW_KERNEL = CatalogEntry(
    "proxmox-kernel-6.14.11-4-pve-signed",
    "amd64",
    "new",
    "",
    "6.14.11-4",
    "Proxmox Kernel Image (signed)",
)
PVE_KERNEL_RUNNING = "6.14.11-2-pve"
PVE_KERNEL_NEW = "6.14.11-4-pve"

# Release facts per OS: suites (regular, security, both), the "Label:Version/Archive" apt-get -s
# prints, the sources apt-get update fetches, needrestart's version.
RELEASES: dict[str, dict[str, Any]] = {
    "debian12": {
        "codename": "bookworm",
        "regular": ["oldstable"],
        "security": ["oldstable-security"],
        "both": ["oldstable", "oldstable-security"],
        "inst": {
            "oldstable": "Debian:12.12/oldstable",
            "oldstable-security": "Debian-Security:12/oldstable-security",
        },
        "sources": [
            ("http://mirror.lab.internal/debian", "bookworm", 151),
            ("http://mirror.lab.internal/debian", "bookworm-updates", 55.4),
            ("http://mirror.lab.internal/debian-security", "bookworm-security", 48.0),
        ],
        "needrestart": "3.6",
        "apt": "2.6.1",
        "debian_version": "12.12",
    },
    "debian13": {
        "codename": "trixie",
        "regular": ["stable"],
        "security": ["stable-security"],
        "both": ["stable", "stable-security"],
        "inst": {
            "stable": "Debian:13.2/stable",
            "stable-security": "Debian-Security:13/stable-security",
            "pve": "Proxmox:13/stable",
        },
        "sources": [
            ("http://mirror.lab.internal/debian", "trixie", 140),
            ("http://mirror.lab.internal/debian", "trixie-updates", 47.3),
            ("http://mirror.lab.internal/debian-security", "trixie-security", 43.4),
        ],
        "needrestart": "3.8",
        "apt": "3.0.3",
        "debian_version": "13.2",
    },
    "debian10": {
        "codename": "buster",
        "regular": ["oldoldoldstable"],
        "security": [],
        "both": [],
        "inst": {},
        "sources": [
            ("http://mirror.lab.internal/debian-archive/debian", "buster", 118),
            ("http://mirror.lab.internal/debian-archive/debian-security", "buster/updates", 34.8),
        ],
        "needrestart": "3.4",
        "apt": "1.8.2.3",
        "debian_version": "10.13",
    },
    "ubuntu2404": {
        "codename": "noble",
        "regular": ["noble-updates"],
        "security": ["noble-security"],
        "both": ["noble-updates", "noble-security"],
        "inst": {
            "noble-updates": "Ubuntu:24.04/noble-updates",
            "noble-security": "Ubuntu:24.04/noble-security",
        },
        "sources": [
            ("http://mirror.lab.internal/ubuntu", "noble", 256),
            ("http://mirror.lab.internal/ubuntu", "noble-updates", 126),
            ("http://mirror.lab.internal/ubuntu", "noble-backports", 126),
            ("http://mirror.lab.internal/ubuntu", "noble-security", 126),
        ],
        "needrestart": "3.6",
        "apt": "2.8.3",
        "debian_version": "trixie/sid",
    },
    "alpine320": {"codename": "v3.20", "needrestart": None, "apt": None},
}
PVE_SOURCE = ("http://mirror.lab.internal/proxmox/debian/pve", "trixie", 2.3)
