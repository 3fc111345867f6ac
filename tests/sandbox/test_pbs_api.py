"""The sandbox's Proxmox Backup Server API through proxmoxer (service="PBS")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.fixtures.sandbox import SandboxHandle, wait_task


@pytest.fixture
def sb(private_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """This module's own lab (it changes the lab); faults reset after each test."""
    try:
        yield private_sandbox
    finally:
        private_sandbox.reset_faults()


def test_snapshot_listing(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    assert pbs.admin.datastore.get()[0]["store"] == "store1"
    snaps = pbs.admin.datastore("store1").snapshots.get()
    assert len(snaps) > 400
    for s in snaps[:50]:
        assert {
            "backup-type",
            "backup-id",
            "backup-time",
            "files",
            "size",
            "owner",
            "protected",
        } <= set(s)
        assert isinstance(s["protected"], bool)
        if "verification" in s:
            assert s["verification"]["state"] in ("ok", "failed")
    assert any("verification" not in s for s in snaps)
    seed = sb.state()["seed"]
    orphan = [s for s in snaps if s["backup-id"] == str(seed["orphan_vmid"])]
    assert orphan
    assert sum(s["protected"] for s in snaps) >= 1
    newest: dict[str, int] = {}
    for s in snaps:
        newest[s["backup-id"]] = max(newest.get(s["backup-id"], 0), s["backup-time"])
    for vmid in seed["stale_vmids"]:
        assert time.time() - newest[str(vmid)] > 9.5 * 86400


def test_wrong_token(sb: SandboxHandle) -> None:
    bad = ProxmoxAPI(
        "127.0.0.1",
        port=sb.port("pbs"),
        service="PBS",
        user="root@pam",
        token_name="labops",
        token_value="wrong",
        verify_ssl=str(sb.ca_path),
    )
    with pytest.raises(ResourceException) as exc:
        bad.admin.datastore.get()
    assert exc.value.status_code == 401
    assert exc.value.errors == {"errors": b"authentication failed"}


def test_status_usage_gc_verify_jobs(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    st = pbs.admin.datastore("store1").status.get(verbose=1)
    assert st["total"] > st["used"] > 0 and "counts" in st
    usage = pbs("status/datastore-usage").get()[0]
    assert usage["store"] == "store1" and len(usage["history"]) == 30
    gc = pbs.admin.datastore("store1").gc.get()
    assert 0 < time.time() - gc["last-run-endtime"] < 2 * 86400
    jobs = pbs.admin.verify.get()
    assert time.time() - jobs[0]["last-run-endtime"] > 8 * 86400


def test_gc_task_and_second_start(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    upid = pbs.admin.datastore("store1").gc.post()
    assert len(upid.split(":")) == 10
    with pytest.raises(ResourceException) as exc:
        pbs.admin.datastore("store1").gc.post()
    assert exc.value.errors == {"errors": b"garbage collection already running"}
    assert wait_task(pbs, "localhost", upid)["exitstatus"] == "OK"
    assert pbs.admin.datastore("store1").gc.get()["upid"] == upid


def test_prune_dry_run_and_protected(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    ds = pbs.admin.datastore("store1")
    result = ds.prune.post(
        **{"backup-type": "ct", "backup-id": "100", "dry-run": 1, "keep-last": 2}
    )
    assert result == sorted(result, key=lambda r: r["backup-time"])
    kept = [r for r in result if r["keep"]]
    assert len([r for r in kept if not r["protected"]]) == 2
    assert any(r["protected"] and r["keep"] for r in result)
    protected = next(r for r in result if r["protected"])
    with pytest.raises(ResourceException):
        ds.snapshots.delete(
            **{"backup-type": "ct", "backup-id": "100", "backup-time": protected["backup-time"]}
        )
    upid = ds("prune-datastore").post(**{"dry-run": 1, "keep-daily": 7})
    assert wait_task(pbs, "localhost", upid)["exitstatus"] == "OK"


def test_verify_snapshot_and_delete(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    ds = pbs.admin.datastore("store1")
    snap = ds.snapshots.get(**{"backup-type": "ct", "backup-id": "101"})[-1]
    key = {"backup-type": "ct", "backup-id": "101", "backup-time": snap["backup-time"]}
    upid = ds.verify.post(**key)
    assert ":verify_snapshot:" in upid
    assert wait_task(pbs, "localhost", upid)["exitstatus"] == "OK"
    after = next(
        s
        for s in ds.snapshots.get(**{"backup-type": "ct", "backup-id": "101"})
        if s["backup-time"] == snap["backup-time"]
    )
    assert after["verification"] == {"state": "ok", "upid": upid}
    # Shared state: what PVE lists on storage "pbs" is what PBS holds.
    pve_vols = sb.pve().nodes("pve1").storage("pbs").content.get(vmid=101)
    assert any(
        v["ctime"] == snap["backup-time"] and v["verification"]["upid"] == upid for v in pve_vols
    )
    ds.snapshots.delete(**key)
    assert snap["backup-time"] not in {
        s["backup-time"] for s in ds.snapshots.get(**{"backup-type": "ct", "backup-id": "101"})
    }


def test_ticket_auth(sb: SandboxHandle) -> None:
    pbs = ProxmoxAPI(
        "127.0.0.1",
        port=sb.port("pbs"),
        service="PBS",
        user="root@pam",
        password=sb.secret("pbs_password"),
        verify_ssl=str(sb.ca_path),
    )
    assert pbs.admin.datastore.get()[0]["store"] == "store1"
    upid = pbs.admin.datastore("store1").verify.post(**{"backup-type": "vm", "backup-id": "800"})
    assert wait_task(pbs, "localhost", upid)["status"] == "stopped"


def test_prune_jobs_and_task_history(sb: SandboxHandle) -> None:
    pbs = sb.pbs()
    jobs = pbs.admin.prune.get(store="store1")
    assert jobs and jobs[0]["keep-daily"] == 7
    gc_tasks = pbs.nodes("localhost").tasks.get(typefilter="garbage_collection")
    assert gc_tasks and gc_tasks[-1]["status"] == "OK"
    verify_upid = pbs.admin.verify.get()[0]["last-run-upid"]
    status = pbs.nodes("localhost").tasks(verify_upid).status.get()
    assert status["status"] == "stopped" and status["type"] == "verificationjob"


def test_namespaces_list_apart_and_pve_names_them_in_its_storage_config(sb: SandboxHandle) -> None:
    """Namespace ``home`` holds the VMs' copies of PVE storage ``pbs-home``: PBS lists a
    namespace only when asked with ``ns`` (the root without it), and PVE's ``GET /storage``
    gives each PBS storage its datastore and namespace; the jobs carry ``ns``/``max-depth``."""
    pbs = sb.pbs()
    home_vmids = sb.state()["services"]["pbs"]["seed"]["home_vmids"]
    ds = pbs.admin.datastore("store1")
    home = ds.snapshots.get(ns="home")
    assert home and {int(s["backup-id"]) for s in home} == set(home_vmids)
    root_times = {s["backup-time"] for s in ds.snapshots.get(**{"backup-type": "vm"})}
    assert not root_times & {s["backup-time"] for s in home}
    assert {g["backup-id"] for g in ds.groups.get(ns="home")} == {str(v) for v in home_vmids}
    with pytest.raises(ResourceException) as err:
        ds.snapshots.get(ns="nowhere")
    assert err.value.status_code == 400
    (prune,) = pbs.admin.prune.get(store="store1")
    assert prune["max-depth"] == 0 and "ns" not in prune
    assert "max-depth" not in pbs.admin.verify.get(store="store1")[0]

    storages = {s["storage"]: s for s in sb.pve().storage.get(type="pbs")}
    assert set(storages) == {"pbs", "pbs-home"}
    assert storages["pbs-home"]["namespace"] == "home" and "namespace" not in storages["pbs"]
    assert storages["pbs-home"]["datastore"] == "store1" and "password" not in storages["pbs-home"]
    content = sb.pve().nodes("pve2").storage("pbs-home").content.get(content="backup")
    assert {v["volid"].split("/")[0] for v in content} == {"pbs-home:backup"}
    assert len(content) == len(home)

    sb.set_faults("pbs", extra={"job_config_unreadable": ["prune"]})
    with pytest.raises(ResourceException) as err:
        pbs.admin.prune.get(store="store1")
    assert err.value.status_code == 400 and pbs.admin.verify.get(store="store1")
