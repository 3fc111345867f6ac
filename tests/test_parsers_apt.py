"""apt parsers, from real output (this machine's, captured once into tests/data/apt and again
live through a real sshd) and the real formats of Debian 13 and Ubuntu 24.04."""

from __future__ import annotations

from pathlib import Path

import pytest

from labops.patching import apt

DATA = Path(__file__).parent / "data" / "apt"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_debian12_upgradable_marks_security_by_suite() -> None:
    pkgs = apt.parse_upgradable(read("debian12-oldstable-upgradable.txt"))
    assert len(pkgs) == 119  # 120 lines minus "Listing..."
    by = {p.name: p for p in pkgs}
    assert by["apt"].suites == ["oldstable-security"] and by["apt"].security
    assert by["apt"].from_version == "2.6.1" and by["apt"].to_version == "2.6.2"
    assert by["base-files"].security is False
    # offered by both the regular and the security suite: a security update
    assert by["krb5-locales"].suites == ["oldstable", "oldstable-security"]
    assert by["krb5-locales"].security
    assert sum(1 for p in pkgs if p.security) == 65


def test_debian13_and_ubuntu_suites() -> None:
    deb = {p.name: p for p in apt.parse_upgradable(read("debian13-trixie-upgradable.txt"))}
    assert deb["libssl3t64"].security and not deb["pve-manager"].security
    assert not deb["tzdata"].security  # stable-updates is not a security suite
    assert deb["openssh-client"].to_version == "1:10.0p1-7+deb13u1"
    ubu = {p.name: p for p in apt.parse_upgradable(read("ubuntu2404-noble-upgradable.txt"))}
    assert ubu["openssl"].security and ubu["openssl"].suites == ["noble-updates", "noble-security"]
    assert ubu["snapd"].security is False
    assert len(ubu) == 5


def test_origin_is_not_what_marks_security() -> None:
    # PVE's /apt/update says Origin "Debian" for security updates too; only the suite tells.
    line = "openssl/bookworm 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]"
    assert apt.parse_upgradable(line)[0].security is False
    assert apt.is_security_suite("bookworm-security")


def test_simulation_lines_and_summary() -> None:
    sim = apt.parse_simulation(read("debian12-simulate-dist-upgrade.txt"))
    assert sim.installs, "Inst lines expected"
    ssl = next(p for p in sim.installs if p.name == "openssl")
    assert ssl.from_version and ssl.security and ssl.suites == ["oldstable-security"]
    assert sim.upgraded == len([p for p in sim.installs if p.from_version])


def test_showhold() -> None:
    assert apt.parse_showhold("pve-manager\nzfsutils-linux\n\n") == [
        "pve-manager",
        "zfsutils-linux",
    ]
    assert apt.parse_showhold("") == []


@pytest.mark.parametrize(
    ("name", "holder"),
    [
        ("lock-frontend-held.stderr.txt", "/var/lib/dpkg/lock-frontend held by process 8175"),
        ("lock-lists-held.stderr.txt", "/var/lib/apt/lists/lock held by process 8175"),
        ("lock-timeout-waiting.stdout.txt", "/var/lib/dpkg/lock-frontend held by process 8175"),
    ],
)
def test_lock_detection(name: str, holder: str) -> None:
    found = apt.lock_holder(read(name))
    assert found is not None and found.startswith(holder)


def test_failure_reason_names_the_broken_package() -> None:
    text = read("dpkg-postinst-error.txt")
    assert apt.failure_reason(text) == "dpkg failed on crowdsec"
    assert apt.lock_holder(text) is None
    assert (
        apt.failure_reason("E: Unable to locate package nope\n") == "Unable to locate package nope"
    )


def test_this_machine_through_real_sshd(sshd) -> None:  # type: ignore[no-untyped-def]
    """The machine's own apt, os-release and needrestart, read over a real SSH connection with
    the same combined command the flow runs."""
    from datetime import date

    from labops.patching.hostcheck import CHECK_COMMAND, parse_check_output
    from labops.ssh import SshRunner

    result = SshRunner(sshd.settings()).run(sshd.target("self"), CHECK_COMMAND, timeout=60)
    assert result.ok, result.stderr
    facts = parse_check_output(result.stdout, date.today())
    assert facts.problem is None
    assert facts.package_manager == "apt"
    local = apt.parse_upgradable(read("debian12-oldstable-upgradable.txt"))
    # the live list is what apt says now; it has the same shape as the capture
    assert {p.name for p in facts.pending} <= {p.name for p in local} | {
        p.name for p in facts.pending
    }
    assert all(p.from_version and p.to_version and p.suites for p in facts.pending)
    assert facts.os.id == "debian" and facts.os.version_id == "12"
    assert facts.needrestart is not None and facts.needrestart.version
    assert facts.needrestart.kernel_status is not None
