"""PBS namespaces in the backups flow, on the sandbox: PVE's storage ``pbs-home`` writes to
namespace ``home`` of datastore store1, where the VMs have copies besides their root ones; the
verify job (root, no max-depth) reaches it, the prune job (root, max-depth 0) does not. The flow
reads PVE's storage configs, lists each storage's backups in its namespace, names every guest's
locations and finds the namespace no prune job covers; job configs or storage configs it cannot
read leave the coverage "could not check" (the run failed), never fine. Dry runs: nothing in the
lab changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labops.outcome import Outcome
from tests.backups.test_flow import config, report_of
from tests.fixtures.sandbox import SandboxHandle

# How the report names the two PBS storages: PVE's name, then the datastore and namespace
# (PVE's volume ids leave the namespace out: pbs-home:backup/vm/800/<time>).
ROOT, HOME = "pbs (store1)", "pbs-home (store1/home)"


def ns_config(sandbox: SandboxHandle, directory: Path) -> str:
    return config(sandbox, directory, scan_storages=["pbs-home"])


def newest_in(sandbox: SandboxHandle, **params: str) -> dict[int, int]:
    """Guest -> its newest snapshot's time, as PBS lists one namespace (``ns``)."""
    newest: dict[int, int] = {}
    for s in sandbox.pbs().admin.datastore("store1").snapshots.get(**params):
        if s["backup-type"] in ("ct", "vm"):
            vmid = int(s["backup-id"])
            newest[vmid] = max(newest.get(vmid, 0), int(s["backup-time"]))
    return newest


def run(sandbox: SandboxHandle, directory: Path) -> Any:
    from flows.backups import backups

    return report_of(backups(config=ns_config(sandbox, directory), dry_run=True, return_state=True))


def test_backups_are_read_in_their_namespace_and_its_job_coverage_is_audited(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    home_vmids = set(sandbox_clean.state()["services"]["pbs"]["seed"]["home_vmids"])
    home, root = newest_in(sandbox_clean, ns="home"), newest_in(sandbox_clean)
    assert set(home) == home_vmids and home_vmids <= set(root)

    report = run(sandbox_clean, tmp_path)
    rows = {r.vmid: r for r in report.guests}
    for vmid in home_vmids:  # in both namespaces: the newest of either is the last good one
        assert rows[vmid].locations == [ROOT, HOME], rows[vmid]
        assert rows[vmid].last_good == max(home[vmid], root[vmid])
        storage = "pbs-home" if home[vmid] > root[vmid] else "pbs"
        assert (rows[vmid].last_good_volid or "").startswith(f"{storage}:backup/vm/{vmid}/")
    container = next(r for r in report.guests if r.watched and r.vmid in root and r.vmid < 800)
    assert container.locations == [ROOT]
    table = {r["guest"].split()[0]: r for r in report.table()}
    assert table[str(min(home_vmids))]["locations"] == f"{ROOT}, {HOME}"

    coverage = {(n.kind, n.namespace): n for n in report.namespaces}
    assert set(coverage) == {("verify", ""), ("prune", ""), ("verify", "home"), ("prune", "home")}
    assert coverage["verify", "home"].jobs == ["v-daily"]  # the root, every level below
    assert coverage["prune", ""].jobs == ["p-daily"]
    assert coverage["prune", "home"].jobs == []  # the root only: max-depth 0
    assert coverage["prune", "home"].groups == len(home_vmids)  # listed with ns=home
    assert "PBS prune: no job covers namespace home (store1)" in report.gaps
    assert [g for g in report.gaps if "no job covers" in g] == [
        "PBS prune: no job covers namespace home (store1)"
    ]
    assert not [u for u in report.unchecked() if "coverage" in u]
    assert "## PBS namespaces" in report.markdown()


def test_unreadable_job_configs_leave_namespaces_unchecked(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    sandbox_clean.set_faults("pbs", extra={"job_config_unreadable": ["verify"]})
    report = run(sandbox_clean, tmp_path)

    verify = [n for n in report.namespaces if n.kind == "verify"]
    assert {n.namespace for n in verify} == {"", "home"}
    assert all(
        not n.ok and n.gap is None and "unable to parse" in (n.unknown or "") for n in verify
    )
    unchecked = [u for u in report.unchecked() if "coverage" in u]
    assert any(u.startswith("PBS verify coverage of namespace home (store1): ") for u in unchecked)
    # prune jobs were readable: its gap is still found; the run is failed, never clean
    assert "PBS prune: no job covers namespace home (store1)" in report.gaps
    assert report.outcome is Outcome.FAILED


def test_unreadable_storage_configs_are_could_not_check(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    sandbox_clean.set_faults("pve", extra={"storage_cfg_unreadable": True})
    report = run(sandbox_clean, tmp_path)

    assert [(n.kind, n.namespace, n.ok) for n in report.namespaces] == [
        ("verify", None, False),
        ("prune", None, False),
    ]
    unchecked = [u for u in report.unchecked() if "coverage" in u]
    assert len(unchecked) == 2 and all("PVE storage configs unreadable" in u for u in unchecked)
    assert not [g for g in report.gaps if "no job covers" in g]
    assert report.outcome is Outcome.FAILED
    # the backups themselves were still listed: each guest's storages, by PVE's name only
    home_vmid = min(sandbox_clean.state()["services"]["pbs"]["seed"]["home_vmids"])
    row = next(r for r in report.guests if r.vmid == home_vmid)
    assert row.locations == ["pbs", "pbs-home"]


def test_the_job_audit_sees_which_storage_each_job_writes_to(
    sandbox_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    """The seeded lab's second nightly job writes the VMs to pbs-home. With pbs-home as the
    storage whose backups count, the VMs are covered by it; the containers' jobs write to pbs
    only: each is a coverage gap (PVE's not-backed-up list does not see it, as it counts any
    job). With both storages counted, no guest is such a gap."""
    from flows.backups import backups

    jobs = sandbox_clean.pve().cluster.backup.get()
    home_job = [j for j in jobs if j["storage"] == "pbs-home"]
    home_vmids = set(sandbox_clean.state()["services"]["pbs"]["seed"]["home_vmids"])
    assert len(home_job) == 1 and home_job[0]["enabled"] == 1
    assert {int(v) for v in home_job[0]["vmid"].split(",")} == home_vmids

    both = run(sandbox_clean, tmp_path / "both")
    assert both.job_gaps == []

    only_home = report_of(
        backups(
            config=config(sandbox_clean, tmp_path / "home", storage="pbs-home"),
            dry_run=True,
            return_state=True,
        )
    )
    gaps = {int(g.split()[1]): g for g in only_home.job_gaps}
    in_no_job = {int(g.split()[1]) for g in only_home.not_in_job}
    watched = {r.vmid for r in only_home.guests if r.watched}
    assert not home_vmids & set(gaps)  # the pbs-home job covers the VMs
    assert set(gaps) == watched - home_vmids - in_no_job and gaps
    container = gaps[min(gaps)]
    assert "write where its backups do not count (pbs-home)" in container
    assert "(to pbs)" in container
    assert container in only_home.gaps
