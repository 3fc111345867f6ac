"""Patch apply's guard rails (issue 14) as pure decisions: the window asked before every step,
busy nodes, what an approval may still apply, the plan an operator judges (issue 22)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from labops.config.policies.patching import MaintenanceWindow
from labops.models.pve import PveTaskItem
from labops.patching import plan, windows
from labops.patching.cves import PackageCve
from labops.patching.detached import parse_poll, start_command
from labops.patching.packages import PendingUpdate
from labops.patching.report import HostCheck


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_window_guard_says_when_it_closed() -> None:
    """Asked before every step: open, then closed with the time it closed (the window's zone),
    including a window that runs past midnight."""
    paris = MaintenanceWindow(start="23:00", end="03:00", timezone="Europe/Paris")
    clock = FakeClock(datetime(2026, 11, 28, 22, 30, tzinfo=UTC))  # Sat 23:30 in Paris
    guard = windows.WindowGuard([paris], clock)
    assert guard.closed() == ""
    assert guard.end is not None and guard.end.isoformat() == "2026-11-29T03:00:00+01:00"
    clock.at += timedelta(hours=3)  # Sun 02:30: still the Saturday window
    assert guard.closed() == ""
    clock.at += timedelta(minutes=31)  # 03:01
    assert guard.closed() == "window closed at 03:00"
    never = windows.WindowGuard([paris], FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC)))
    assert never.closed() == "outside the maintenance window"
    two = [
        MaintenanceWindow(start="02:00", end="04:00"),
        MaintenanceWindow(start="03:00", end="05:00"),
    ]
    assert windows.open_until(two, datetime(2026, 11, 28, 3, 30, tzinfo=UTC)) == datetime(
        2026, 11, 28, 5, 0, tzinfo=UTC
    )


def test_node_busy_with_backup_restore_migration_or_a_locked_guest() -> None:
    def task(kind: str, running: bool = True, node: str = "pve1") -> PveTaskItem:
        end = None if running else 1
        upid = f"UPID:{node}:00000001:00000002:6650A1B2:{kind}:101:root@pam:"
        return PveTaskItem(upid=upid, node=node, type=kind, id="101", endtime=end, status=None)

    tasks = [
        task("vzdump"),
        task("vzstart"),
        task("qmigrate", running=False),
        task("vzdump", node="pve2"),
    ]
    guests = [
        plan.PveGuestInfo(vmid=101, name="web", node="pve1", lock="migrate"),
        plan.PveGuestInfo(vmid=102, name="db", node="pve2", lock="backup"),
        plan.PveGuestInfo(vmid=103, name="dns", node="pve1"),
    ]
    why = plan.node_busy("pve1", tasks, guests)
    assert why == [
        "backup running (vzdump 101, UPID:pve1:00000001:00000002:6650A1B2:vzdump:101:root@pam:)",
        "CT 101 (web) locked: migrate",
    ]
    assert plan.node_busy("pve1", [task("vzrestore"), task("hamigrate")], []) == [
        f"restore running (vzrestore 101, {task('vzrestore').upid})",
        f"HA migration running (hamigrate 101, {task('hamigrate').upid})",
    ]
    assert plan.node_busy("pve3", tasks, guests) == []


def test_window_guard_says_when_what_is_left_is_too_short() -> None:
    """A reboot may start only while the window leaves it the time it may take."""
    clock = FakeClock(datetime(2026, 11, 28, 2, 45, tzinfo=UTC))
    guard = windows.WindowGuard([MaintenanceWindow(start="01:00", end="03:00")], clock)
    assert guard.leaves(timedelta(minutes=15), "a reboot") == ""  # 02:45 + 15 min: just fits
    assert guard.leaves(timedelta(minutes=16), "a reboot") == (
        "window closes at 03:00, sooner than a reboot may take (16 min)"
    )
    clock.at += timedelta(minutes=20)
    assert guard.leaves(timedelta(0), "a reboot") == "window closed at 03:00"


def _row(host: str, kind: str, pending: dict[str, str], **kw: object) -> HostCheck:
    return HostCheck(
        host=host,
        kind=kind,  # type: ignore[arg-type]
        state="updates" if pending else "up-to-date",
        package_manager="apt",
        packages=[
            PendingUpdate(name=n, from_version="1", to_version=v, security=n.startswith("lib"))
            for n, v in pending.items()
        ],
        installed=dict.fromkeys(pending, "1"),
        **kw,  # type: ignore[arg-type]
    )


def test_approval_applies_only_what_the_plan_showed() -> None:
    shown = _row("web", "container", {"libc6": "2", "tzdata": "2", "curl": "2"})
    planned = plan.plan_host(shown, security_only=False)
    assert planned is not None
    same, change = plan.recheck_at_approval(planned, shown, shown)
    assert same == planned and change == ""
    now = _row("web", "container", {"libc6": "2", "tzdata": "3", "openssl": "2"})
    keep, change = plan.recheck_at_approval(planned, shown, now)
    assert keep is not None and keep.packages == ["libc6"] and keep.named
    assert change == (
        "new since the plan, not applied: openssl; other version than planned, not applied: "
        "tzdata; no longer pending: curl"
    )
    # a node's dist-upgrade holds what it must not add
    node_shown = _row("pve1", "node", {"pve-manager": "2"})
    node_plan = plan.plan_host(node_shown, security_only=False)
    assert node_plan is not None
    node_now = _row("pve1", "node", {"pve-manager": "2", "pve-qemu-kvm": "3"})
    kept, _ = plan.recheck_at_approval(node_plan, node_shown, node_now)
    assert kept is not None and kept.hold == ["pve-qemu-kvm"]
    up = kept.upgrade("apt", None)
    assert up.command(0).startswith("apt-mark hold pve-qemu-kvm && ")
    assert up.simulation().endswith("dist-upgrade pve-qemu-kvm=1")
    # nothing approved left, or the host cannot be checked: nothing is applied
    gone, why = plan.recheck_at_approval(planned, shown, _row("web", "container", {"zlib1g": "2"}))
    assert gone is None and why.endswith("nothing approved is left to apply")
    down = HostCheck(host="web", state="unreachable", detail="connection refused")
    assert plan.recheck_at_approval(planned, shown, down) == (
        None,
        "re-check at approval failed: unreachable: connection refused",
    )


def test_plan_table_and_summary_say_what_will_be_done() -> None:
    rows = [
        _row(
            "pve1", "node", {"pve-manager": "2", "libpve": "2"}, reboot_required=True, node="pve1"
        ),
        _row("web", "container", {"libc6": "2", "tzdata": "2"}, excluded=["nginx"], node="pve1"),
        _row("db", "container", {}, node="pve1"),
        HostCheck(host="off", state="skipped", detail="stopped"),
        HostCheck(host="lost", state="unreachable", detail="no route"),
        _row("sec", "container", {"tzdata": "2"}, node="pve1"),
    ]
    planned = [p for r in rows if (p := plan.plan_host(r, security_only=True))]
    rollout = plan.plan_rollout(planned, [], 1, 5, 2)
    guards = {"web": "snapshot", "pve1": "none"}
    table = plan.plan_table(rollout, rows, guards, security_only=True)
    by_host = {r["host"]: r for r in table}
    assert by_host["web"] == {
        "host": "web",
        "phase": "canary 1",
        "node": "pve1",
        "access": "ssh",
        "packages": "libc6 (security)",
        "security": "1",
        "cve/kev": "not checked: the CVE lookup did not run",
        "held/excluded": "nginx",
        "reboot expected": "no",
        "protection": "snapshot",
        "left out because": "",
    }
    assert by_host["pve1"]["phase"] == "node 1" and by_host["pve1"]["reboot expected"] == "yes"
    assert by_host["pve1"]["packages"] == "pve-manager, libpve (security)"
    assert {h: by_host[h]["left out because"] for h in ("db", "off", "lost", "sec")} == {
        "db": "up to date",
        "off": "stopped",
        "lost": "not checked: unreachable: no route",
        "sec": "no security updates (security only)",
    }
    end = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    text = plan.approval_summary(
        rollout, rows, guards, True, end, timedelta(minutes=20), "http://ui/artifacts/artifact/1"
    )
    assert text.splitlines()[0] == (
        "**Patch plan** (security updates only): 2 hosts (1 nodes), 3 packages, "
        "2 security updates, 1 reboots expected."
    )
    assert "- Hosts without a rollback point: 1 (pve1)" in text
    assert "the window closes at 04:00 (UTC); the plan needs about 20 min (2 steps)" in text
    assert "- Left out: 4 hosts" in text
    assert "[plan table](http://ui/artifacts/artifact/1)" in text
    assert plan.protection(planned[0], True, 3.0, 26) == "fresh backup (3 h old)"
    assert plan.protection(planned[0], True, 30.0, 26) == "none"


def _fix(package: str, cve: str, kev: bool = False) -> PackageCve:
    return PackageCve(package=package, to_version="2", cve=cve, advisory=f"DSA-{cve}", kev=kev)


def test_plan_table_counts_the_cves_of_the_planned_packages() -> None:
    """The cve/kev cell counts the CVEs (and the known-exploited ones) the planned packages fix;
    unknown stays "not checked" with why, never a count."""
    web = _row("web", "container", {"libc6": "2", "libssl3": "2", "tzdata": "2"}, node="pve1")
    web.cves = [
        _fix("libc6", "CVE-1"),
        _fix("libssl3", "CVE-2", kev=True),
        _fix("libssl3", "CVE-3"),
        _fix("libc6", "CVE-3"),  # one CVE fixed by two packages counts once
        _fix("tzdata", "CVE-4", kev=True),  # not a security update: out of a security-only plan
    ]
    clean = _row("clean", "container", {"libz": "2"}, node="pve1")
    lost = _row("alpine", "container", {"libcrypto3": "2"}, node="pve1")
    lost.cve_unchecked = "no OSV ecosystem for alpine ?"
    rows = [web, clean, lost]

    def cells(security_only: bool, no_lookup: str | None) -> dict[str, str]:
        planned = [p for r in rows if (p := plan.plan_host(r, security_only))]
        rollout = plan.plan_rollout(planned, [], 0, 5, 5)
        table = plan.plan_table(rollout, rows, {}, security_only, no_lookup)
        return {r["host"]: r["cve/kev"] for r in table}

    assert cells(False, None) == {
        "web": "4 CVEs, 2 KEV",
        "clean": "0 CVEs, 0 KEV",
        "alpine": "not checked: no OSV ecosystem for alpine ?",
    }
    assert cells(True, None)["web"] == "3 CVEs, 1 KEV"
    # the approval's summary counts the same: tzdata's CVE is not fixed by a security-only plan
    secure = plan.plan_rollout([p for r in rows if (p := plan.plan_host(r, True))], [], 0, 5, 5)
    text = plan.approval_summary(secure, rows, {}, True, None, timedelta(0))
    line = "- CVEs fixed by the plan: 3; known exploited (CVE-2) on web; CVEs unknown on 1 host(s)"
    assert line in text.splitlines()
    assert cells(False, "patching.cves not configured") == {
        "web": "not checked: patching.cves not configured",
        "clean": "not checked: patching.cves not configured",
        "alpine": "not checked: no OSV ecosystem for alpine ?",
    }
    web.cves = [_fix("libssl3", "CVE-2", kev=True)]
    assert cells(False, None)["web"] == "1 CVE, 1 KEV"


def test_an_approval_narrows_the_plan_shown_and_never_widens_it() -> None:
    """Excluded hosts and security only are cut from the plan shown (its steps as shown); a host
    the plan refused never comes back, a security-only plan is never widened to all updates."""
    rows = [
        _row("pve1", "node", {"pve-manager": "2", "libpve": "2"}, node="pve1"),
        _row("web", "container", {"libc6": "2", "tzdata": "2"}, node="pve1"),
        _row("db", "container", {"libpq5": "2"}, node="pve1"),
        _row("tz", "container", {"tzdata": "2"}, node="pve1"),
    ]
    planned = [p for r in rows if (p := plan.plan_host(r, security_only=False))]
    full = plan.plan_rollout(planned, [], 1, 1, 1)
    # the plan shown left db out (say a backup job refused it)
    shown = plan.RolloutPlan(steps=[s for s in full.steps if all(h.name != "db" for h in s.hosts)])
    assert [h.name for h in shown.hosts] == ["web", "tz", "pve1"]
    cut = plan.narrowed(shown, ["tz"], security_only=True)
    assert [(s.phase, s.index, [h.name for h in s.hosts]) for s in cut.steps] == [
        ("canary", 1, ["web"]),
        ("node", 1, ["pve1"]),
    ]
    assert cut.hosts[0].packages == ["libc6"]  # security only: tzdata left out
    assert cut.hosts[1].packages == ["pve-manager", "libpve"]  # a node keeps its dist-upgrade
    assert plan.narrowed(shown, [], security_only=True).hosts == cut.hosts  # tz: nothing left
    assert plan.narrowed(shown, ["nowhere"], security_only=False) == shown
    assert plan.widening(True, False).startswith("all updates (the plan showed security")
    assert plan.widening(True, True) == plan.widening(False, True) == ""
    assert plan.widening(False, False) == ""


def test_detached_poll_and_start_command() -> None:
    running = parse_poll(
        "@@labops:job\nrun-1\n@@labops:status\n@@labops:pid\n4242\n@@labops:alive\nyes\n"
        "@@labops:log\nUnpacking pve-manager ...\n@@labops:end\n"
    )
    assert running.running and not running.finished and not running.lost
    done = parse_poll(
        "@@labops:job\nrun-1\n@@labops:status\n100\n@@labops:pid\n4242\n@@labops:alive\n@@labops:end\n"
    )
    assert done.finished and done.status == 100
    lost = parse_poll(
        "@@labops:job\nrun-1\n@@labops:status\n@@labops:pid\n4242\n@@labops:alive\n@@labops:end\n"
    )
    assert lost.lost
    starting = parse_poll(
        "@@labops:job\nrun-1\n@@labops:status\n@@labops:pid\n@@labops:alive\n@@labops:end\n"
    )
    assert not starting.lost and not starting.finished  # started, the script not yet
    assert not parse_poll("@@labops:job\nrun-1\n").complete
    cmd = start_command("abc123", "apt-get -y dist-upgrade", systemd=True)
    assert cmd.endswith(
        "systemd-run --unit=labops-upgrade --collect --quiet sh /var/lib/labops/upgrade.sh"
    )
    assert start_command("abc", "x", systemd=False).endswith(
        "|| exit 1; nohup sh /var/lib/labops/upgrade.sh > /dev/null 2>&1 < /dev/null &"
    )
