"""The sandbox's PVE permission model: PVE's rules for roles, propagation, pools and tokens, the
schema's permission table, and, over real connections, that each entry of the restore drill's
documented ACL (docs/production.md, section 8) is what PVE checks on the call that needs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from sandbox.pve import access
from sandbox.pve.access import Access, Denied
from sandbox.pve.api import router
from sandbox.pve.params import extract_permissions
from tests.fixtures.pve_acl import apply, documented_commands
from tests.fixtures.sandbox import SandboxHandle, wait_task

SCHEMA_FILE = (
    Path(__file__).resolve().parents[2] / "../shared/reference/pve-api-schema.json"
).resolve()
DRILL_TOKEN = "labops@pve!drill"
SCRATCH = 9950


def test_permission_table_in_sync_with_schema() -> None:
    if not SCHEMA_FILE.exists():
        pytest.skip(f"PVE API schema not found at {SCHEMA_FILE}")
    schema = json.loads(SCHEMA_FILE.read_text())
    expected = extract_permissions(schema, router.routes())
    assert json.loads(access.PERMISSIONS_FILE.read_text()) == expected, (
        "regenerate: python -m sandbox.pve.params <pve-api-schema.json>"
    )
    assert expected["DELETE /nodes/{node}/lxc/{vmid}"] == {
        "check": ["perm", "/vms/{vmid}", ["VM.Allocate"]]
    }


def test_privileges_follow_pves_rules() -> None:
    members = {100: "infra", 101: "apps"}
    acl = Access(lambda: members)
    acl.add_pool("infra")
    acl.add_pool("apps")
    acl.add_user("ops@pve")
    acl.add_token("ops@pve", "sep", privsep=True)
    acl.add_token("ops@pve", "full", privsep=False)
    acl.add_role("Power", ["VM.PowerMgmt"])
    acl.update_acl("/", ["PVEAuditor"], users=["ops@pve"])
    # An entry on a deeper path replaces what propagated from above.
    acl.update_acl("/vms", ["Power"], users=["ops@pve"], propagate=True)
    assert "Sys.Audit" in acl.permissions("ops@pve", "/nodes/pve1")
    assert set(acl.permissions("ops@pve", "/vms/102")) == {"VM.PowerMgmt"}
    # Not propagated: the path itself only.
    acl.update_acl("/storage", ["PVEDatastoreUser"], users=["ops@pve"], propagate=False)
    assert "Datastore.AllocateSpace" in acl.permissions("ops@pve", "/storage")
    assert "Datastore.AllocateSpace" not in acl.permissions("ops@pve", "/storage/pbs")
    # A pool's entries reach the pool's guests only, on top of the path's own roles.
    acl.update_acl("/pool/infra", ["PVEVMAdmin"], users=["ops@pve"])
    assert "VM.Allocate" in acl.permissions("ops@pve", "/vms/100")
    assert "VM.Allocate" not in acl.permissions("ops@pve", "/vms/101")
    assert "VM.Allocate" in acl.permissions("ops@pve", "/pool/infra")
    # NoAccess on the pool beats the pool's guests' other roles.
    acl.update_acl("/pool/apps", ["NoAccess"], users=["ops@pve"])
    assert acl.permissions("ops@pve", "/vms/101") == {}
    # A privilege-separated token: what both it and its user hold; the other one: its user's.
    acl.update_acl("/vms", ["PVEVMAdmin"], tokens=["ops@pve!sep"])
    assert set(acl.permissions("ops@pve!sep", "/vms/102")) == {"VM.PowerMgmt"}
    assert acl.permissions("ops@pve!full", "/vms/102") == acl.permissions("ops@pve", "/vms/102")
    assert acl.permissions("ops@pve!sep", "/nodes/pve1") == {}
    with pytest.raises(Denied, match=r"^Permission check failed \(/vms/102, VM.Allocate\)$"):
        acl.check("ops@pve!sep", "/vms/102", ["VM.Allocate"])
    assert "Permissions.Modify" in acl.permissions("root@pam", "/anything")
    # Destroying a guest drops its own entries.
    acl.update_acl("/vms/102", ["PVEVMAdmin"], users=["ops@pve"])
    acl.remove_vm_access(102)
    assert set(acl.permissions("ops@pve", "/vms/102")) == {"VM.PowerMgmt"}


@pytest.fixture
def sb(private_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    try:
        yield private_sandbox
    finally:
        private_sandbox.control("pve", "access-reset")
        private_sandbox.reset_faults()


def token_client(sb: SandboxHandle, tokenid: str, secret: str) -> Any:
    user, _, name = tokenid.partition("!")
    return ProxmoxAPI(
        "127.0.0.1",
        port=sb.port("pve"),
        user=user,
        token_name=name,
        token_value=secret,
        verify_ssl=str(sb.ca_path),
        timeout=10,
    )


def refused(call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ResourceException) as exc:
        call(*args, **kw)
    assert exc.value.status_code == 403, exc.value
    return str(exc.value.content)


def with_acl(sb: SandboxHandle, drop: str | None = None) -> Any:
    """A client of the drill's token holding the documented ACL, without the ACL line or role
    privilege ``drop`` (``"acl <path>"`` or ``"priv <privilege>"``)."""
    sb.control("pve", "access-reset")
    commands = []
    for argv in documented_commands():
        if drop == f"acl {argv[3]}" and argv[1:3] == ["acl", "modify"]:
            continue
        if drop and drop.startswith("priv ") and argv[1:3] == ["role", "add"]:
            at = argv.index("--privs") + 1
            argv = [*argv[:at], " ".join(p for p in argv[at].split() if p != drop[5:])]
        commands.append(argv)
    root = sb.pve()
    root.access.users.post(userid="labops@pve")
    secrets = apply(root, commands)
    return token_client(sb, DRILL_TOKEN, secrets[DRILL_TOKEN])


def restore(pve: Any, volid: str, **extra: Any) -> str:
    upid: str = pve.nodes("pve1").lxc.post(
        vmid=SCRATCH, ostemplate=volid, restore=1, storage="local-lvm", unique=1, **extra
    )
    return upid


def newest_backup(sb: SandboxHandle, vmid: int) -> str:
    content = sb.pve().nodes("pve1").storage("pbs").content.get(content="backup", vmid=vmid)
    return str(max(content, key=lambda c: c["ctime"])["volid"])


def destroy_scratch(sb: SandboxHandle) -> None:
    root = sb.pve()
    if any(g["vmid"] == SCRATCH for g in root.cluster.resources.get(type="vm")):
        ct = root.nodes("pve1").lxc(SCRATCH)
        if ct.status.current.get()["status"] == "running":
            wait_task(root, "pve1", ct.status.stop.post())
        wait_task(root, "pve1", ct.delete(purge=1))


def test_each_documented_privilege_is_what_pve_checks(sb: SandboxHandle) -> None:
    volid = newest_backup(sb, 101)
    root = sb.pve()

    # The documented ACL: every call of the drill goes through.
    pve = with_acl(sb)
    assert any(g["vmid"] == 101 for g in pve.cluster.resources.get(type="vm"))
    assert [v["volid"] for v in pve.nodes("pve1").storage("pbs").content.get(vmid=101)]
    # A tag sent with a container's restore is checked on /vms/<vmid>, which the pool's entries
    # do not reach before the guest is in the pool: the drill tags after the restore.
    text = refused(restore, pve, volid, pool="labops-drill", tags="labops-drill-x")
    assert "(/vms/9950, VM.Config.Options)" in text
    status = wait_task(pve, "pve1", restore(pve, volid, pool="labops-drill"))
    assert status["exitstatus"] == "OK"
    ct = pve.nodes("pve1").lxc(SCRATCH)
    conf = ct.config.get()
    ct.config.put(tags="labops-drill-x", digest=conf["digest"])
    ct.config.put(net0=conf["net0"] + ",link_down=1")
    wait_task(pve, "pve1", ct.status.start.post())
    wait_task(pve, "pve1", ct.status.stop.post())
    wait_task(pve, "pve1", ct.delete(purge=1))
    assert all(g["vmid"] != SCRATCH for g in root.cluster.resources.get(type="vm"))

    # Each privilege of the pool's role, removed: the call that needs it is refused.
    for priv, call in (
        ("VM.Config.Options", lambda c: c.config.put(tags="labops-drill-x")),
        ("VM.Config.Network", lambda c: c.config.put(net0=conf["net0"] + ",link_down=1")),
        ("VM.PowerMgmt", lambda c: c.status.start.post()),
        ("VM.Allocate", lambda c: c.delete(purge=1)),
    ):
        pve = with_acl(sb, f"priv {priv}")
        if priv == "VM.Allocate":
            assert "Permission check failed" in refused(restore, pve, volid, pool="labops-drill")
            wait_task(root, "pve1", restore(root, volid, pool="labops-drill"))
        else:
            wait_task(pve, "pve1", restore(pve, volid, pool="labops-drill"))
        text = refused(call, pve.nodes("pve1").lxc(SCRATCH))
        assert f"(/vms/{SCRATCH}, {priv})" in text, (priv, text)
        destroy_scratch(sb)

    # Reading: without VM.Audit the guests are hidden, without VM.Backup their backups.
    pve = with_acl(sb, "priv VM.Audit")
    assert pve.cluster.resources.get(type="vm") == []
    pve = with_acl(sb, "priv VM.Backup")
    assert pve.nodes("pve1").storage("pbs").content.get(vmid=101) == []
    assert "(/vms/101, VM.Backup)" in refused(restore, pve, volid, pool="labops-drill")
    pve = with_acl(sb, "acl /vms")
    assert pve.cluster.resources.get(type="vm") == []
    # The storages: the backups' is needed to list and restore them, the target's for disks.
    pve = with_acl(sb, "acl /storage/pbs")
    text = refused(pve.nodes("pve1").storage("pbs").content.get, vmid=101)
    assert "(/storage/pbs, Datastore.Audit|Datastore.AllocateSpace)" in text
    pve = with_acl(sb, "acl /storage/local-lvm")
    text = refused(restore, pve, volid, pool="labops-drill")
    assert "(/storage/local-lvm, Datastore.AllocateSpace)" in text
    # The bridges: PVE checks the restored interfaces' bridge in the restore task.
    pve = with_acl(sb, "acl /sdn/zones/localnetwork")
    status = wait_task(pve, "pve1", restore(pve, volid, pool="labops-drill"))
    assert "(/sdn/zones/localnetwork/vmbr0, SDN.Use)" in status["exitstatus"]
    assert all(g["vmid"] != SCRATCH for g in root.cluster.resources.get(type="vm"))
    # The pool: without its entry nothing may be created.
    pve = with_acl(sb, "acl /pool/labops-drill")
    assert refused(restore, pve, volid, pool="labops-drill").startswith("Permission check failed")
