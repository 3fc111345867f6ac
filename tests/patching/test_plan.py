"""Pure decisions of the patch flow: targets, window, rollout, stop rule, rows, commands."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from labops.config.inventory import Host
from labops.config.policies.patching import Exclusions, MaintenanceWindow, PatchPolicy
from labops.patching import plan, windows
from labops.patching.hostcheck import HostFacts
from labops.patching.needrestart import NeedRestart
from labops.patching.osrelease import OsRelease
from labops.patching.packages import PendingUpdate, valid_package_name

NODES = [
    plan.PveNodeInfo(name="pve1"),
    plan.PveNodeInfo(name="pve2"),
    plan.PveNodeInfo(name="pve3", online=False),
]
GUESTS = [
    plan.PveGuestInfo(vmid=100, name="dns", node="pve1", tags=["infra"]),
    plan.PveGuestInfo(vmid=101, name="web", node="pve2"),
    plan.PveGuestInfo(vmid=102, name="db", node="pve2", status="stopped"),
    plan.PveGuestInfo(vmid=103, name="nosshd", node="pve1"),
    plan.PveGuestInfo(vmid=104, name="keep", node="pve1", tags=["nopatch"]),
    plan.PveGuestInfo(vmid=105, name="off", node="pve3"),
    plan.PveGuestInfo(vmid=800, name="vm", node="pve2", type="qemu"),
    plan.PveGuestInfo(vmid=9000, name="tpl", node="pve1", type="qemu", template=True),
]
HOSTS = [
    Host(name="pve1", kind="node", address="10.0.0.1"),
    Host(name="pve2", kind="node", address="10.0.0.2"),
    Host(name="dns", kind="container", vmid=100, address="10.0.1.100", port=2200),
    Host(name="web-renamed", kind="container", vmid=101, address="10.0.1.101"),
    Host(name="db", kind="container", vmid=102, address="10.0.1.102"),
    Host(name="nosshd", kind="container", vmid=103, access="pct"),
    Host(name="vps", kind="host", address="203.0.113.5"),
]


def test_select_targets() -> None:
    sel = plan.select_targets(NODES, GUESTS, HOSTS, Exclusions(tags=["nopatch"]), "ssh")
    names = {t.name: t for t in sel.targets}
    assert set(names) == {"pve1", "pve2", "dns", "web-renamed", "nosshd", "vps", "vm"}
    assert names["vm"].access == "agent"  # no SSH address: through its QEMU guest agent
    assert names["dns"].port == 2200 and names["web-renamed"].vmid == 101  # matched by vmid
    assert names["nosshd"].access == "pct" and names["nosshd"].node == "pve1"
    why = {s.name: s.reason for s in sel.skipped}
    assert why == {
        "pve3": "node offline",
        "db": "stopped",
        "keep": "excluded by tag nopatch",
        "off": "node pve3 offline",
    }
    assert "tpl" not in why  # templates are neither patched nor reported


def test_select_start_check_stop_and_exclusions() -> None:
    sel = plan.select_targets(
        NODES, GUESTS, HOSTS, Exclusions(vmids=[100], hosts=["vps"]), "pct", "start-check-stop"
    )
    assert [t.name for t in sel.to_start] == ["db"]
    assert "db" in {t.name for t in sel.targets}
    why = {s.name: s.reason for s in sel.skipped}
    assert why["dns"] == "excluded by vmid 100" and why["vps"] == "excluded by name"
    # unknown containers go through their node when the default access is pct
    assert next(t for t in sel.targets if t.name == "keep").access == "pct"


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        ("2026-11-28T22:30:00", True),  # Sat 23:30 in Paris
        ("2026-11-29T01:30:00", True),  # Sun 02:30 in Paris: the Saturday window, past midnight
        ("2026-11-29T02:30:00", False),  # Sun 03:30: closed
        ("2026-11-27T22:30:00", False),  # Fri 23:30: not a window day
    ],
)
def test_window_timezone_and_midnight(utc: str, expected: bool) -> None:
    w = MaintenanceWindow(days=["sat"], start="23:00", end="03:00", timezone="Europe/Paris")
    now = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert windows.window_open(w, now) is expected


def test_next_opening() -> None:
    w = MaintenanceWindow(days=["sun"], start="02:00", end="04:00", timezone="UTC")
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # a Friday
    assert windows.next_opening([w], now) == datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match="start"):
        MaintenanceWindow(start="25:00")
    with pytest.raises(ValidationError, match="time zone"):
        MaintenanceWindow(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="canaries also excluded"):
        PatchPolicy(canaries=["a"], exclusions=Exclusions(hosts=["a"]))


def _ph(name: str, node: str, kind: str = "container") -> plan.PlanHost:
    return plan.PlanHost(name=name, kind=kind, node=node, packages=["x"])  # type: ignore[arg-type]


def test_rollout_canaries_batches_per_node_nodes_last() -> None:
    hosts = [_ph(f"c{i}", "pve1" if i % 2 else "pve2") for i in range(9)]
    hosts += [_ph("pve2", "pve2", "node"), _ph("pve1", "pve1", "node")]
    rollout = plan.plan_rollout(
        hosts, canaries=["c3"], canary_count=1, batch_size=4, per_node_parallel=2
    )
    phases = [(s.phase, [h.name for h in s.hosts]) for s in rollout.steps]
    assert phases[0] == ("canary", ["c3"])
    for phase, names in phases[1:-2]:
        assert phase == "batch" and len(names) <= 4
        nodes = [
            h.node for s in rollout.steps if [x.name for x in s.hosts] == names for h in s.hosts
        ]
        assert all(nodes.count(n) <= 2 for n in set(nodes))  # at most 2 per node at once
    assert phases[-2:] == [("node", ["pve1"]), ("node", ["pve2"])]  # one node at a time, last
    assert sorted(h.name for h in rollout.hosts) == sorted(h.name for h in hosts)


def test_stop_rule_like_max_fail_percentage() -> None:
    rule = plan.StopRule(max_failures=2, max_fail_ratio=0.25)
    assert rule.verdict(0, 5) is None
    assert rule.verdict(1, 4) is None  # 25% is not past 25%
    assert rule.verdict(2, 6) == "2/6 failed (limit 25%)"
    assert rule.verdict(3, 100) == "3 failures (limit 2)"
    assert rule.verdict(1, 1, canary_failed=True) == "a canary failed"


def test_snapshot_names_are_valid_pve_ids() -> None:
    name = plan.snapshot_name("1f2e3D4c-0000-1111-2222-333344445555")
    assert name.startswith("labops-patch-") and len(name) <= 40 and name[0].isalpha()
    assert plan.is_labops_snapshot(name) and not plan.is_labops_snapshot("pre-upgrade")


def test_leftovers() -> None:
    book = plan.SnapshotBook(
        records=[
            plan.SnapshotRecord(
                host="a",
                node="pve1",
                vmid=1,
                name="labops-patch-old",
                created=datetime.now(UTC),
                status="keep-until",
                delete_after=datetime.now(UTC),
            )
        ]
    )
    found = [
        ("a", 1, "labops-patch-old"),
        ("b", 2, "labops-patch-killed"),
        ("c", 3, "labops-patch-now"),
        ("d", 4, "manual"),
    ]
    assert plan.leftovers(found, book, "labops-patch-now") == ["b (2): labops-patch-killed"]
    assert [r.name for r in book.due(datetime.now(UTC))] == ["labops-patch-old"]


def _facts(**kw: object) -> HostFacts:
    base: dict[str, object] = {
        "os": OsRelease(id="debian", version_id="12"),
        "package_manager": "apt",
        "pending": [
            PendingUpdate(
                name="openssl",
                from_version="1",
                to_version="2",
                suites=["bookworm-security"],
                security=True,
            ),
            PendingUpdate(
                name="tzdata", from_version="1", to_version="2", suites=["bookworm"], security=False
            ),
        ],
    }
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


def test_check_rows() -> None:
    now = datetime.now(UTC)
    ct = plan.Target(name="web", kind="container", address="x", node="pve1", vmid=101)
    node = plan.Target(name="pve1", kind="node", address="y", node="pve1")
    kernel = NeedRestart(kernel_status=3, kernel_expected="6.14.11-4-pve")
    row = plan.check_row(ct, "ok", "", _facts(needrestart=kernel), now, ["tzdata"])
    assert row.state == "updates" and [p.name for p in row.packages] == ["openssl"]
    assert row.security == 1 and not row.reboot_required  # a container never reboots for a kernel
    nrow = plan.check_row(node, "ok", "", _facts(needrestart=kernel), now)
    assert nrow.reboot_required and nrow.reboot_packages == ["kernel 6.14.11-4-pve"]
    down = plan.check_row(ct, "unreachable", "refused", None, now)
    assert down.state == "unreachable" and not down.known and down.pending == 0
    broken = plan.check_row(ct, "ok", "", _facts(problem="apt list printed nothing"), now)
    assert broken.state == "error" and not broken.known
    clean = plan.check_row(ct, "ok", "", _facts(pending=[]), now)
    assert clean.state == "up-to-date"
    assert plan.plan_host(clean, False) is None
    assert plan.plan_host(row, True).packages == ["openssl"]  # type: ignore[union-attr]


def test_commands() -> None:
    node = plan.upgrade_command("node", "apt", ["openssl"], 60)
    assert node.endswith("dist-upgrade") and "--force-confold" in node
    assert "DPkg::Lock::Timeout=60" in node and "DEBIAN_FRONTEND=noninteractive" in node
    ct = plan.upgrade_command("container", "apt", ["openssl", "curl"], 60)
    assert ct.endswith("install --only-upgrade openssl curl")
    assert plan.upgrade_command("container", "apk", None, 0) == "apk upgrade"
    assert plan.services_command("apt", ["nginx", "cron"]) == (
        "systemctl is-active --quiet nginx cron"
    )


def test_apply_and_dry_run_come_from_one_decision() -> None:
    """The dry run simulates exactly what apply would run: the same verb and named packages
    (security only, exclusions), and a hold simulated by pinning the installed version instead
    of apt-mark (which writes)."""
    now = datetime.now(UTC)
    ct = plan.Target(name="web", kind="container", address="x", node="pve1", vmid=101)
    pending = [
        PendingUpdate(
            name="openssl", from_version="3.0.15-1", to_version="3.0.16-1", security=True
        ),
        PendingUpdate(name="tzdata", from_version="2025a-0", to_version="2025b-0", security=False),
        PendingUpdate(name="nginx", from_version="1.22-1", to_version="1.22-2", security=True),
    ]
    row = plan.check_row(ct, "ok", "", _facts(pending=pending), now, ["nginx"])
    ph = plan.plan_host(row, security_only=True)
    assert ph is not None and ph.packages == ["openssl"]
    up = ph.upgrade("apt", ph.packages)
    assert up.command(60).endswith(" install --only-upgrade openssl")
    assert up.simulation() == "apt-get -s -o Debug::NoLocking=1 install --only-upgrade openssl"
    # a node: dist-upgrade with the excluded package held; the dry run pins it instead
    node = plan.Target(name="pve1", kind="node", address="y", node="pve1")
    nrow = plan.check_row(node, "ok", "", _facts(pending=pending), now, ["nginx"])
    nph = plan.plan_host(nrow, security_only=True)
    assert nph is not None and nph.hold == ["nginx"]
    nup = nph.upgrade("apt", None)
    assert nup.command(60).startswith("apt-mark hold nginx && ")
    assert nup.simulation() == "apt-get -s -o Debug::NoLocking=1 dist-upgrade nginx=1.22-1"
    assert "apt-mark" not in nup.simulation()
    # apk: the named list, simulated with -s
    assert plan.decide_upgrade("container", "apk", ["curl"]).simulation() == "apk upgrade -s curl"


HOSTILE = [
    "foo;reboot",
    "$(reboot)",
    "`id`",
    "-oAPT::Get::Trivial-Only=1",
    "Upper",
    "a",
    "x y",
    "pkg\nrm",
    "naïve",
]


def test_hostile_package_names_are_refused_and_never_planned() -> None:
    """Package names from a host's output are used only when they fit the package-name grammar;
    the others are reported on the host (quoted) and never reach a command."""
    now = datetime.now(UTC)
    ct = plan.Target(name="web", kind="container", address="x", node="pve1", vmid=101)
    pending = [_upd(n) for n in [*HOSTILE, "libc6", "g++-12", "libstdc++6", "python3.11"]]
    pending.append(PendingUpdate(name="curl", from_version="1;reboot", to_version="2"))
    row = plan.check_row(ct, "ok", "", _facts(pending=pending, held=["$(x)"]), now)
    assert [p.name for p in row.packages] == ["libc6", "g++-12", "libstdc++6", "python3.11"]
    assert row.refused == [
        *(repr(n) for n in HOSTILE),
        "'curl' (version)",
        "'$(x)'",
    ]
    assert row.held == []
    ph = plan.plan_host(row, security_only=False)
    assert ph is not None
    cmd = ph.upgrade("apt", ph.packages).command(0)
    assert cmd.endswith("install --only-upgrade libc6 g++-12 libstdc++6 python3.11")
    # apk's grammar (underscores, a few capitals) is its own
    assert valid_package_name("apk", "py3-setuptools_scm") and valid_package_name("apk", "R")
    assert not valid_package_name("apt", "py3-setuptools_scm")
    assert not valid_package_name("apk", "-rf") and not valid_package_name("apk", "a;b")


def test_config_values_reaching_a_shell_are_quoted() -> None:
    assert plan.services_command("apt", ["nginx", "x; reboot"]) == (
        "systemctl is-active --quiet nginx 'x; reboot'"
    )
    assert plan.services_command("apk", ["$(reboot)"]) == "rc-service '$(reboot)' status"
    with pytest.raises(ValidationError, match="package-name grammar"):
        Exclusions(packages=["ok", "bad;name"])


def _upd(name: str) -> PendingUpdate:
    return PendingUpdate(name=name, from_version="1", to_version="2", suites=["stable"])


def test_excluded_packages_held_around_a_node_dist_upgrade() -> None:
    """A node with excluded packages pending holds exactly those not already held by the
    operator, for the dist-upgrade only; its plan says what stays back."""
    now = datetime.now(UTC)
    node = plan.Target(name="pve1", kind="node", address="y", node="pve1")
    pending = [_upd(n) for n in ("pve-manager", "pve-qemu-kvm", "lxc-pve", "zfsutils-linux")]
    facts = _facts(pending=pending, held=["lxc-pve", "nginx"])
    excluded = ["pve-qemu-kvm", "lxc-pve", "ceph-common"]  # ceph-common is not pending
    row = plan.check_row(node, "ok", "", facts, now, excluded)
    assert row.excluded == ["lxc-pve", "pve-qemu-kvm"]
    assert [p.name for p in row.packages] == ["pve-manager", "zfsutils-linux"]
    ph = plan.plan_host(row, security_only=False)
    assert ph is not None and ph.packages == ["pve-manager", "zfsutils-linux"]
    assert ph.held_back == ["lxc-pve", "pve-qemu-kvm"]
    assert ph.hold == ["pve-qemu-kvm"]  # the operator's hold on lxc-pve is left alone
    rollout = plan.plan_rollout([ph], [], 0, 5, 2)
    assert rollout.describe() == "node 1: pve1 (2 pkgs; held back: lxc-pve, pve-qemu-kvm)"

    cmd = plan.upgrade_command("node", "apt", ph.packages, 60, hold=ph.hold)
    upgrade = plan.upgrade_command("node", "apt", ph.packages, 60)
    assert upgrade.endswith(" dist-upgrade")  # a node always gets dist-upgrade
    assert cmd == (
        f"apt-mark hold pve-qemu-kvm && {upgrade}; labops_rc=$?; "
        "apt-mark unhold pve-qemu-kvm; exit $labops_rc"
    )
    assert plan.upgrade_holds("node", "apt", ph.packages, ph.hold) == ["pve-qemu-kvm"]
    # a full dist-upgrade elsewhere holds too; a named upgrade leaves them out instead
    assert plan.upgrade_command("container", "apt", None, 0, hold=["a", "b"]).startswith(
        "apt-mark hold a b && "
    )
    named = plan.upgrade_command("container", "apt", ["openssl"], 0, hold=["a"])
    assert named.endswith("install --only-upgrade openssl") and "apt-mark" not in named
    assert plan.upgrade_holds("container", "apt", ["openssl"], ["a"]) == []
    # apk: no undoable hold; the named list is upgraded, never everything
    assert plan.upgrade_command("container", "apk", ["curl"], 0, hold=["zlib"]) == (
        "apk upgrade curl"
    )
    assert plan.upgrade_holds("container", "apk", None, ["zlib"]) == []
    with pytest.raises(ValueError, match="held back: zlib"):
        plan.upgrade_command("container", "apk", None, 0, hold=["zlib"])
    # nothing excluded pending: the plain dist-upgrade, nothing held back
    clean = plan.plan_host(plan.check_row(node, "ok", "", _facts(pending=pending), now), False)
    assert clean is not None and clean.hold == [] and clean.held_back == []


def test_eol_flag_uses_the_date() -> None:
    os = OsRelease(id="alpine", version_id="3.20.3")
    assert os.is_eol(date(2026, 4, 2)) and not os.is_eol(date(2026, 3, 31))


@pytest.mark.parametrize(
    ("patched", "rolled_back", "status"),
    [(True, False, "keep-until"), (False, True, "rolled-back"), (False, False, "kept")],
)
def test_a_snapshot_is_booked_rolled_back_only_when_the_host_went_back_to_it(
    patched: bool, rolled_back: bool, status: str
) -> None:
    """A guest whose upgrade still ran at the timeout (or whose rollback failed) keeps its
    snapshot as ``kept``: the book used to call every unpatched host's snapshot rolled back."""
    assert plan.settled_status(patched, rolled_back) == status
