"""apt: the commands labops runs (check, refresh, upgrade, simulation) and the parsers of their
output (upgradable list, held packages, simulated upgrades, lock errors).

Security updates are told apart by the **suite** (``bookworm-security``, ``stable-security``,
``noble-security``): the Release ``Origin`` of Debian security updates is plain ``Debian``, so
the origin cannot tell them apart (what PVE's /apt/update shows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from labops.patching.packages import PendingUpdate, shell_line, shell_words

UPGRADABLE_COMMAND = "apt list --upgradable 2>/dev/null"
"""Check: the upgradable packages (:func:`parse_upgradable`)."""

SHOWHOLD_COMMAND = "apt-mark showhold 2>/dev/null"
"""Check: the packages the operator holds (:func:`parse_showhold`)."""

_APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -o DPkg::Lock::Timeout={lock}"
_KEEP_CONF = "-o Dpkg::Options::=--force-confold"
# A simulation as root: -s changes nothing, and Debug::NoLocking keeps it off the dpkg lock that a
# running upgrade holds.
_APT_SIMULATE = "apt-get -s -o Debug::NoLocking=1"


def update_command(lock_timeout_s: int) -> str:
    """Refresh the package lists, waiting up to ``lock_timeout_s`` for the dpkg lock (failures:
    :func:`lock_holder`, :func:`failure_reason`)."""
    return f"apt-get -q -o DPkg::Lock::Timeout={int(lock_timeout_s)} update"


def upgrade_command(
    verb: str, packages: Sequence[str], hold: Iterable[str], lock_wait_s: float
) -> str:
    """``apt-get <verb>`` of ``packages`` (empty: all), non-interactive, keeping config files
    (CHANGES THE HOST).

    A held package is ``apt-mark hold``-ed before the upgrade and unheld after it, whether it
    succeeded or not; the command exits with the upgrade's status (or the hold's, when holding
    failed and nothing was upgraded)."""
    upgrade = shell_line(f"{_APT.format(lock=int(lock_wait_s))} {_KEEP_CONF} {verb}", *packages)
    held = shell_words(hold)
    if not held:
        return upgrade
    # `a && b; rc=$?` keeps the hold's failure when b never ran; the unhold always runs
    return (
        f"apt-mark hold {held} && {upgrade}; labops_rc=$?; apt-mark unhold {held}; exit $labops_rc"
    )


def simulate_command(verb: str, packages: Sequence[str], pins: Sequence[str] = ()) -> str:
    """What :func:`upgrade_command` would do, changing nothing (:func:`parse_simulation`).
    A hold is simulated without ``apt-mark`` (which writes): ``name=<installed version>`` in
    ``pins`` keeps that package where it is, as the hold would."""
    return shell_line(f"{_APT_SIMULATE} {verb}", *packages, *pins)


# `apt list --upgradable`: name/suite[,suite] version arch [upgradable from: old]
_UPGRADABLE = re.compile(
    r"^(?P<name>[^/\s]+)/(?P<suites>\S+) (?P<version>\S+) (?P<arch>\S+)"
    r" \[upgradable from: (?P<old>[^\]]+)\]$"
)
# `apt-get -s`: Inst name [old] (new Release:Version/suite[, Release:Version/suite] [arch]) [...]
_INST = re.compile(
    r"^Inst (?P<name>\S+)(?: \[(?P<old>[^\]]+)\])? \((?P<version>\S+) (?P<origins>.*?)"
    r"(?: \[(?P<arch>[^\]]+)\])?\)"
)
_SUMMARY = re.compile(
    r"^(?P<up>\d+) upgraded, (?P<new>\d+) newly installed, (?P<rm>\d+) to remove"
    r" and (?P<kept>\d+) not upgraded\.$"
)


def is_security_suite(suite: str) -> bool:
    """``bookworm-security``, ``stable-security``, ``noble-security`` and the like."""
    return suite.endswith("-security") or suite.endswith("/updates")  # /updates: Debian <= 10


def parse_upgradable(text: str) -> list[PendingUpdate]:
    """Parse ``apt list --upgradable`` (stdout; the ``Listing...`` line and warnings skipped).

    A package is a security update when any suite offering its new version is a security one.
    """
    out: list[PendingUpdate] = []
    for raw in text.splitlines():
        m = _UPGRADABLE.match(raw.strip())
        if not m:
            continue
        suites = [s for s in m["suites"].split(",") if s]
        out.append(
            PendingUpdate(
                name=m["name"],
                from_version=m["old"],
                to_version=m["version"],
                suites=suites,
                arch=m["arch"],
                security=any(is_security_suite(s) for s in suites),
            )
        )
    return out


def parse_showhold(text: str) -> list[str]:
    """Parse ``apt-mark showhold``: one package name per line."""
    return sorted({line.strip() for line in text.splitlines() if line.strip()})


class AptSimulation(BaseModel):
    """What ``apt-get -s dist-upgrade`` would do."""

    installs: list[PendingUpdate]
    upgraded: int = 0
    newly_installed: int = 0
    removed: int = 0
    kept_back: int = 0


def parse_simulation(text: str) -> AptSimulation:
    """Parse ``apt-get -s [dist-]upgrade``: ``Inst`` lines and the summary line."""
    installs: list[PendingUpdate] = []
    counts = {"up": 0, "new": 0, "rm": 0, "kept": 0}
    for raw in text.splitlines():
        line = raw.strip()
        m = _INST.match(line)
        if m:
            # origins: "Debian-Security:12/oldstable-security" or "Debian:12.15/oldstable, ..."
            suites = [o.strip().rsplit("/", 1)[-1] for o in m["origins"].split(",") if o.strip()]
            installs.append(
                PendingUpdate(
                    name=m["name"],
                    from_version=m["old"],
                    to_version=m["version"],
                    suites=suites,
                    arch=m["arch"],
                    security=any(is_security_suite(s) for s in suites),
                )
            )
            continue
        s = _SUMMARY.match(line)
        if s:
            counts = {k: int(s[k]) for k in counts}
    return AptSimulation(
        installs=installs,
        upgraded=counts["up"],
        newly_installed=counts["new"],
        removed=counts["rm"],
        kept_back=counts["kept"],
    )


def lock_holder(text: str) -> str | None:
    """The lock apt could not get (``/var/lib/dpkg/lock-frontend`` ...) and its holder, if any.

    Returns e.g. ``"/var/lib/dpkg/lock-frontend held by process 8175 (python3)"``, or None when
    the output shows no lock problem.
    """
    m = re.search(r"Could not get lock (\S+?)\.? It is held by (process \d+(?: \([^)]*\))?)", text)
    if m:
        return f"{m[1]} held by {m[2]}"
    m = re.search(
        r"Unable to (?:acquire the dpkg frontend lock|lock directory) \(?([^)\s,]+)", text
    )
    if m:
        return f"{m[1]} held"
    return None


def failure_reason(text: str) -> str:
    """The line that says why an apt run failed (the last ``E:`` line, or the last line)."""
    errors = [line[3:].strip() for line in text.splitlines() if line.startswith("E: ")]
    dpkg = re.search(r"Errors were encountered while processing:\s*\n\s*(.+)", text)
    if dpkg:
        return f"dpkg failed on {dpkg[1].strip()}"
    if errors:
        return errors[-1]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
