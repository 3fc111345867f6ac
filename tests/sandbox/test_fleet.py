"""The sandbox SSH fleet over real SSH: paramiko and the OpenSSH client against the simulated hosts.

Each test drives one behaviour a labops flow depends on (strict host keys, auth failures, locks,
upgrades, reboots, pct exec, Alpine) and checks the output has the real tools' format.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import paramiko
import pytest

from tests.sandbox.fleet_harness import FleetHarness

APT_LIST_RE = re.compile(r"^(\S+)/(\S+) (\S+) (\S+) \[upgradable from: ([^\]]+)\]$")


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetHarness]:
    h = FleetHarness(time_scale=0.05)
    yield h
    h.close()


@pytest.fixture(autouse=True)
def _clean_faults(fleet: FleetHarness) -> Iterator[None]:
    yield
    fleet.control("clear_faults")


def _wait(pred: object, timeout: float = 60.0) -> bool:
    """Until ``pred`` holds; the bound catches a hang, not slowness (a loaded CI machine lets the
    sandbox's reconcile loop lag by seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ssh_cmd(fleet: FleetHarness, host: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={fleet.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "-F",
            "/dev/null",
            "-i",
            fleet.key_file,
            "-p",
            str(fleet.port(host)),
            "root@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_fragment_matches_labops_schema(fleet: FleetHarness) -> None:
    from labops.config.inventory import Host
    from labops.config.systems import SshSystem

    frag = fleet.svc.config_fragment()
    SshSystem(**frag["systems"]["ssh"])
    hosts = [Host(**h) for h in frag["inventory"]["hosts"]]
    kinds = {h.kind for h in hosts}
    assert kinds == {"node", "container"}
    assert any(h.access == "pct" for h in hosts) and any(h.access == "ssh" for h in hosts)
    with open(fleet.known_hosts) as f:
        lines = f.read().splitlines()
    assert all(re.match(r"^\[127\.0\.0\.1\]:\d+ ssh-ed25519 \S+$", ln) for ln in lines)
    assert len(lines) == sum(1 for h in hosts if h.access == "ssh")


def test_paramiko_reject_policy_os_release_and_apt_list(fleet: FleetHarness) -> None:
    rc, out, _ = fleet.run("pve1", "cat /etc/os-release")
    assert rc == 0 and "VERSION_CODENAME=trixie" in out
    host = next(
        h
        for h in fleet.hosts(os="debian12", sshd=True, kind="container")
        if fleet.lab.hosts[h].pending
    )
    rc, out, err = fleet.run(host, "apt list --upgradable")
    assert rc == 0
    assert err.strip() == (
        "WARNING: apt does not have a stable CLI interface. Use with caution in scripts."
    )
    lines = out.splitlines()
    assert lines[0] == "Listing..."
    assert lines[1:] and all(APT_LIST_RE.match(ln) for ln in lines[1:])
    assert any("-security " in ln for ln in lines[1:]) or any(
        "-security," in ln or "-security " in ln for ln in lines
    )


def test_openssh_client_strict_host_keys(fleet: FleetHarness) -> None:
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")
    host = fleet.hosts(os="ubuntu2404", sshd=True)[0]
    res = _ssh_cmd(fleet, host, "LANG=C apt list --upgradable 2>/dev/null; echo rc=$?")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Listing...\n") and res.stdout.rstrip().endswith("rc=0")
    res = _ssh_cmd(fleet, host, "/usr/lib/update-notifier/apt-check")
    assert res.returncode == 0 and re.fullmatch(r"\d+;\d+", res.stderr)


def test_changed_host_key_refused_by_both_clients(fleet: FleetHarness) -> None:
    host = "pve2"
    fleet.control("set_faults", {"changed_host_keys": [host]})
    assert _wait(lambda: _port_open(fleet.port(host)))
    with pytest.raises(paramiko.BadHostKeyException):
        fleet.client(host)
    if shutil.which("ssh"):
        res = _ssh_cmd(fleet, host, "true")
        assert res.returncode == 255
        assert (
            "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr
            or "Host key verification failed" in res.stderr
        )
    fleet.control("clear_faults")
    assert _wait(lambda: fleet.svc._servers.get(host, (None, ""))[1] == "main")
    assert fleet.run(host, "hostname")[1] == "pve2\n"


def test_unreachable_host_closes_its_port(fleet: FleetHarness) -> None:
    host = fleet.hosts(kind="container", sshd=True)[3]
    port = fleet.port(host)
    fleet.control("set_faults", {"unreachable_hosts": [host]})
    assert not _port_open(port)
    with pytest.raises((paramiko.SSHException, OSError)):
        fleet.client(host, timeout=2)
    fleet.control("clear_faults")
    assert _wait(lambda: _port_open(port))


def test_auth_failure_and_no_password_auth(fleet: FleetHarness) -> None:
    host = fleet.hosts(kind="container", sshd=True)[4]
    fleet.control("set_faults", {"auth_fail_hosts": [host]})
    with pytest.raises(paramiko.AuthenticationException):
        fleet.client(host)
    if shutil.which("ssh"):
        res = _ssh_cmd(fleet, host, "true")
        assert res.returncode == 255 and "Permission denied (publickey)" in res.stderr
    fleet.control("clear_faults")
    c = paramiko.SSHClient()
    c.load_host_keys(fleet.known_hosts)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        c.connect(
            "127.0.0.1",
            port=fleet.port(host),
            username="root",
            password="root",
            allow_agent=False,
            look_for_keys=False,
            timeout=5,
        )
    c.close()


def test_dpkg_lock_fails_or_waits_like_apt(fleet: FleetHarness) -> None:
    host = next(
        h
        for h in fleet.hosts(os="debian12", sshd=True, kind="container")
        if fleet.lab.hosts[h].pending and not fleet.lab.hosts[h].held
    )
    fleet.control("set_faults", {"dpkg_locked_hosts": {host: 2}})
    pid = fleet.lab.hosts[host].lock_pid
    rc, out, err = fleet.run(host, "apt-get -y dist-upgrade")
    assert rc == 100 and out == ""
    assert err == (
        f"E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process "
        f"{pid} (apt-get)\nE: Unable to acquire the dpkg frontend lock "
        "(/var/lib/dpkg/lock-frontend), is another process using it?\n"
    )
    rc, out, err = fleet.run(host, "apt-get update")
    assert rc == 100 and "E: Unable to lock directory /var/lib/apt/lists/" in err
    t0 = time.monotonic()
    rc, out, err = fleet.run(
        host,
        "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=30 -y "
        "-o Dpkg::Options::=--force-confold dist-upgrade",
    )
    assert rc == 0, err
    assert time.monotonic() - t0 >= 1.0
    assert out.startswith("Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend")
    assert not fleet.lab.hosts[host].pending


def test_dist_upgrade_on_node_sets_reboot_required_then_reboot(fleet: FleetHarness) -> None:
    node = next(
        n for n in ("pve1", "pve2", "pve4") if "proxmox-kernel-6.14" in fleet.lab.hosts[n].pending
    )
    rc, out, _ = fleet.run(node, "apt-get -s upgrade")
    assert "The following packages have been kept back:\n  proxmox-kernel-6.14" in out
    rc, out, _ = fleet.run(node, "apt-get -s dist-upgrade")
    assert re.search(r"^Inst proxmox-kernel-6\.14\.11-4-pve-signed \(6\.14\.11-4 ", out, re.M)
    assert re.search(
        r"^\d+ upgraded, 1 newly installed, 0 to remove and \d+ not upgraded\.$", out, re.M
    )
    rc, out, err = fleet.run(
        node,
        "DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold dist-upgrade",
    )
    assert rc == 0, err
    assert "Setting up proxmox-kernel-6.14.11-4-pve-signed (6.14.11-4) ..." in out
    rc, out, _ = fleet.run(
        node, "test -f /run/reboot-required && cat /run/reboot-required.pkgs; needrestart -b"
    )
    assert "proxmox-kernel-6.14.11-4-pve-signed\n" in out
    assert "NEEDRESTART-KSTA: 3" in out and "NEEDRESTART-KEXP: 6.14.11-4-pve" in out
    boot_id = fleet.run(node, "cat /proc/sys/kernel/random/boot_id")[1]
    c = fleet.client(node)
    _, stdout, _ = c.exec_command("reboot", timeout=10)
    assert stdout.channel.recv_exit_status() == -1  # the connection drops, no exit status
    c.close()
    assert _wait(lambda: not fleet.lab.node(node).online)  # type: ignore[union-attr]
    assert _wait(lambda: fleet.lab.node(node).online and _port_open(fleet.port(node)))  # type: ignore[union-attr]
    rc, out, _ = fleet.run(
        node,
        "uname -r; test -e /run/reboot-required || echo clear; cat /proc/sys/kernel/random/boot_id",
    )
    assert out.startswith("6.14.11-4-pve\nclear\n") and boot_id not in out


def test_pct_exec_reaches_container_without_sshd(fleet: FleetHarness) -> None:
    st = next(
        fleet.lab.hosts[h]
        for h in fleet.hosts(sshd=False)
        if getattr(fleet.lab.guest(fleet.lab.hosts[h].vmid), "status", None) == "running"
    )
    assert st.name not in {s.name for s in fleet.svc.specs.values() if s.port}
    rc, out, _ = fleet.run(st.node, f"pct exec {st.vmid} -- cat /etc/hostname")
    assert rc == 0 and out == f"{st.name}\n"
    rc, out, _ = fleet.run(st.node, f"pct exec {st.vmid} -- sh -c 'hostname && nosuch'")
    assert rc == 127 and out == f"{st.name}\n"
    rc, _, err = fleet.run(st.node, "pct exec 99999 -- true")
    assert rc == 255
    assert err == f"Configuration file 'nodes/{st.node}/lxc/99999.conf' does not exist\n"
    stopped = next(g for g in fleet.lab.guests if g.type == "lxc" and g.status == "stopped")
    rc, _, err = fleet.run(stopped.node, f"pct exec {stopped.vmid} -- true")
    assert rc == 255 and err == f"CT {stopped.vmid} not running\n"
    rc, out, _ = fleet.run(st.node, "pct list")
    assert out.splitlines()[0].split() == ["VMID", "Status", "Lock", "Name"]


def test_alpine_apk(fleet: FleetHarness) -> None:
    host = next(h for h in fleet.hosts(os="alpine320", sshd=True) if fleet.lab.hosts[h].pending)
    rc, out, _ = fleet.run(
        host, "cat /etc/os-release; apk update >/dev/null 2>&1 && apk version -l '<'"
    )
    assert rc == 0 and "ID=alpine" in out
    ver = out[out.index("Installed:") :].splitlines()
    assert re.fullmatch(r"Installed:\s+Available:", ver[0])
    assert all(re.fullmatch(r"\S+-\S+-r\d+\s+< \S+ ", ln) for ln in ver[1:]) and ver[1:]
    rc, out, _ = fleet.run(host, "apk list -u | wc -l; apk upgrade")
    assert rc == 0 and out.rstrip().endswith("packages") and "Upgrading" in out
    rc, out, _ = fleet.run(host, "apk version -l '<' | tail -n +2 | wc -l; systemctl is-active x")
    assert rc == 127 and out == "0\n"


def test_shell_subset_and_unknown_commands(fleet: FleetHarness) -> None:
    host = fleet.hosts(os="debian13", sshd=True, kind="container")[0]
    rc, out, err = fleet.run(host, "nosuch; echo $?; sh -c 'nosuch' 2>/dev/null || echo d=$?")
    assert rc == 0 and out == "127\nd=127\n" and err == "bash: line 1: nosuch: command not found\n"
    _, out, _ = fleet.run(
        host,
        "sudo LANG=C id -u && [ -f /etc/os-release ] && "
        'command -v apt-get >/dev/null && echo ok; false || echo "b $HOME"',
    )
    assert out == "0\nok\nb /root\n"
    _rc, out, _ = fleet.run(host, "systemctl is-active ssh; systemctl is-active nosuch; echo $?")
    assert out == "active\ninactive\n3\n"


def test_failing_hanging_and_broken_upgrades(fleet: FleetHarness) -> None:
    cands = [
        h
        for h in fleet.hosts(os="debian12", sshd=True, kind="container")
        if fleet.lab.hosts[h].pending and not fleet.lab.hosts[h].held
    ]
    fail, hang, broken = cands[1], cands[2], cands[3]
    fleet.control(
        "set_faults",
        {
            "failing_upgrade_hosts": [fail],
            "hanging_commands": {hang: "dist-upgrade"},
            "broken_after_upgrade_hosts": [broken],
        },
    )
    rc, out, err = fleet.run(fail, "apt-get -y dist-upgrade")
    assert rc == 100 and "Errors were encountered while processing:" in out
    assert err.endswith("E: Sub-process /usr/bin/dpkg returned an error code (1)\n")
    rc, out, _ = fleet.run(fail, "dpkg -l | grep -c '^iF'")
    assert out == "1\n"
    c = fleet.client(hang)
    _, stdout, _ = c.exec_command("apt-get -y dist-upgrade", timeout=1)
    with pytest.raises(TimeoutError):
        stdout.read()
    c.close()
    assert fleet.run(hang, "echo alive")[1] == "alive\n"
    main = fleet.lab.hosts[broken].main_service
    assert fleet.run(broken, f"systemctl is-active {main}")[0] == 0
    assert fleet.run(broken, "apt-get -y dist-upgrade")[0] == 0
    assert fleet.run(broken, f"systemctl is-active {main}") == (3, "failed\n", "")


def test_apt_mark_and_the_hold_around_a_failing_node_upgrade(fleet: FleetHarness) -> None:
    """apt-mark prints like apt's DoSelection (unchanged first, unknown names an error that does
    not stop the others); the patch flow's hold command keeps the failed upgrade's exit status,
    leaves the held package at its version and unholds exactly what it held."""
    from labops.patching.plan import upgrade_command

    node = "pve2"
    pending = [
        {"name": "pve-manager", "from": "9.0.10", "version": "9.0.11", "pve": True},
        {"name": "pve-qemu-kvm", "from": "10.0.2-4", "version": "10.1.2-1", "pve": True},
        {"name": "lxc-pve", "from": "6.0.5-1", "version": "6.0.5-2", "pve": True},
    ]
    fleet.control("set_pending", {"host": node, "packages": pending, "held": ["lxc-pve"]})
    assert fleet.run(node, "apt-mark hold lxc-pve nosuch pve-manager") == (
        100,
        "lxc-pve was already set on hold.\npve-manager set on hold.\n",
        "E: Unable to locate package nosuch\n",
    )
    assert fleet.run(node, "apt-mark unhold pve-manager pve-qemu-kvm") == (
        0,
        "pve-qemu-kvm was already not on hold.\nCanceled hold on pve-manager.\n",
        "",
    )
    # holding fails: nothing is upgraded, the failure is the command's status
    rc, out, err = fleet.run(node, upgrade_command("node", "apt", None, 0, hold=["nosuch"]))
    assert rc == 100 and "Reading package lists" not in out
    assert err == "E: Unable to locate package nosuch\nE: No packages found\n" * 2
    # the upgrade fails: its status is kept, the hold is undone, the operator's hold stays
    fleet.control("set_faults", {"failing_upgrade_hosts": [node]})
    rc, out, _ = fleet.run(node, upgrade_command("node", "apt", None, 0, hold=["pve-qemu-kvm"]))
    assert rc == 100 and "Errors were encountered while processing:" in out
    assert out.startswith("pve-qemu-kvm set on hold.\n")
    assert "The following packages have been kept back:\n  lxc-pve pve-qemu-kvm\n" in out
    assert out.endswith("Canceled hold on pve-qemu-kvm.\n")
    assert fleet.run(node, "apt-mark showhold")[1] == "lxc-pve\n"
    st = fleet.control("state", {"host": node})
    assert sorted(st["pending"]) == ["lxc-pve", "pve-qemu-kvm"]
    assert st["packages"]["pve-qemu-kvm"][0] == "10.0.2-4"


def test_control_set_pending_and_state(fleet: FleetHarness) -> None:
    host = fleet.hosts(os="debian13", sshd=True, kind="container")[1]
    fleet.control(
        "set_pending",
        {
            "host": host,
            "packages": [
                {"name": "openssl", "version": "3.5.9-1~deb13u1", "security": True},
                {"name": "tzdata", "version": "2026a-0+deb13u1"},
            ],
            "held": ["tzdata"],
        },
    )
    _, out, _ = fleet.run(host, "apt list --upgradable 2>/dev/null; apt-mark showhold")
    assert "openssl/stable-security 3.5.9-1~deb13u1 amd64 [upgradable from: " in out
    assert out.rstrip().endswith("tzdata")
    _rc, out, _ = fleet.run(host, "apt-get -s dist-upgrade | grep -E 'kept back|upgraded,'")
    assert "1 upgraded, 0 newly installed, 0 to remove and 1 not upgraded." in out
    state = fleet.control("state", {"host": host})
    assert (
        state["os"] == "debian13"
        and state["listening"]
        and sorted(state["pending"]) == ["openssl", "tzdata"]
    )


def test_product_check_command_parses_on_every_os(fleet: FleetHarness) -> None:
    """labops' own one-round-trip check command, parsed by labops' parsers, on each OS kind."""
    from datetime import date

    from labops.patching.hostcheck import CHECK_COMMAND, parse_check_output

    picks = {"pve1"}
    for os_name in ("debian12", "debian13", "ubuntu2404", "alpine320", "debian10"):
        picks.add(
            next(
                h
                for h in fleet.hosts(os=os_name, sshd=True)
                if fleet.lab.hosts[h].pending or os_name == "debian10"
            )
        )
    for host in sorted(picks):
        st = fleet.lab.hosts[host]
        _, out, _ = fleet.run(host, CHECK_COMMAND)
        facts = parse_check_output(out, date(2026, 11, 27))
        assert facts.problem is None, (host, facts.problem)
        assert {p.name for p in facts.pending} == set(st.pending), host
        assert facts.held == sorted(st.held), host
        assert facts.reboot_required == st.reboot_required, host
        assert (facts.needrestart is not None) == st.needrestart, host
        # Alpine 3.20 reached its end of life in April 2026, so it counts as EOL here too.
        assert facts.eol == (st.os in ("debian10", "alpine320")), host
        if st.family == "debian" and any(p["security"] for p in st.pending.values()):
            assert facts.security_count > 0, host


def test_labops_ssh_runner_against_the_fleet(fleet: FleetHarness) -> None:
    """The product's SshRunner meets the fleet's keys, errors and `pct exec` as on a real lab."""
    from labops.config.systems import SshSystem
    from labops.errors import AuthFailed, HostKeyRejected, Unreachable
    from labops.ssh import SshRunner, SshTarget

    runner = SshRunner(
        SshSystem(
            **fleet.svc.config_fragment()["systems"]["ssh"],
            connect_timeout_s=3,
            command_timeout_s=10,
        )
    )

    def target(host: str) -> SshTarget:
        return SshTarget(name=host, address="127.0.0.1", port=fleet.port(host))

    hidden = next(
        fleet.lab.hosts[h]
        for h in fleet.hosts(sshd=False)
        if getattr(fleet.lab.guest(fleet.lab.hosts[h].vmid), "status", None) == "running"
    )
    with runner.session(target(hidden.node)) as s:  # type: ignore[arg-type]
        assert s.run("hostname").stdout == f"{hidden.node}\n"
        r = s.run_in_guest(vmid=hidden.vmid, command="cat /etc/hostname; exit 3")  # type: ignore[arg-type]
        assert (r.exit_status, r.stdout) == (3, f"{hidden.name}\n")
    a, b, c = fleet.hosts(kind="container", sshd=True)[5:8]
    fleet.control(
        "set_faults", {"changed_host_keys": [a], "auth_fail_hosts": [b], "unreachable_hosts": [c]}
    )
    assert _wait(lambda: _port_open(fleet.port(a)))
    with pytest.raises(HostKeyRejected):
        runner.run(target(a), "true")
    with pytest.raises(AuthFailed):
        runner.run(target(b), "true")
    with pytest.raises(Unreachable):
        runner.run(target(c), "true")
    runner.close()


def test_container_stopped_and_started_through_the_lab(fleet: FleetHarness) -> None:
    """What the PVE API does to a guest shows on the fleet: stopped closes the port, started
    boots the host (reboot-required cleared)."""
    name = fleet.hosts(os="ubuntu2404", sshd=True)[0]
    guest = fleet.lab.guest(fleet.lab.hosts[name].vmid)  # type: ignore[arg-type]
    assert guest is not None
    fleet.control(
        "patch_state", {"host": name, "set": {"reboot_required": True, "reboot_pkgs": ["libc6"]}}
    )
    assert fleet.run(name, "cat /run/reboot-required")[1] == "*** System restart required ***\n"
    with fleet.lab.lock:
        guest.status = "stopped"
    assert _wait(lambda: not _port_open(fleet.port(name)))
    with fleet.lab.lock:
        guest.status = "running"
    assert _wait(lambda: _port_open(fleet.port(name)))
    assert fleet.run(name, "test -e /run/reboot-required; echo $?")[1] == "1\n"


def test_background_jobs_pids_kill_and_read(fleet: FleetHarness) -> None:
    """`list &` runs as a process of the host that outlives its SSH session: `$!` names it,
    `kill -0` sees it until it ends, `read` takes a line from a file; a reboot ends it."""
    host = fleet.hosts(os="debian12", sshd=True, kind="container")[2]
    rc, out, _ = fleet.run(
        host,
        "sh -c 'echo $$ > /run/job.pid; sleep 60; echo done > /tmp/x' > /dev/null 2>&1 & echo $!",
    )
    pid = out.strip()
    assert rc == 0 and pid.isdigit()
    assert fleet.run(host, 'read p < /run/job.pid && kill -0 "$p" && echo $p') == (0, out, "")
    assert fleet.run(host, "cat /tmp/x") == (1, "", "cat: /tmp/x: No such file or directory\n")
    fleet.control("reboot", {"host": host})
    assert _wait(lambda: _port_open(fleet.port(host)) and host not in fleet.svc._down_until)
    assert fleet.run(host, f"kill -0 {pid}") == (1, "", f"bash: kill: ({pid}) - No such process\n")
    rc, _, err = fleet.run(host, "read p < /run/job.pid")  # /run is empty after the boot
    assert rc == 1 and "No such file or directory" in err
    rc, out, _ = fleet.run(host, "sh -c 'echo late > /tmp/y' & sleep 0.5; cat /tmp/y; read a b")
    assert out == "late\n" and rc == 1  # read at end of input: status 1


def test_systemd_run_transient_unit(fleet: FleetHarness) -> None:
    """A transient unit is active while its command runs; the name cannot be taken twice; with
    --collect it is gone afterwards, without it a failed unit stays failed."""
    node = "pve2"
    rc, _, err = fleet.run(node, "systemd-run --unit=demo --collect sleep 30")
    assert rc == 0 and re.fullmatch(
        r"Running as unit: demo\.service; invocation ID: [0-9a-f]{32}\n", err
    )
    assert fleet.run(node, "systemctl is-active demo") == (0, "active\n", "")
    assert fleet.run(node, "systemd-run -u demo --quiet true") == (
        1,
        "",
        "Failed to start transient service unit: Unit demo.service was already loaded or has "
        "a fragment file.\n",
    )
    assert fleet.run(node, "systemd-run --unit=bad --quiet false") == (0, "", "")
    assert _wait(lambda: fleet.run(node, "systemctl is-active bad")[1] == "failed\n")
    assert fleet.run(node, "test -d /run/systemd/system && echo systemd")[1] == "systemd\n"
    alpine = fleet.hosts(os="alpine320", sshd=True)[0]
    assert fleet.run(alpine, "test -d /run/systemd/system || echo openrc")[1] == "openrc\n"


def test_detached_upgrade_started_polled_and_adopted(fleet: FleetHarness) -> None:
    """The product's detached upgrade: started as a transient unit on a node (nohup on Alpine),
    polled until it ends with its status and log; a second start meets the running one."""
    from labops.patching.detached import BUSY, POLL_COMMAND, parse_poll, start_command
    from labops.patching.plan import upgrade_command

    node = "pve4"
    fleet.control("set_pending", {"host": node, "packages": ["pve-manager", "libc6"]})
    fleet.control("set_faults", {"command_delay_s": 0})
    upgrade = upgrade_command("node", "apt", None, 10)
    # a unit that runs until it is killed: a second start meets it, whatever the machine's speed
    assert fleet.run(node, start_command("run-1", "sleep 3600", systemd=True)) == (0, "", "")
    first = parse_poll(fleet.run(node, POLL_COMMAND)[1])
    assert first.job == "run-1" and first.running and not first.finished
    rc, _, err = fleet.run(node, start_command("run-2", upgrade, systemd=True))
    assert (rc, err.strip()) == (1, BUSY)  # refused before it touched run-1's files
    again = parse_poll(fleet.run(node, POLL_COMMAND)[1])
    assert again.job == "run-1" and again.running
    # systemd itself refuses a second unit of that name, the last line behind the guard
    rc, _, err = fleet.run(node, "systemd-run --unit=labops-upgrade --collect --quiet true")
    assert rc == 1 and "labops-upgrade.service was already loaded" in err
    assert fleet.run(node, 'read pid < /run/labops-upgrade.pid && kill "$pid"')[0] == 0
    assert _wait(lambda: fleet.run(node, "systemctl is-active labops-upgrade")[0] == 3, 60)
    assert fleet.run(node, start_command("run-3", upgrade, systemd=True)) == (0, "", "")
    assert _wait(lambda: parse_poll(fleet.run(node, POLL_COMMAND)[1]).finished, 60)
    done = parse_poll(fleet.run(node, POLL_COMMAND)[1])
    assert done.status == 0 and "Setting up pve-manager" in done.log_tail
    assert not fleet.control("state", {"host": node})["pending"]
    assert fleet.run(node, "systemctl is-active labops-upgrade")[0] == 3  # collected
    alpine = next(
        h
        for h in fleet.hosts(os="alpine320", sshd=True)
        if set(fleet.lab.hosts[h].pending) - set(fleet.lab.hosts[h].held)
    )
    assert fleet.run(alpine, start_command("run-4", "sleep 3600", systemd=False))[0] == 0
    assert _wait(lambda: parse_poll(fleet.run(alpine, POLL_COMMAND)[1]).running, 60)
    rc, _, err = fleet.run(alpine, start_command("run-5", "apk upgrade", systemd=False))
    assert (rc, err.strip()) == (1, BUSY)
    assert fleet.run(alpine, 'read pid < /run/labops-upgrade.pid && kill "$pid"')[0] == 0
    assert _wait(lambda: not parse_poll(fleet.run(alpine, POLL_COMMAND)[1]).running, 60)
    assert fleet.run(alpine, start_command("run-4", "apk upgrade", systemd=False))[0] == 0
    assert _wait(lambda: parse_poll(fleet.run(alpine, POLL_COMMAND)[1]).finished, 60)
    done = parse_poll(fleet.run(alpine, POLL_COMMAND)[1])
    assert done.status == 0 and done.job == "run-4" and "Upgrading" in done.log_tail
    st = fleet.control("state", {"host": alpine})
    assert set(st["pending"]) <= set(st["held"])  # what is pinned in the world file stays


def test_dist_upgrade_with_a_package_pinned_on_the_command_line(fleet: FleetHarness) -> None:
    """`apt-get -s dist-upgrade name=<installed>` (the dry run's stand-in for a hold) keeps that
    package and says so as apt does; an unknown version is an error."""
    from labops.patching.plan import decide_upgrade

    node = "pve1"
    pending = [
        {"name": "pve-manager", "from": "9.0.10", "version": "9.0.11", "pve": True},
        {"name": "pve-qemu-kvm", "from": "10.0.2-4", "version": "10.1.2-1", "pve": True},
    ]
    fleet.control("set_pending", {"host": node, "packages": pending, "held": []})
    sim = decide_upgrade("node", "apt", None, {"pve-qemu-kvm": "10.0.2-4"}).simulation()
    assert sim == "apt-get -s -o Debug::NoLocking=1 dist-upgrade pve-qemu-kvm=10.0.2-4"
    rc, out, _ = fleet.run(node, sim)
    assert (
        rc == 0
        and (
            "pve-qemu-kvm is already the newest version (10.0.2-4).\n"
            "pve-qemu-kvm set to manually installed.\nCalculating upgrade...\n"
        )
        in out
    )
    assert re.findall(r"^Inst (\S+)", out, re.M) == ["pve-manager"]
    assert "1 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n" in out
    rc, _, err = fleet.run(node, "apt-get -s dist-upgrade pve-qemu-kvm=9.9")
    assert rc == 100 and err == "E: Version '9.9' for 'pve-qemu-kvm' was not found\n"
    assert sorted(fleet.control("state", {"host": node})["pending"]) == [
        "pve-manager",
        "pve-qemu-kvm",
    ]


def test_links_listeners_and_unit_files_in_the_real_formats(fleet: FleetHarness) -> None:
    """What doc reconciliation's runbook checks read: ``ip -o link show`` (one line per link,
    ``\\`` joining), ``ss -ltn`` (header, IPv4 and IPv6 rows), ``systemctl cat`` and its error."""
    status, out, _ = fleet.run("pve2", "ip -o link show")
    assert status == 0
    names = [re.match(r"^\d+: ([^:@]+)", line).group(1) for line in out.splitlines()]  # type: ignore[union-attr]
    assert names == ["lo", "enp3s0", "vmbr0", "vmbr1"]
    assert all("\\    link/" in line for line in out.splitlines())
    status, out, _ = fleet.run("pve2", "ss -ltn")
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("State  Recv-Q Send-Q Local Address:Port")
    assert any(re.match(r"^LISTEN\s+0\s+4096\s+0\.0\.0\.0:8006\s", ln) for ln in lines)
    status, out, _ = fleet.run("pve2", "systemctl cat pveproxy.service")
    assert status == 0 and out.startswith("# /usr/lib/systemd/system/pveproxy.service\n[Unit]")
    status, _, err = fleet.run("pve2", "systemctl cat nope.service")
    assert (status, err) == (1, "No files found for nope.service.\n")
    assert fleet.run("pve2", "test -e /etc/network/interfaces")[0] == 0
    assert fleet.run("pve2", "test -e /etc/traefik/acme")[0] == 1
