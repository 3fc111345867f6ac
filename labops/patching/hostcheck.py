"""The one combined check command run on every host, composed of each tool's check command
(``apt.py``, ``apk.py``, ``needrestart.py``, ``osrelease.py``), and the parser of its sectioned
output (each section goes to its tool's parser).

One command per host (one SSH round trip): each section starts with a marker line, so one stdout
carries os-release, the upgradable list (apt or apk), held packages, the reboot flag and its
packages, and ``needrestart -b``. Commands missing on a host (apk on Debian, needrestart where it
is not installed) print nothing, so the same command serves every distribution.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from labops.patching import apk, apt, needrestart, osrelease
from labops.patching.needrestart import NeedRestart, parse_needrestart
from labops.patching.osrelease import OsRelease, parse_os_release
from labops.patching.packages import PendingUpdate

MARK = "@@labops:"

_SECTIONS: list[tuple[str, str]] = [
    ("os-release", osrelease.COMMAND),
    ("apt-upgradable", apt.UPGRADABLE_COMMAND),
    ("apt-held", apt.SHOWHOLD_COMMAND),
    ("apk-upgradable", apk.VERSION_COMMAND),
    ("apk-world", apk.WORLD_COMMAND),
    ("reboot-required", "test -e /run/reboot-required && echo yes"),
    ("reboot-pkgs", "cat /run/reboot-required.pkgs 2>/dev/null"),
    ("needrestart", needrestart.COMMAND),
    # sd_booted(3): systemd is the init system. Long node upgrades then run as a transient unit.
    ("systemd", "test -d /run/systemd/system && echo yes"),
]

CHECK_COMMAND = "; ".join(f"echo {MARK}{name}; {cmd}" for name, cmd in _SECTIONS) + (
    f"; echo {MARK}end"
)
"""The command labops runs on each host in check mode (also what the benchmark gives Ansible)."""


def refresh_command(manager: Literal["apt", "apk"], lock_timeout_s: int) -> str:
    """Refresh the package lists; apt waits up to ``lock_timeout_s`` for the dpkg lock."""
    return apk.UPDATE_COMMAND if manager == "apk" else apt.update_command(lock_timeout_s)


class HostFacts(BaseModel):
    """What the check command found on one host."""

    os: OsRelease = OsRelease()
    package_manager: Literal["apt", "apk"] | None = None
    pending: list[PendingUpdate] = Field(default_factory=list)
    held: list[str] = Field(default_factory=list)
    reboot_required: bool = False
    reboot_packages: list[str] = Field(default_factory=list)
    needrestart: NeedRestart | None = Field(None, description="None: needrestart not installed.")
    systemd: bool = Field(False, description="systemd is the init system (/run/systemd/system).")
    eol: bool = False
    end_of_life: date | None = None
    problem: str | None = Field(
        None, description="Why the result is incomplete (then the host is not 'up to date')."
    )

    @property
    def security_count(self) -> int:
        return sum(1 for p in self.pending if p.security)


def split_sections(stdout: str) -> dict[str, str]:
    """Marker name -> the text after it (up to the next marker)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK) :].strip(), [])
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def parse_check_output(stdout: str, today: date) -> HostFacts:
    """Parse the output of :data:`CHECK_COMMAND`.

    Anything that leaves the result unknown (output cut short, no package manager answered)
    is put in ``problem``: the flow then reports the host as failed, never as up to date.
    """
    sections = split_sections(stdout)
    os = parse_os_release(sections.get("os-release", ""))
    facts = HostFacts(os=os, end_of_life=os.end_of_life(), eol=os.is_eol(today))
    if "end" not in sections:
        facts.problem = "check output incomplete (no end marker)"
    apt_text = sections.get("apt-upgradable", "")
    apk_text = sections.get("apk-upgradable", "")
    if "Listing" in apt_text or os.id in ("debian", "ubuntu"):
        facts.package_manager = "apt"
        facts.pending = apt.parse_upgradable(apt_text)
        facts.held = apt.parse_showhold(sections.get("apt-held", ""))
        if "Listing" not in apt_text and facts.problem is None:
            facts.problem = "apt list --upgradable printed nothing"
    elif apk_text.strip() or os.id == "alpine":
        facts.package_manager = "apk"
        facts.pending = apk.parse_version(apk_text)
        facts.held = apk.parse_world_pins(sections.get("apk-world", ""))
        if not apk_text.strip() and facts.problem is None:
            facts.problem = "apk version printed nothing"
    elif facts.problem is None:
        facts.problem = f"no package manager answered (os {os.id})"
    facts.reboot_required = bool(sections.get("reboot-required", "").strip())
    facts.reboot_packages = sorted(
        {p.strip() for p in sections.get("reboot-pkgs", "").splitlines() if p.strip()}
    )
    facts.systemd = bool(sections.get("systemd", "").strip())
    nr_text = sections.get("needrestart", "")
    if "NEEDRESTART-" in nr_text:
        facts.needrestart = parse_needrestart(nr_text)
    return facts
