"""The sandbox's Proxmox VE API through proxmoxer, unchanged, over real TLS connections."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from sandbox.lab import generate_lab
from sandbox.pve import PveService
from sandbox.pve import api as pve_api
from sandbox.pve.tasks import Task
from sandbox.service import Context
from sandbox.tls import SandboxCA
from tests.fixtures.sandbox import SandboxHandle, free_port_range, wait_task


@pytest.fixture
def sb(private_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """This module's own lab (it changes the lab); faults reset after each test."""
    try:
        yield private_sandbox
    finally:
        private_sandbox.reset_faults()


def test_token_auth_lists_guests(sb: SandboxHandle) -> None:
    pve = sb.pve()
    assert pve.version.get()["release"] == "9.1"
    nodes = {n["node"]: n for n in pve.nodes.get()}
    assert set(nodes) == {"pve1", "pve2", "pve3", "pve4"}
    guests = pve.cluster.resources.get(type="vm")
    lxc = [g for g in guests if g["type"] == "lxc"]
    qemu = [g for g in guests if g["type"] == "qemu"]
    assert len(lxc) >= 53 and len(qemu) == 4
    assert all(isinstance(g["vmid"], int) for g in guests)
    tpl = next(g for g in guests if g["vmid"] == 9000)
    assert tpl["template"] == 1
    assert [str(g["vmid"]) for g in guests] == sorted(str(g["vmid"]) for g in guests)
    tagged = next(g for g in guests if "tags" in g and ";" in g["tags"])
    assert ";" in tagged["tags"]
    per_node = pve.nodes("pve1").lxc.get()
    assert per_node and all(g["vmid"] in {x["vmid"] for x in lxc} for g in per_node)


def test_guest_config_has_network(sb: SandboxHandle) -> None:
    conf = sb.pve().nodes("pve1").lxc(100).config.get()
    assert conf["hostname"] == "dns-primary"
    assert conf["net0"].startswith("name=eth0,bridge=vmbr0,")
    assert "ip=192.168.1.100/24" in conf["net0"] and "hwaddr=" in conf["net0"]


def test_vzdump_task_to_pbs(sb: SandboxHandle) -> None:
    pve = sb.pve()
    upid = pve.nodes("pve1").vzdump.post(
        vmid="103",
        storage="pbs",
        mode="snapshot",
        protected=1,
        **{"notes-template": "{{guestname}}"},
    )
    assert upid.startswith("UPID:pve1:") and ":vzdump:103:root@pam!labops:" in upid
    assert len(upid.split(":")) == 9
    # The guest holds the backup lock while the job runs.
    assert pve.nodes("pve1").lxc(103).status.current.get().get("lock") == "backup"
    status = Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    assert status is not None and status["exitstatus"] == "OK"
    assert status["user"] == "root@pam" and status["tokenid"] == "labops"
    log = pve.nodes("pve1").tasks(upid).log.get(limit=0)
    text = Tasks.decode_log(log)
    assert "INFO: Starting Backup of VM 103 (lxc)" in text
    assert text.endswith("TASK OK")
    content = pve.nodes("pve2").storage("pbs").content.get(content="backup", vmid=103)
    newest = max(content, key=lambda c: c["ctime"])
    assert newest["volid"].startswith("pbs:backup/ct/103/")
    assert newest["notes"] == "authentik" and newest["protected"] == 1
    snaps = (
        sb.pbs()
        .admin.datastore("store1")
        .snapshots.get(**{"backup-type": "ct", "backup-id": "103"})
    )
    assert any(s["backup-time"] == newest["ctime"] and s["protected"] for s in snaps)
    assert "lock" not in pve.nodes("pve1").lxc(103).status.current.get()


def test_vzdump_local_and_ok_elsewhere(sb: SandboxHandle) -> None:
    pve = sb.pve()
    assert pve.nodes("pve3").vzdump.post(vmid="100", storage="local") == "OK"
    upid = pve.nodes("pve1").vzdump.post(vmid="100,103", storage="local")
    assert ":vzdump::" in upid  # more than one guest: no id in the UPID
    status = Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    assert status["exitstatus"] == "OK"
    vols = pve.nodes("pve1").storage("local").content.get(content="backup")
    assert any(v["volid"].startswith("local:backup/vzdump-lxc-103-") for v in vols)
    assert vols == sorted(vols, key=lambda v: v["volid"].lower())


def test_task_log_paging(sb: SandboxHandle) -> None:
    pve = sb.pve()
    upid = pve.nodes("pve1").vzdump.post(vmid="100,103,106", storage="pbs")
    Tasks.blocking_status(pve, upid, timeout=20, polling_interval=0.05)
    resp = requests.get(
        f"https://127.0.0.1:{sb.port('pve')}/api2/json/nodes/pve1/tasks/{upid}/log",
        headers={"Authorization": f"PVEAPIToken=root@pam!labops={sb.secret('pve_token')}"},
        verify=str(sb.ca_path),
        timeout=5,
    ).json()
    assert len(resp["data"]) == 50 and resp["total"] > 50
    assert resp["data"][0]["n"] == 1
    tasks = pve.nodes("pve1").tasks.get(typefilter="vzdump")
    assert tasks[0]["starttime"] >= tasks[-1]["starttime"]


def test_wrong_token_is_401(sb: SandboxHandle) -> None:
    bad = ProxmoxAPI(
        "127.0.0.1",
        port=sb.port("pve"),
        user="root@pam",
        token_name="labops",
        token_value="00000000-0000-0000-0000-000000000000",
        verify_ssl=str(sb.ca_path),
        timeout=10,
    )
    t0 = time.monotonic()
    with pytest.raises(ResourceException) as exc:
        bad.nodes.get()
    assert exc.value.status_code == 401
    assert exc.value.content == "Authentication failed!"
    assert time.monotonic() - t0 >= 0.29
    r = requests.get(
        f"https://127.0.0.1:{sb.port('pve')}/api2/json/nodes", verify=str(sb.ca_path), timeout=10
    )
    assert r.status_code == 401 and r.reason == "No ticket"


def test_ticket_auth_and_csrf(sb: SandboxHandle) -> None:
    password = sb.secret("pve_password")
    pve = ProxmoxAPI(
        "127.0.0.1",
        port=sb.port("pve"),
        user="root@pam",
        password=password,
        verify_ssl=str(sb.ca_path),
        timeout=10,
    )
    assert pve.nodes.get()
    ticket, csrf = pve.get_tokens()
    assert ticket.startswith("PVE:root@pam:") and csrf
    upid = pve.nodes("pve4").apt.update.post()  # proxmoxer sends the CSRF header itself
    assert upid.startswith("UPID:pve4:")
    base = f"https://127.0.0.1:{sb.port('pve')}/api2/json"
    r = requests.post(
        f"{base}/nodes/pve4/apt/update",
        cookies={"PVEAuthCookie": ticket},
        verify=str(sb.ca_path),
        timeout=10,
    )
    assert r.status_code == 401  # a write without CSRFPreventionToken
    r = requests.post(
        f"{base}/access/ticket",
        data={"username": "root@pam", "password": "x"},
        headers={"Authorization": "PVEAPIToken=root@pam!labops=x"},
        verify=str(sb.ca_path),
        timeout=10,
    )
    assert r.status_code == 403


def test_errors_in_reason_phrase(sb: SandboxHandle) -> None:
    pve = sb.pve()
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").lxc(999).config.get()
    assert exc.value.status_code == 500
    assert exc.value.content == "Configuration file 'nodes/pve1/lxc/999.conf' does not exist"
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").vzdump.post(vmid="100", storage="pbs", protected="true")
    assert exc.value.status_code == 400
    assert "protected" in exc.value.errors
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").nonsense.get()
    assert exc.value.status_code == 501
    assert exc.value.content == "Method 'GET /nodes/pve1/nonsense' not implemented"


def test_locked_guest_conflict(sb: SandboxHandle) -> None:
    pve = sb.pve()
    first = pve.nodes("pve2").vzdump.post(vmid="800", storage="pbs")
    second = pve.nodes("pve2").vzdump.post(vmid="800", storage="pbs")
    s2 = wait_task(pve, "pve2", second)
    assert s2["exitstatus"] == "job errors"
    log = Tasks.decode_log(pve.nodes("pve2").tasks(second).log.get(limit=0))
    assert "ERROR: Backup of VM 800 failed - VM 800 is locked (backup)" in log
    assert wait_task(pve, "pve2", first)["exitstatus"] == "OK"


def test_snapshot_rollback_restores_host_state(sb: SandboxHandle) -> None:
    pve = sb.pve()
    node, vmid = "pve1", 103
    sb.control("pve", "guest", vmid=vmid)  # touch: the guest exists
    upid = pve.nodes(node).lxc(vmid).snapshot.post(snapname="pre-upgrade", description="before apt")
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    names = [s["name"] for s in pve.nodes(node).lxc(vmid).snapshot.get()]
    assert names == ["pre-upgrade", "current"]
    upid = pve.nodes(node).lxc(vmid).snapshot("pre-upgrade").rollback.post()
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    upid = pve.nodes(node).lxc(vmid).snapshot("pre-upgrade").delete()
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as exc:
        pve.nodes(node).lxc(vmid).snapshot.post(snapname="1bad")
    assert exc.value.status_code == 400


def _agent_run(pve: Any, node: str, vmid: int, line: str) -> dict[str, Any]:
    """Run ``line`` in VM ``vmid`` through its guest agent and wait for its end."""
    pid = pve.nodes(node).qemu(vmid).agent.exec.post(command=["/bin/sh", "-c", line])["pid"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, Any] = pve.nodes(node).qemu(vmid).agent("exec-status").get(pid=pid)
        if status["exited"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{line!r} did not end")


def test_qemu_snapshot_rollback_and_reboot_as_pve_does(sb: SandboxHandle) -> None:
    """A VM's snapshot (qmsnapshot, no RAM), an upgrade through its agent, the rollback
    (qmrollback: stopped for it, started again with ``start``) and delete (qmdelsnapshot)."""
    pve = sb.pve()
    node, vmid = "pve2", 800
    vm = pve.nodes(node).qemu(vmid)
    vm.agent.ping.post()  # the VM's OS state exists from its first agent call
    kernel = "linux-image-amd64"
    sb.control("fleet", "set_pending", host="haos", packages=[{"name": kernel}])
    upid = vm.snapshot.post(snapname="pre-upgrade", description="before apt")
    assert ":qmsnapshot:800:" in upid
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    listed = vm.snapshot.get()
    assert [s["name"] for s in listed] == ["pre-upgrade", "current"]
    assert listed[0]["vmstate"] == 0 and listed[1]["parent"] == "pre-upgrade"
    assert vm.config.get()["parent"] == "pre-upgrade"
    done = _agent_run(pve, node, vmid, "DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade")
    assert done["exitcode"] == 0, done
    after = sb.control("fleet", "state", host="haos")
    assert not after["pending"] and after["reboot_required"]  # a VM's kernel asks for a reboot
    upid = vm.snapshot("pre-upgrade").rollback.post(start=1)
    assert ":qmrollback:800:" in upid
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "running"
    assert sorted(sb.control("fleet", "state", host="haos")["pending"]) == [kernel]
    # upgraded again, then PVE's reboot task: the VM boots, reboot-required clears
    line = f"apt-get -y install --only-upgrade {kernel}"
    assert _agent_run(pve, node, vmid, line)["exitcode"] == 0
    assert sb.control("fleet", "state", host="haos")["reboot_required"]
    upid = vm.status.reboot.post()
    assert ":qmreboot:800:" in upid and wait_task(pve, node, upid)["exitstatus"] == "OK"
    assert not sb.control("fleet", "state", host="haos")["reboot_required"]
    upid = vm.snapshot("pre-upgrade").delete()
    assert ":qmdelsnapshot:800:" in upid
    assert wait_task(pve, node, upid)["exitstatus"] == "OK"
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]
    with pytest.raises(ResourceException) as exc:
        vm.snapshot.post(snapname="1bad")
    assert exc.value.status_code == 400


def test_restore_and_destroy(sb: SandboxHandle) -> None:
    pve = sb.pve()
    vol = pve.nodes("pve1").storage("pbs").content.get(content="backup", vmid=101)[-1]["volid"]
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").lxc.post(vmid=101, ostemplate=vol, restore=1, storage="local-lvm")
    assert "CT 101 already exists on node" in exc.value.content
    upid = pve.nodes("pve1").lxc.post(vmid=990, ostemplate=vol, restore=1, storage="local-lvm")
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "OK"
    assert pve.nodes("pve1").lxc(990).status.current.get()["status"] == "stopped"
    upid = pve.nodes("pve1").lxc(990).delete()
    assert wait_task(pve, "pve1", upid)["exitstatus"] == "OK"
    assert 990 not in {g["vmid"] for g in pve.cluster.resources.get(type="vm")}


def test_backup_jobs_and_not_backed_up(sb: SandboxHandle) -> None:
    pve = sb.pve()
    jobs = pve.cluster.backup.get()
    assert len(jobs) >= 2 and all(j["type"] == "vzdump" for j in jobs)
    assert isinstance(jobs[0]["prune-backups"], dict)
    missing = pve("cluster/backup-info/not-backed-up").get()
    assert missing and all({"vmid", "type"} <= set(m) for m in missing)
    covered = {int(v) for j in jobs for v in j["vmid"].split(",") if v}
    assert not covered & {m["vmid"] for m in missing}
    # the VMs' second nightly job writes to namespace home (storage pbs-home)
    home = [j for j in jobs if j["storage"] == "pbs-home"]
    vms = {
        int(g["vmid"])
        for g in pve.cluster.resources.get(type="vm")
        if g["type"] == "qemu" and not g.get("template") and "nobackup" not in g.get("tags", "")
    }
    assert len(home) == 1 and {int(v) for v in home[0]["vmid"].split(",")} == vms


def test_apt_and_certificates(sb: SandboxHandle) -> None:
    pve = sb.pve()
    pkgs = pve.nodes("pve1").apt.update.get()
    assert any(p["Package"] == "pve-manager" and p["OldVersion"] for p in pkgs)
    assert pve.nodes("pve4").apt.update.get() == []
    info = pve.nodes("pve2").certificates.info.get()
    assert [i["filename"] for i in info] == ["pve-root-ca.pem", "pve-ssl.pem", "pveproxy-ssl.pem"]
    proxy = info[2]
    assert proxy["notafter"] - time.time() < 30 * 86400
    assert "pve2.lab.internal" in proxy["san"]
    assert pve.nodes("pve2").config.get()["acme"].startswith("domains=")


def test_node_port_serves_node_cert_and_acme_renewal(sb: SandboxHandle) -> None:
    ctx = ssl.create_default_context(cafile=str(sb.ca_path))
    port = sb.node_port("pve2")

    def served_notafter() -> float:
        import socket

        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="pve2.lab.internal") as tls,
        ):
            cert = tls.getpeercert()
        assert cert is not None
        return ssl.cert_time_to_seconds(str(cert["notAfter"]))

    before = served_notafter()
    assert before - time.time() < 30 * 86400
    pve = sb.pve()
    upid = pve.nodes("pve2").certificates.acme.certificate.put()
    assert wait_task(pve, "pve2", upid)["exitstatus"] == "OK"
    assert served_notafter() - time.time() > 80 * 86400
    sb.set_faults("pve", extra={"acme_fail_nodes": ["pve1"]})
    upid = pve.nodes("pve1").certificates.acme.certificate.put(force=1)
    status = wait_task(pve, "pve1", upid)
    assert status["exitstatus"].startswith("validating challenge")


def test_volume_delete_and_qemu_restore(sb: SandboxHandle) -> None:
    pve = sb.pve()
    vols = pve.nodes("pve2").storage("pbs").content.get(content="backup", vmid=801)
    upid = pve.nodes("pve2").qemu.post(vmid=991, archive=vols[-1]["volid"], storage="local-lvm")
    assert ":qmrestore:991:" in upid
    assert wait_task(pve, "pve2", upid)["exitstatus"] == "OK"
    assert pve.nodes("pve2").qemu(991).config.get()["name"] == "win11"
    upid = pve.nodes("pve2").qemu(991).delete()
    assert wait_task(pve, "pve2", upid)["exitstatus"] == "OK"
    oldest = vols[0]["volid"]
    upid = pve.nodes("pve2").storage("pbs").content(oldest).delete()
    assert wait_task(pve, "pve2", upid)["exitstatus"] == "OK"
    after = {v["volid"] for v in pve.nodes("pve2").storage("pbs").content.get(vmid=801)}
    assert oldest not in after and len(after) == len(vols) - 1


def test_snapshot_copies_and_rollback_restores_lab_hosts(tmp_path: Path) -> None:
    """In process: the snapshot keeps a deep copy of lab.hosts[name]; rollback puts it back."""

    async def scenario() -> None:
        state = tmp_path / "state"
        state.mkdir()
        ctx = Context(
            lab=generate_lab(),
            state_dir=state,
            host="127.0.0.1",
            ca=SandboxCA.create(),
            faults={},
            rng=random.Random(1),
            time_scale=0.01,
            base_port=free_port_range(),
        )
        svc = PveService(ctx)
        await svc.start()
        try:
            api = svc.api
            assert api is not None
            ctx.lab.hosts["authentik"] = {"packages": {"openssl": "3.5.1-1"}}
            where = {"node": "pve1", "vmid": "103"}

            async def run(coro: Any) -> Task:
                task = api.tasks.tasks[await coro]
                while task.status == "running":
                    await asyncio.sleep(0.01)
                return task

            t = await run(
                pve_api.snapshot_create(api, pve_api.Req(where, {"snapname": "pre"}, "root@pam"))
            )
            assert t.exitstatus == "OK"
            ctx.lab.hosts["authentik"]["packages"]["openssl"] = "3.5.1-1+deb13u1"
            t = await run(
                pve_api.snapshot_rollback(
                    api, pve_api.Req({**where, "snapname": "pre"}, {}, "root@pam")
                )
            )
            assert t.exitstatus == "OK"
            assert ctx.lab.hosts["authentik"] == {"packages": {"openssl": "3.5.1-1"}}
        finally:
            await svc.stop()

    asyncio.run(scenario())


def test_prune_preview(sb: SandboxHandle) -> None:
    marks = (
        sb.pve()
        .nodes("pve1")
        .storage("pbs")
        .prunebackups.get(vmid=101, **{"prune-backups": "keep-last=3"})
    )
    assert [m["mark"] for m in marks].count("keep") == 3
    assert {m["mark"] for m in marks} <= {"keep", "remove", "protected"}
    assert all(m["type"] == "lxc" and m["vmid"] == 101 for m in marks)


def test_undeclared_and_missing_parameters_rejected(sb: SandboxHandle) -> None:
    pve = sb.pve()
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").lxc.get(full=1)  # `full` exists for qemu lists only
    assert exc.value.status_code == 400
    assert exc.value.errors == {
        "full": "property is not defined in schema and the schema "
        "does not allow additional properties"
    }
    with pytest.raises(ResourceException) as exc:
        pve.nodes("pve1").lxc(100).snapshot.post()
    assert exc.value.errors == {"snapname": "property is missing and it is not optional"}
    with pytest.raises(ResourceException) as exc:
        pve.cluster.resources.get(type="guest")
    assert "enumeration" in exc.value.errors["type"]


def test_guest_config_put_like_pve(sb: SandboxHandle) -> None:
    """PUT .../config: PVE's parameter names, net[n] format checks, digest, lock, delete."""
    pve = sb.pve()
    ct = pve.nodes("pve1").lxc(106)
    conf = ct.config.get()
    net0 = conf["net0"]
    with pytest.raises(ResourceException) as exc:
        ct.config.put(nosuchkey="1")
    assert exc.value.status_code == 400 and "nosuchkey" in exc.value.errors
    with pytest.raises(ResourceException) as exc:
        ct.config.put(net0=net0 + ",link_down=maybe")
    assert exc.value.status_code == 400
    assert "net0.link_down: type check ('boolean') failed" in exc.value.errors["net0"]
    with pytest.raises(ResourceException) as exc:
        ct.config.put(net0="virtio,bridge=vmbr0")  # a VM's model on a container
    assert "value without key" in exc.value.errors["net0"]
    with pytest.raises(ResourceException) as exc:
        ct.config.put(net1="name=eth1,bridge=vmbr1", digest="0" * 40)
    assert exc.value.status_code == 500 and "detected modified configuration" in exc.value.content
    assert ct.config.get() == conf

    ct.config.put(
        net0=net0 + ",link_down=yes", net1="bridge=vmbr1,name=eth1", digest=conf["digest"]
    )
    after = ct.config.get()
    assert after["digest"] != conf["digest"]
    # stored as PVE prints it: name first, then the other keys sorted; a MAC made up
    assert after["net0"] == net0.replace(",type=veth", ",link_down=1,type=veth")
    assert after["net1"].startswith("name=eth1,bridge=vmbr1,hwaddr=BC:24:11:")
    assert after["net1"].endswith(",type=veth")
    ct.config.put(net0=net0, delete="net1")
    assert ct.config.get() == conf

    sb.control("pve", "guest", vmid=106, lock="backup")
    try:
        with pytest.raises(ResourceException) as exc:
            ct.config.put(net0=net0)
        assert exc.value.status_code == 500 and exc.value.content == "CT is locked (backup)"
    finally:
        sb.control("pve", "guest", vmid=106, lock=None)

    vm = pve.nodes("pve2").qemu(801)
    vconf = vm.config.get()
    vm.config.put(net0=vconf["net0"] + ",link_down=1", net1="e1000,bridge=vmbr1")
    after = vm.config.get()
    assert after["net0"] == vconf["net0"] + ",link_down=1"
    assert after["net1"].startswith("e1000=BC:24:11:") and after["net1"].endswith(",bridge=vmbr1")
    vm.config.put(net0=vconf["net0"], delete="net1")
    assert vm.config.get() == vconf
