"""needrestart -b parser: this machine's real output, a PVE node with a newer kernel, and a
container (needrestart skips kernel checks there)."""

from __future__ import annotations

from pathlib import Path

from labops.patching.needrestart import parse_needrestart

DATA = Path(__file__).parent / "data" / "needrestart"


def test_node_with_pending_kernel() -> None:
    nr = parse_needrestart((DATA / "pve-node-kernel-pending.txt").read_text())
    assert nr.kernel_status == 3 and nr.reboot_advised
    assert nr.kernel_expected == "6.14.11-2-pve"
    assert nr.services == ["pveproxy.service", "pvedaemon.service", "ssh.service"]
    assert nr.containers == ["LXC nginx"]


def test_container_never_needs_a_kernel_reboot() -> None:
    nr = parse_needrestart((DATA / "container-services.txt").read_text())
    assert nr.kernel_status is None and not nr.reboot_advised
    assert nr.services == ["cron.service", "nginx.service"]


def test_this_machine_with_perl_warnings() -> None:
    nr = parse_needrestart((DATA / "debian12-vm-no-kernel-info.txt").read_text())
    assert nr.version == "3.6" and nr.kernel_status == 0 and nr.kernel_state == "unknown"
    assert not nr.reboot_advised
    noisy = "readline() on closed filehandle HENV at /usr/sbin/needrestart line 79.\n"
    assert parse_needrestart(noisy + "NEEDRESTART-KSTA: 1\n").kernel_status == 1
