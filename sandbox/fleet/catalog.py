"""Package catalogues of the simulated OS releases: what is installed and what an update offers.

Versions follow each distribution's real numbering (``+deb12uN``, ``ubuntuN``, ``-rN``), so the
product's version handling meets the real shapes. Suites are the Release ``Suite`` (archive) names
that ``apt list`` prints: on this date trixie is ``stable`` and bookworm ``oldstable`` (captured
from a Debian 12 machine, see ``data/captured/``).
"""

from __future__ import annotations

from dataclasses import dataclass

# kind: "base" never has an update; "sec" comes from the security suite (sometimes also from the
# regular one, as apt shows both when the same version is in both); "upd" from the regular suites.
_DEBIAN12 = """
adduser            all   base 3.134                   -  add and remove users and groups
bash               amd64 base 5.2.15-2+b8             -  GNU Bourne Again SHell
coreutils          amd64 base 9.1-1                   -  GNU core utilities
cron               amd64 base 3.0pl1-162              -  process scheduling daemon
debconf            all   base 1.5.82                  -  Debian configuration management system
dpkg               amd64 base 1.21.22                 -  Debian package management system
gzip               amd64 base 1.12-1                  -  GNU compression utilities
iproute2           amd64 base 6.1.0-3                 -  networking and traffic control tools
procps             amd64 base 2:4.0.2-3               -  /proc file system utilities
sed                amd64 base 4.9-1                   -  GNU stream editor for filtering/transforming text
util-linux         amd64 base 2.38.1-5+deb12u3        -  miscellaneous system utilities
base-files         amd64 upd  12.4+deb12u11           12.4+deb12u12          Debian base system miscellaneous files
tzdata             all   upd  2025b-0+deb12u1         2025b-0+deb12u2        time zone and daylight-saving time data
systemd            amd64 upd  252.38-1~deb12u1        252.39-1~deb12u1       system and service manager
libsystemd0        amd64 upd  252.38-1~deb12u1        252.39-1~deb12u1       systemd utility library
libudev1           amd64 upd  252.38-1~deb12u1        252.39-1~deb12u1       libudev shared library
distro-info-data   all   upd  0.58+deb12u4            0.58+deb12u5           information about the distributions' releases (data files)
libc6              amd64 upd  2.36-9+deb12u10         2.36-9+deb12u13        GNU C Library: Shared libraries
openssl            amd64 sec  3.0.16-1~deb12u1        3.0.17-1~deb12u3       Secure Sockets Layer toolkit - cryptographic utility
libssl3            amd64 sec  3.0.16-1~deb12u1        3.0.17-1~deb12u3       Secure Sockets Layer toolkit - shared libraries
openssh-server     amd64 sec  1:9.2p1-2+deb12u6       1:9.2p1-2+deb12u7      secure shell (SSH) server, for secure access from remote machines
openssh-client     amd64 sec  1:9.2p1-2+deb12u6       1:9.2p1-2+deb12u7      secure shell (SSH) client, for secure access to remote machines
curl               amd64 sec  7.88.1-10+deb12u12      7.88.1-10+deb12u14     command line tool for transferring data with URL syntax
libcurl4           amd64 sec  7.88.1-10+deb12u12      7.88.1-10+deb12u14     easy-to-use client-side URL transfer library (OpenSSL flavour)
libexpat1          amd64 sec2 2.5.0-1+deb12u1         2.5.0-1+deb12u2        XML parsing C library - runtime library
sudo               amd64 sec  1.9.13p3-1+deb12u1      1.9.13p3-1+deb12u2     Provide limited super user privileges to specific users
nginx              amd64 sec  1.22.1-9+deb12u2        1.22.1-9+deb12u3       small, powerful, scalable web/proxy server
postgresql-15      amd64 upd  15.13-0+deb12u1         15.14-0+deb12u1        The World's Most Advanced Open Source Relational Database
"""

_DEBIAN13 = """
adduser            all   base 3.152                   -  add and remove users and groups
bash               amd64 base 5.2.37-2+b5             -  GNU Bourne Again SHell
coreutils          amd64 base 9.7-3                   -  GNU core utilities
cron               amd64 base 3.0pl1-197              -  process scheduling daemon
debconf            all   base 1.5.91                  -  Debian configuration management system
dpkg               amd64 base 1.22.21                 -  Debian package management system
gzip               amd64 base 1.13-1                  -  GNU compression utilities
iproute2           amd64 base 6.15.0-1                -  networking and traffic control tools
procps             amd64 base 2:4.0.4-9               -  /proc file system utilities
util-linux         amd64 base 2.41-5                  -  miscellaneous system utilities
base-files         amd64 upd  13.8+deb13u1            13.8+deb13u2           Debian base system miscellaneous files
tzdata             all   upd  2025b-4+deb13u1         2025c-0+deb13u1        time zone and daylight-saving time data
systemd            amd64 upd  257.8-1~deb13u2         257.9-1~deb13u1        system and service manager
libsystemd0        amd64 upd  257.8-1~deb13u2         257.9-1~deb13u1        systemd utility library
libc6              amd64 upd  2.41-12                 2.41-12+deb13u1        GNU C Library: Shared libraries
openssl            amd64 sec  3.5.1-1                 3.5.4-1~deb13u1        Secure Sockets Layer toolkit - cryptographic utility
libssl3t64         amd64 sec  3.5.1-1                 3.5.4-1~deb13u1        Secure Sockets Layer toolkit - shared libraries
openssh-server     amd64 sec  1:10.0p1-7              1:10.0p1-7+deb13u1     secure shell (SSH) server, for secure access from remote machines
openssh-client     amd64 sec  1:10.0p1-7              1:10.0p1-7+deb13u1     secure shell (SSH) client, for secure access to remote machines
curl               amd64 sec  8.14.1-2                8.14.1-2+deb13u2       command line tool for transferring data with URL syntax
libcurl4t64        amd64 sec2 8.14.1-2                8.14.1-2+deb13u2       easy-to-use client-side URL transfer library (OpenSSL flavour)
nginx              amd64 sec  1.26.3-3                1.26.3-3+deb13u1       small, powerful, scalable web/proxy server
"""

# Packages only Proxmox VE nodes have (trixie + pve-no-subscription).
_PVE = """
proxmox-ve                    all   base 9.0.0          -            Proxmox Virtual Environment
proxmox-default-kernel        all   base 2.0.0          -            Default Proxmox Kernel Image
proxmox-kernel-6.14.11-2-pve-signed amd64 base 6.14.11-2 -           Proxmox Kernel Image (signed)
pve-manager                   all   pve  9.0.10         9.0.11       Proxmox Virtual Environment Management Tools
libpve-common-perl            all   pve  9.0.10         9.0.11       Proxmox VE base library
proxmox-widget-toolkit        all   pve  5.0.5          5.0.6        Core Widgets and ExtJS Helper Classes for Proxmox Web UIs
pve-qemu-kvm                  amd64 pve  10.0.2-4       10.1.2-1     Full virtualization on x86 hardware
lxc-pve                       amd64 pve  6.0.5-1        6.0.5-2      Linux containers userspace tools
proxmox-kernel-6.14           all   kern 6.14.11-2      6.14.11-4    Latest Proxmox Kernel Image
"""

_UBUNTU2404 = """
adduser            all   base 3.137ubuntu1            -  add and remove users and groups
bash               amd64 base 5.2.21-2ubuntu4         -  GNU Bourne Again SHell
coreutils          amd64 base 9.4-3ubuntu6.1          -  GNU core utilities
cron               amd64 base 3.0pl1-184ubuntu2       -  process scheduling daemon
dpkg               amd64 base 1.22.6ubuntu6.5         -  Debian package management system
needrestart        all   base 3.6-7ubuntu4.5          -  check which daemons need to be restarted after library upgrades
update-notifier-common all base 3.192.68.2            -  Files shared between update-notifier and other packages
libc6              amd64 sec2 2.39-0ubuntu8.5         2.39-0ubuntu8.6        GNU C Library: Shared libraries
openssl            amd64 sec2 3.0.13-0ubuntu3.5       3.0.13-0ubuntu3.6      Secure Sockets Layer toolkit - cryptographic utility
libssl3t64         amd64 sec2 3.0.13-0ubuntu3.5       3.0.13-0ubuntu3.6      Secure Sockets Layer toolkit - shared libraries
curl               amd64 sec  8.5.0-2ubuntu10.6       8.5.0-2ubuntu10.7      command line tool for transferring data with URL syntax
libcurl4t64        amd64 sec  8.5.0-2ubuntu10.6       8.5.0-2ubuntu10.7      easy-to-use client-side URL transfer library (OpenSSL flavour)
openssh-server     amd64 sec2 1:9.6p1-3ubuntu13.12    1:9.6p1-3ubuntu13.13   secure shell (SSH) server, for secure access from remote machines
systemd            amd64 upd  255.4-1ubuntu8.8        255.4-1ubuntu8.10      system and service manager
snapd              amd64 upd  2.67.1+24.04            2.68.5+24.04           Daemon and tooling that enable snap packages
tzdata             all   upd  2025b-0ubuntu0.24.04.1  2025b-0ubuntu0.24.04.2 time zone and daylight-saving time data
"""

_DEBIAN10 = """
adduser            all   base 3.118                   -  add and remove users and groups
bash               amd64 base 5.0-4                   -  GNU Bourne Again SHell
base-files         amd64 base 10.3+deb10u13           -  Debian base system miscellaneous files
coreutils          amd64 base 8.30-3                  -  GNU core utilities
libc6              amd64 base 2.28-10+deb10u2         -  GNU C Library: Shared libraries
openssl            amd64 base 1.1.1n-0+deb10u6        -  Secure Sockets Layer toolkit - cryptographic utility
openssh-server     amd64 base 1:7.9p1-10+deb10u4      -  secure shell (SSH) server, for secure access from remote machines
"""

_ALPINE320 = """
alpine-baselayout  x86_64 base 3.6.5-r0               -  Alpine base dir structure and init scripts
alpine-keys        x86_64 base 2.4-r1                 -  Public keys for Alpine Linux packages
apk-tools          x86_64 base 2.14.4-r1              -  Alpine Package Keeper - package manager for alpine
scanelf            x86_64 base 1.3.7-r2               -  Scan ELF binaries for stuff
busybox            x86_64 sec  1.36.1-r29             1.36.1-r31   Size optimized toolbox of many common UNIX utilities
ssl_client         x86_64 sec  1.36.1-r29             1.36.1-r31   EXternal ssl_client for busybox wget
libcrypto3         x86_64 sec  3.3.2-r1               3.3.3-r0     Crypto library from openssl
libssl3            x86_64 sec  3.3.2-r1               3.3.3-r0     SSL shared libraries
musl               x86_64 upd  1.2.5-r0               1.2.5-r1     the musl c library (libc) implementation
zlib               x86_64 upd  1.3.1-r1               1.3.1-r2     A compression/decompression Library
curl               x86_64 sec  8.11.1-r0              8.12.1-r0    URL retrival utility and library
libcurl            x86_64 sec  8.11.1-r0              8.12.1-r0    The multiprotocol file transfer library
openssh-server     x86_64 sec  9.7_p1-r4              9.7_p1-r5    OpenSSH server
"""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    arch: str
    kind: str  # base | upd | sec | sec2 (in both suites) | pve | kern
    old: str
    new: str | None
    description: str


def _parse(table: str) -> list[CatalogEntry]:
    out = []
    for line in table.strip().splitlines():
        name, arch, kind, old, new, *desc = line.split()
        out.append(CatalogEntry(name, arch, kind, old, None if new == "-" else new, " ".join(desc)))
    return out


CATALOG: dict[str, list[CatalogEntry]] = {
    "debian10": _parse(_DEBIAN10),
    "debian12": _parse(_DEBIAN12),
    "debian13": _parse(_DEBIAN13),
    "ubuntu2404": _parse(_UBUNTU2404),
    "alpine320": _parse(_ALPINE320),
    "pve": _parse(_PVE),
}

# The kernel package a pending ``proxmox-kernel-6.14`` upgrade pulls in (a NEW package, so only
# dist-upgrade installs it; ``apt-get upgrade`` keeps the meta package back).
PVE_NEW_KERNEL = CatalogEntry(
    "proxmox-kernel-6.14.11-4-pve-signed", "amd64", "new", "", "6.14.11-4",
    "Proxmox Kernel Image (signed)",
)
PVE_KERNEL_RUNNING = "6.14.11-2-pve"
PVE_KERNEL_NEW = "6.14.11-4-pve"

# Release facts per OS: suites (regular, security, both), the "Label:Version/Archive" apt-get -s
# prints, the sources apt-get update fetches, needrestart's version.
RELEASES: dict[str, dict[str, object]] = {
    "debian12": {
        "codename": "bookworm", "regular": ["oldstable"], "security": ["oldstable-security"],
        "both": ["oldstable", "oldstable-security"],
        "inst": {"oldstable": "Debian:12.12/oldstable",
                 "oldstable-security": "Debian-Security:12/oldstable-security"},
        "sources": [("http://deb.debian.org/debian", "bookworm", 151),
                    ("http://deb.debian.org/debian", "bookworm-updates", 55.4),
                    ("http://deb.debian.org/debian-security", "bookworm-security", 48.0)],
        "needrestart": "3.6", "apt": "2.6.1", "debian_version": "12.12",
    },
    "debian13": {
        "codename": "trixie", "regular": ["stable"], "security": ["stable-security"],
        "both": ["stable", "stable-security"],
        "inst": {"stable": "Debian:13.2/stable",
                 "stable-security": "Debian-Security:13/stable-security",
                 "pve": "Proxmox:13/stable"},
        "sources": [("http://deb.debian.org/debian", "trixie", 140),
                    ("http://deb.debian.org/debian", "trixie-updates", 47.3),
                    ("http://security.debian.org/debian-security", "trixie-security", 43.4)],
        "needrestart": "3.8", "apt": "3.0.3", "debian_version": "13.2",
    },
    "debian10": {
        "codename": "buster", "regular": ["oldoldoldstable"], "security": [], "both": [],
        "inst": {},
        "sources": [("http://archive.debian.org/debian", "buster", 118),
                    ("http://archive.debian.org/debian-security", "buster/updates", 34.8)],
        "needrestart": "3.4", "apt": "1.8.2.3", "debian_version": "10.13",
    },
    "ubuntu2404": {
        "codename": "noble", "regular": ["noble-updates"], "security": ["noble-security"],
        "both": ["noble-updates", "noble-security"],
        "inst": {"noble-updates": "Ubuntu:24.04/noble-updates",
                 "noble-security": "Ubuntu:24.04/noble-security"},
        "sources": [("http://archive.ubuntu.com/ubuntu", "noble", 256),
                    ("http://archive.ubuntu.com/ubuntu", "noble-updates", 126),
                    ("http://archive.ubuntu.com/ubuntu", "noble-backports", 126),
                    ("http://security.ubuntu.com/ubuntu", "noble-security", 126)],
        "needrestart": "3.6", "apt": "2.8.3", "debian_version": "trixie/sid",
    },
    "alpine320": {"codename": "v3.20", "needrestart": None, "apt": None},
}
PVE_SOURCE = ("http://download.proxmox.com/debian/pve", "trixie", 2.3)
