"""Each fault knob of the sandbox's PVE (and PBS) does what it says."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from tests.fixtures.sandbox import SandboxHandle, wait_task


def test_error_rate_gives_500(sandbox_clean: SandboxHandle) -> None:
    sandbox_clean.set_faults("pve", error_rate=1.0)
    with pytest.raises(ResourceException) as exc:
        sandbox_clean.pve().nodes.get()
    assert exc.value.status_code == 500
    sandbox_clean.reset_faults()
    assert sandbox_clean.pve().nodes.get()


def test_reset_rate_drops_connection(sandbox_clean: SandboxHandle) -> None:
    sandbox_clean.set_faults("pve", reset_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        sandbox_clean.pve().nodes.get()


def test_latency(sandbox_clean: SandboxHandle) -> None:
    pve = sandbox_clean.pve()
    sandbox_clean.set_faults("pve", latency_ms=300)
    t0 = time.monotonic()
    pve.version.get()
    assert time.monotonic() - t0 >= 0.3


def test_stall_times_out_client(sandbox_clean: SandboxHandle) -> None:
    sandbox_clean.set_faults("pve", stall_rate=1.0, stall_s=5)
    with pytest.raises(requests.exceptions.Timeout):
        sandbox_clean.pve(timeout=0.5).version.get()


def test_stalled_scenario_hits_one_class(sandbox_clean: SandboxHandle) -> None:
    sandbox_clean.scenario("stalled")
    pve = sandbox_clean.pve(timeout=0.5)
    assert pve.nodes.get()  # other calls answer
    with pytest.raises(requests.exceptions.Timeout):
        pve.nodes("pve1").storage("pbs").content.get(content="backup")


def test_offline_node(sandbox_clean: SandboxHandle) -> None:
    sb = sandbox_clean
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
        socket.create_connection(("127.0.0.1", sb._node_port("pve3")), timeout=2).close()
    sb.reset_faults()
    socket.create_connection(("127.0.0.1", sb._node_port("pve3")), timeout=2).close()
    assert {n["status"] for n in pve.nodes.get()} == {"online"}


def test_failing_vmids(sandbox_clean: SandboxHandle) -> None:
    sb = sandbox_clean
    sb.set_faults("pve", extra={"failing_vmids": [106]})
    pve = sb.pve()
    upid = pve.nodes("pve1").vzdump.post(vmid="103,106", storage="pbs")
    status = Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    assert status["exitstatus"] == "job errors"
    log = Tasks.decode_log(pve.nodes("pve1").tasks(upid).log.get(limit=0))
    assert "ERROR: Backup of VM 106 failed - " in log
    assert "INFO: Finished Backup of VM 103" in log
    assert log.endswith("TASK ERROR: job errors")


def test_locked_vmids(sandbox_clean: SandboxHandle) -> None:
    sb = sandbox_clean
    sb.set_faults("pve", extra={"locked_vmids": {"103": "snapshot"}})
    pve = sb.pve()
    assert pve.nodes("pve1").lxc(103).status.current.get()["lock"] == "snapshot"
    upid = pve.nodes("pve1").vzdump.post(vmid="103", storage="pbs")
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "job errors"
    log = Tasks.decode_log(pve.nodes("pve1").tasks(upid).log.get(limit=0))
    assert "CT 103 is locked (snapshot)" in log


def test_scenarios_apply(sandbox_clean: SandboxHandle) -> None:
    sb = sandbox_clean
    for name in ("flaky", "node-offline", "backup-failures", "locked-guest", "default"):
        result = sb.scenario(name)
        assert result["scenario"] == name
    state = sb.state()
    assert state["scenario"] == "default"
    assert state["lab"]["guests"] >= 57
    assert state["seed"]["orphan_vmid"] == 199


def test_pbs_faults_and_verify_failure(sandbox_clean: SandboxHandle) -> None:
    sb = sandbox_clean
    sb.set_faults("pbs", error_rate=1.0)
    with pytest.raises(ResourceException) as exc:
        sb.pbs().admin.datastore.get()
    assert exc.value.status_code == 500
    sb.reset_faults()
    sb.set_faults("pbs", extra={"verify_fail": ["ct/104"]})
    pbs = sb.pbs()
    upid = pbs.admin.datastore("store1").verify.post(
        **{"backup-type": "ct", "backup-id": "104", "ignore-verified": 0})
    status = wait_task(pbs, "localhost", upid)
    assert status["exitstatus"] == "verification failed - please check the log for details"
    snaps = pbs.admin.datastore("store1").snapshots.get(
        **{"backup-type": "ct", "backup-id": "104"})
    assert all(s["verification"]["state"] == "failed" for s in snaps)
