"""Backup selection, policy and decisions, pure, from captured sandbox data (tests/data/backups)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labops.backups.audit import (
    find_new_backup,
    guest_rows,
    job_check,
    orphans,
    size_problem,
    upid_start_time,
    verification_status,
)
from labops.backups.limits import lanes
from labops.backups.models import BackupCopy, BackupGuest, BackupOutcome, GuestPlan, PlanAction
from labops.backups.plan import exclusion_reason, last_good, parse_tags, plan_backups, policy_for
from labops.backups.report import GuestStatus
from labops.backups.retention import prune_marks, retention_dry_run
from labops.backups.vzdump import classify_exitstatus, is_lock_error
from labops.config.loader import parse_config
from labops.config.policies.backups import BackupPolicy, Retention
from labops.errors import ConfigError
from labops.models.pve import PveBackupVolume, PveGuest

DATA = Path(__file__).parents[1] / "data" / "backups"
DAY = 86400.0
Lab = tuple[float, list[BackupGuest], list[BackupCopy]]


def load(name: str) -> tuple[float, list[dict[str, object]]]:
    raw = json.loads((DATA / name).read_text())
    return float(raw["captured_at"]), raw["data"]


@pytest.fixture(scope="module")
def lab() -> Lab:
    now, resources = load("cluster_resources.json")
    _, content = load("storage_content_pbs.json")
    guests = [BackupGuest.from_pve(PveGuest.model_validate(r)) for r in resources]
    copies = [BackupCopy.from_volume(PveBackupVolume.model_validate(c)) for c in content]
    return now, guests, [c for c in copies if c is not None]


def by(plans: list[GuestPlan], vmid: int) -> GuestPlan:
    return next(p for p in plans if p.guest.vmid == vmid)


def test_tags_parse_every_separator() -> None:
    assert parse_tags("infra;rpo-7d") == ["infra", "rpo-7d"]
    assert parse_tags("A, b c") == ["a", "b", "c"]
    assert parse_tags(None) == []


def test_default_policy_plan_of_the_seeded_lab(lab: Lab) -> None:
    now, guests, copies = lab
    plans = plan_backups(guests, copies, BackupPolicy(), "pbs", now)
    # The seed's two stale guests are due; everyone with last night's backup is fresh.
    assert {p.guest.vmid for p in plans if p.action is PlanAction.BACKUP} == {205, 211}
    assert "past the 24h tier's refresh point" in by(plans, 205).reason
    assert by(plans, 101).action is PlanAction.SKIP
    assert "inside the 24h tier" in by(plans, 101).reason
    # nobackup tag, template
    assert by(plans, 116).action is PlanAction.EXCLUDED
    assert "nobackup" in by(plans, 116).reason
    assert by(plans, 9000).action is PlanAction.TEMPLATE
    # rpo-7d tag places the guest in the 7d tier
    gp = by(plans, 105).policy
    assert gp is not None and gp.tier == "7d"


def test_offline_node_guests_are_not_backed_up(lab: Lab) -> None:
    now, guests, copies = lab
    # Two days later every 24h guest is due; pve2's ones cannot be reached.
    plans = plan_backups(guests, copies, BackupPolicy(), "pbs", now + 2 * DAY, ["pve2"])
    assert by(plans, 101).action is PlanAction.NODE_OFFLINE
    assert by(plans, 101).reason.startswith("not backed up: node pve2 offline")
    assert by(plans, 102).action is PlanAction.BACKUP


def test_selection_filters_and_overrides(lab: Lab) -> None:
    _, guests, _ = lab
    policy = BackupPolicy.model_validate(
        {
            "selection": {"pools": ["infra"], "exclude_vmids": [102]},
            "guests": {101: {"tier": "7d", "storage": "local"}, 100: {"exclude": True}},
        }
    )
    g = {x.vmid: x for x in guests}
    assert exclusion_reason(g[205], policy.selection, policy) == "pool apps not in selection.pools"
    assert "exclude_vmids" in (exclusion_reason(g[102], policy.selection, policy) or "")
    assert "guests.100.exclude" in (exclusion_reason(g[100], policy.selection, policy) or "")
    assert exclusion_reason(g[101], policy.selection, policy) is None
    gp = policy_for(g[101], policy, "pbs")
    assert (gp.tier, gp.storage, gp.mode) == ("7d", "local", "snapshot")
    nodes = BackupPolicy.model_validate({"selection": {"nodes": ["pve4"], "tags": ["app"]}})
    assert exclusion_reason(g[216], nodes.selection, nodes) is None
    assert exclusion_reason(g[102], nodes.selection, nodes) == "no tag of selection.tags"
    assert "selection.vmids" in (
        exclusion_reason(
            g[101], BackupPolicy.model_validate({"selection": {"vmids": [100]}}).selection, policy
        )
        or ""
    )


def test_failed_verification_is_not_a_good_backup() -> None:
    ok = BackupCopy(volid="pbs:a", storage="pbs", vmid=1, ctime=100, size=10, verify_state="ok")
    bad = BackupCopy(
        volid="pbs:b", storage="pbs", vmid=1, ctime=200, size=10, verify_state="failed"
    )
    empty = BackupCopy(volid="pbs:c", storage="pbs", vmid=1, ctime=300, size=0)
    assert last_good([ok, bad, empty]) == ok
    guest = BackupGuest(vmid=1, name="x", node="pve1", type="lxc")
    plans = plan_backups([guest], [bad], BackupPolicy(), "pbs", 250)
    assert plans[0].action is PlanAction.BACKUP
    assert plans[0].reason == "no good backup yet (1 failed verification)"


def test_lanes_keep_each_node_busy(lab: Lab) -> None:
    now, guests, copies = lab
    plans = [
        p
        for p in plan_backups(guests, copies, BackupPolicy(), "pbs", now + 2 * DAY)
        if p.action is PlanAction.BACKUP
    ]
    one = lanes(plans, per_node=1)
    assert sorted(len(lane) for lane in one) == sorted(
        [sum(p.guest.node == n for p in plans) for n in {p.guest.node for p in plans}]
    )
    assert all(len({p.guest.node for p in lane}) == 1 for lane in one)
    two = lanes(plans, per_node=2)
    pve2 = [lane for lane in two if lane[0].guest.node == "pve2"]
    # balanced by size (LPT): the 12 GiB VM gets a lane of its own, the containers share one
    assert len(pve2) == 2 and [p.guest.vmid for p in pve2[0]] == [800]
    assert sorted(p.guest.vmid for p in pve2[1]) == [101, 205, 211]
    # the first lanes cover every node, so every node starts at once
    nodes = {p.guest.node for p in plans}
    assert {lane[0].guest.node for lane in two[: len(nodes)]} == nodes


def test_prune_marks_follow_pbs_rules() -> None:
    # 10 nightly backups plus a second one on the newest day, one protected.
    copies = [
        BackupCopy(volid=f"v{i}", storage="pbs", vmid=1, ctime=1_700_000_000 + i * DAY, size=1)
        for i in range(10)
    ]
    copies.append(
        BackupCopy(volid="v9b", storage="pbs", vmid=1, ctime=1_700_000_000 + 9 * DAY + 60, size=1)
    )
    copies[0] = copies[0].model_copy(update={"protected": True})
    marks = prune_marks(copies, Retention(keep_daily=3, keep_weekly=None, keep_monthly=None))
    assert marks["v9b"] == "keep" and marks["v9"] == "remove"  # newest of the day wins
    assert [marks[f"v{i}"] for i in (8, 7)] == ["keep", "keep"]
    assert marks["v0"] == "protected"
    assert sum(m == "remove" for m in marks.values()) == 7
    assert set(
        prune_marks(
            copies, Retention(keep_daily=None, keep_weekly=None, keep_monthly=None)
        ).values()
    ) == {"keep"}
    last2 = prune_marks(
        copies, Retention(keep_last=2, keep_daily=1, keep_weekly=None, keep_monthly=None)
    )
    assert [last2["v9b"], last2["v9"], last2["v8"], last2["v7"]] == [
        "keep",
        "keep",
        "keep",
        "remove",
    ]


def test_retention_report_and_orphans(lab: Lab) -> None:
    _, guests, copies = lab
    groups = retention_dry_run(copies, Retention())
    g100 = next(g for g in groups if g.vmid == 100)
    assert g100.protected == 1 and g100.keep + g100.remove + g100.protected == 10
    found = orphans(copies, [g.vmid for g in guests])
    assert [(o.vmid, o.count) for o in found] == [(199, 2)]


def test_verification_state(lab: Lab) -> None:
    now, _, copies = lab
    groups: dict[int, list[BackupCopy]] = {}
    for c in copies:
        groups.setdefault(c.vmid, []).append(c)
    shown, problem = verification_status(groups[100], now, 30 * DAY)
    assert shown.startswith("FAILED") and problem and "verification failed" in problem
    shown, problem = verification_status(groups[101], now, 30 * DAY)
    assert shown.startswith("ok") and problem is None
    shown, problem = verification_status(groups[101], now, 3600)
    assert "too old" in shown and problem and problem.startswith("last verified")
    fresh = [BackupCopy(volid="pbs:x", storage="pbs", vmid=5, ctime=now, size=1, format="pbs-ct")]
    assert verification_status(fresh, now, DAY) == ("never", "never verified")
    local = [
        BackupCopy(volid="local:x", storage="local", vmid=5, ctime=now, size=1, format="tar.zst")
    ]
    assert verification_status(local, now, DAY) == ("n/a (not on PBS)", None)


def test_upids_and_exit_statuses() -> None:
    pve = "UPID:pve1:0032A1F2:0B5E27C1:6650A1B2:vzdump:101:root@pam!prefect:"
    pbs = "UPID:pbs:000004D2:00000ABC:00000001:66500123:verificationjob:store1\\x3av:root@pam:"
    assert upid_start_time(pve) == 0x6650A1B2
    assert upid_start_time(pbs) == 0x66500123
    assert upid_start_time("OK") is None
    assert [classify_exitstatus(s) for s in ("OK", "WARNINGS: 2", "job errors")] == [
        "ok",
        "warning",
        "error",
    ]
    assert is_lock_error("Backup of VM 105 failed - CT 105 is locked (snapshot)")
    assert not is_lock_error("command 'proxmox-backup-client backup' failed: exit code 255")


def test_new_backup_must_exist_with_a_plausible_size() -> None:
    prev = BackupCopy(volid="a", storage="pbs", vmid=1, ctime=100, size=1_000_000_000)
    new = BackupCopy(volid="b", storage="pbs", vmid=1, ctime=500, size=50_000_000)
    assert find_new_backup([prev, new], 1, "pbs", started=498) == new
    assert find_new_backup([prev], 1, "pbs", started=498) is None
    assert "under 10%" in (size_problem(new, prev, 1024, 0.1) or "")
    assert size_problem(new, prev, 1024, 0.01) is None
    assert "below" in (size_problem(new, None, 10**9, 0.1) or "")


def test_rows_after_a_run(lab: Lab) -> None:
    now, guests, copies = lab
    policy = BackupPolicy()
    plans = plan_backups(guests, copies, policy, "pbs", now)
    new = BackupCopy(
        volid="pbs:backup/ct/205/new",
        storage="pbs",
        vmid=205,
        ctime=now + 5,
        size=900 * 2**20,
        format="pbs-ct",
    )
    outcomes = {
        205: BackupOutcome(
            vmid=205, status="ok", started=now + 1, ended=now + 9, exitstatus="OK", upid="UPID:x"
        ),
        211: BackupOutcome(vmid=211, status="failed", reason="exit code 255"),
    }
    rows = {
        r.vmid: r
        for r in guest_rows(plans, outcomes, [*copies, new], policy, now + 10, dry_run=False)
    }
    assert rows[205].status is GuestStatus.BACKED_UP and not rows[205].stale
    assert rows[205].last_good_volid == new.volid
    assert rows[211].status is GuestStatus.FAILED and rows[211].stale
    assert rows[101].status is GuestStatus.FRESH
    dry = {r.vmid: r for r in guest_rows(plans, {}, copies, policy, now, dry_run=True)}
    assert dry[205].status is GuestStatus.WOULD_BACK_UP and dry[205].stale


def test_guests_whose_storage_could_not_be_listed_are_unknown_not_stale(lab: Lab) -> None:
    """A storage that does not answer hides its guests' backups: those rows are "could not
    check (why, since when)", never stale, never fine; the first failed run is remembered."""
    from labops.backups.audit import unreadable_storages
    from labops.backups.report import BackupReport
    from labops.outcome import Checked, UnknownSince

    now, guests, _ = lab
    policy = BackupPolicy()
    plans = plan_backups(guests, [], policy, "pbs", now)  # nothing listed
    problems = [("storage pbs", "proxmox: connection refused after 4 tries")]
    unreadable = unreadable_storages(problems, ["pbs"])
    assert unreadable == {"pbs": "proxmox: connection refused after 4 tries"}
    assert unreadable_storages([("cluster", "no node online")], ["pbs", "nfs"]).keys() == {
        "pbs",
        "nfs",
    }
    book = UnknownSince()
    for run, at in enumerate((now, now + DAY)):
        report = BackupReport(
            guests=guest_rows(plans, {}, [], policy, at, dry_run=False, unreadable=unreadable)
        )
        book = report.date_unknown(book)
        watched = [r for r in report.guests if r.watched]
        assert watched and all(r.check is Checked.UNKNOWN for r in watched)
        assert not report.stale and not any(
            "no good backup" in p for r in watched for p in r.problems
        )
        row = report.table()[[r.vmid for r in report.guests].index(watched[0].vmid)]
        assert row["check"] == "unknown" and row["severity"] == "warning"
        assert row["could not check"].startswith("error: storage pbs could not be listed")
        first = watched[0].unknown
        assert first is not None and first.since.timestamp() == now  # the first failed run
        assert "could not be checked" in report.headline() and "## Could not check" in (
            report.markdown()
        )
        unknown_vmids = {str(r.vmid) for r in watched}  # no series for them, never a 0
        assert not {m.labels.get("vmid") for m in report.metrics()} & unknown_vmids, run
    excluded = [r for r in report.guests if not r.watched]
    assert all(r.check is None and r.unknown is None for r in excluded)


def test_job_checks() -> None:
    assert job_check("gc", 1000.0, "OK", 8 * DAY, 1000.0 + DAY).ok
    too_old = job_check("verify", 1000.0, "OK", 8 * DAY, 1000.0 + 9 * DAY)
    assert not too_old.ok
    assert too_old.detail == "TOO OLD: last run 9d ago, limit 8d (last result OK)"
    assert not job_check("gc", 1000.0, "TASK ERROR", 8 * DAY, 1001.0).ok
    unknown = job_check("prune", None, None, 2 * DAY, 1.0, "no prune job configured")
    assert not unknown.ok and unknown.detail == "no prune job configured"


def test_policy_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"backups": {"tiers": {"24h": {"rpo": "soon"}}}})
    assert "backups.tiers.24h.rpo" in str(err.value) and "duration" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"backups": {"tier_tags": {"gold": "1h"}}})
    assert "tier_tags.gold" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"backups": {"per_node_limit": 0}})
    assert "backups.per_node_limit" in str(err.value)
    policy = parse_config(
        {"backups": {"tiers": {"1h": {"rpo": "1h"}}, "default_tier": "1h", "tier_tags": {}}}
    ).backups
    assert policy.tiers["1h"].rpo == 3600 and policy.tiers["1h"].refresh_after_s == 3240


@pytest.mark.parametrize("name", ["vzdump-failed", "vzdump-locked", "vzdump-ok"])
def test_vzdump_logs(name: str) -> None:
    from labops.backups.vzdump import vzdump_failure

    case = json.loads((DATA / f"{name}.json").read_text())
    reason = vzdump_failure(case["log"], case["vmid"])
    expected = {
        "vzdump-failed": "command '/usr/bin/proxmox-backup-client backup' failed: exit code 255",
        "vzdump-locked": f"CT {case['vmid']} is locked (snapshot)",
        "vzdump-ok": None,
    }[name]
    assert reason == expected
    assert classify_exitstatus(case["exitstatus"]) == ("ok" if expected is None else "error")
    assert is_lock_error(reason or "") == (name == "vzdump-locked")
    job_error = ["ERROR: storage 'pbs' is not online"]
    assert vzdump_failure(job_error, 1) == "storage 'pbs' is not online"
