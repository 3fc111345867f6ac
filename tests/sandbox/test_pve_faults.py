"""Each fault knob of the sandbox's PVE (and PBS) does what it says."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from tests.fixtures.sandbox import SandboxHandle, wait_task


@pytest.fixture
def sb(private_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """This module's own lab (it changes the lab); faults reset after each test."""
    try:
        yield private_sandbox
    finally:
        private_sandbox.reset_faults()


def test_error_rate_gives_500(sb: SandboxHandle) -> None:
    sb.set_faults("pve", error_rate=1.0)
    with pytest.raises(ResourceException) as exc:
        sb.pve().nodes.get()
    assert exc.value.status_code == 500
    sb.reset_faults()
    assert sb.pve().nodes.get()


def test_reset_rate_drops_connection(sb: SandboxHandle) -> None:
    sb.set_faults("pve", reset_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        sb.pve().nodes.get()


def test_latency(sb: SandboxHandle) -> None:
    pve = sb.pve()
    sb.set_faults("pve", latency_ms=300)
    t0 = time.monotonic()
    pve.version.get()
    assert time.monotonic() - t0 >= 0.3


def test_stall_times_out_client(sb: SandboxHandle) -> None:
    sb.set_faults("pve", stall_rate=1.0, stall_s=5)
    with pytest.raises(requests.exceptions.Timeout):
        sb.pve(timeout=0.5).version.get()


def test_stalled_scenario_hits_one_class(sb: SandboxHandle) -> None:
    sb.scenario("stalled")
    pve = sb.pve(timeout=0.5)
    assert pve.nodes.get()  # other calls answer
    with pytest.raises(requests.exceptions.Timeout):
        pve.nodes("pve1").storage("pbs").content.get(content="backup")


def test_offline_node(sb: SandboxHandle) -> None:
    sb.set_faults("pve", extra={"offline_nodes": ["pve3"]})
    pve = sb.pve()
    nodes = {n["node"]: n["status"] for n in pve.nodes.get()}
    assert nodes["pve3"] == "offline" and nodes["pve1"] == "online"
    pbs_ct = next(g for g in pve.cluster.resources.get(type="vm") if g["vmid"] == 150)
    assert pbs_ct["status"] == "unknown"
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve3").lxc.get()
    assert exc.value.status_code == 595
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sb.node_port("pve3")), timeout=2).close()
    sb.reset_faults()
    socket.create_connection(("127.0.0.1", sb.node_port("pve3")), timeout=2).close()
    assert {n["status"] for n in pve.nodes.get()} == {"online"}


def test_failing_vmids(sb: SandboxHandle) -> None:
    sb.set_faults("pve", extra={"failing_vmids": [106]})
    pve = sb.pve()
    upid = pve.nodes("pve1").vzdump.post(vmid="103,106", storage="pbs")
    status = Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    assert status["exitstatus"] == "job errors"
    log = Tasks.decode_log(pve.nodes("pve1").tasks(upid).log.get(limit=0))
    assert "ERROR: Backup of VM 106 failed - " in log
    assert "INFO: Finished Backup of VM 103" in log
    assert log.endswith("TASK ERROR: job errors")


def test_locked_vmids(sb: SandboxHandle) -> None:
    sb.set_faults("pve", extra={"locked_vmids": {"103": "snapshot"}})
    pve = sb.pve()
    assert pve.nodes("pve1").lxc(103).status.current.get()["lock"] == "snapshot"
    upid = pve.nodes("pve1").vzdump.post(vmid="103", storage="pbs")
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "job errors"
    log = Tasks.decode_log(pve.nodes("pve1").tasks(upid).log.get(limit=0))
    assert "CT 103 is locked (snapshot)" in log


def test_scenarios_apply(sb: SandboxHandle) -> None:
    for name in ("flaky", "node-offline", "backup-failures", "locked-guest", "default"):
        result = sb.scenario(name)
        assert result["scenario"] == name
    state = sb.state()
    assert state["scenario"] == "default"
    assert state["lab"]["guests"] >= 57
    assert state["seed"]["orphan_vmid"] == 199


def test_pbs_faults_and_verify_failure(sb: SandboxHandle) -> None:
    sb.set_faults("pbs", error_rate=1.0)
    with pytest.raises(ResourceException) as exc:
        sb.pbs().admin.datastore.get()
    assert exc.value.status_code == 500
    sb.reset_faults()
    sb.set_faults("pbs", extra={"verify_fail": ["ct/104"]})
    pbs = sb.pbs()
    upid = pbs.admin.datastore("store1").verify.post(
        **{"backup-type": "ct", "backup-id": "104", "ignore-verified": 0}
    )
    status = wait_task(pbs, "localhost", upid)
    assert status["exitstatus"] == "verification failed - please check the log for details"
    snaps = pbs.admin.datastore("store1").snapshots.get(**{"backup-type": "ct", "backup-id": "104"})
    assert all(s["verification"]["state"] == "failed" for s in snaps)


def test_pbs_offline(sb: SandboxHandle) -> None:
    sb.set_faults("pbs", extra={"offline": True})
    with pytest.raises(requests.exceptions.ConnectionError):
        sb.pbs().admin.datastore.get()
    pve = sb.pve()
    storages = {s["storage"]: s for s in pve.nodes("pve1").storage.get()}
    assert storages["pbs"]["active"] == 0
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").storage("pbs").content.get()
    assert exc.value.status_code == 500 and exc.value.content.startswith("pbs: ")
    upid = pve.nodes("pve1").vzdump.post(vmid="103", storage="pbs")
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "job errors"
    sb.reset_faults()
    assert sb.pbs().admin.datastore.get()


def test_warning_vmids(sb: SandboxHandle) -> None:
    sb.set_faults("pve", extra={"warning_vmids": [103]})
    pve = sb.pve()
    upid = pve.nodes("pve1").vzdump.post(vmid="100,103", storage="local")
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "WARNINGS: 1"
    log = Tasks.decode_log(pve.nodes("pve1").tasks(upid).log.get(limit=0))
    assert log.endswith("TASK WARNINGS: 1")
