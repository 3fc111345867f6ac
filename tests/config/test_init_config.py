"""``labops init``'s decisions without I/O: the config document from discovered facts, and the
privileges missing per operation from what the token holds."""

from __future__ import annotations

import yaml

from labops.config import parse_config
from labops.init_config import (
    NO_PRIVILEGES,
    GuestFact,
    LabFacts,
    NodeFact,
    StorageFact,
    TraefikFact,
    backup_storage,
    config_document,
    drill_storage,
    missing_by_operation,
    operation_needs,
    paths_to_read,
    privilege_table,
    render,
)


def facts(**kw: object) -> LabFacts:
    base: dict[str, object] = {
        "lab_name": "lab1",
        "pve_url": "https://pve1.lab:8006",
        "token_id": "labops@pve!flows",
        "token_secret_ref": "env:LABOPS_PVE_TOKEN",
        "tls": {"ca_bundle": "/etc/labops/root.pem"},
        "nodes": [NodeFact(name="pve1"), NodeFact(name="pve2", online=False)],
        "guests": [
            GuestFact(vmid=101, node="pve1", kind="lxc", tags=["rpo-7d"]),
            GuestFact(vmid=102, node="pve1", kind="lxc", tags=["nopatch"]),
            GuestFact(vmid=200, node="pve2", kind="qemu"),
            GuestFact(vmid=900, node="pve1", kind="qemu", template=True),
        ],
        "storages": [
            StorageFact(storage="local", type="dir", content=["iso", "backup"], nodes=["pve1"]),
            StorageFact(storage="local-lvm", type="lvmthin", content=["images", "rootdir"]),
            StorageFact(storage="pbs-main", type="pbs", content=["backup"], shared=True),
        ],
    }
    base.update(kw)
    return LabFacts.model_validate(base)


def test_the_document_loads_and_holds_only_references() -> None:
    text = render(facts())
    config = parse_config(yaml.safe_load(text))
    assert config.lab.name == "lab1"
    assert config.systems.proxmox is not None
    assert config.systems.proxmox.token_secret == "env:LABOPS_PVE_TOKEN"
    assert str(config.systems.proxmox.tls.ca_bundle) == "/etc/labops/root.pem"
    assert config.backups.storage == "pbs-main"
    assert config.backups.restore_drill.storage == "local-lvm"
    assert config.patching.exclusions.tags == ["nopatch"]
    assert config.systems.traefik is None and "# traefik:" in text
    assert "#   nodes: 2 (pve1 online; pve2 offline)" in text
    assert "#   guests: 4 (2 LXC, 1 VMs, 1 template)" in text
    assert "#   PBS storage: pbs-main" in text


def test_storage_choices_without_pbs() -> None:
    lab = facts(
        storages=[
            StorageFact(storage="nfs", type="nfs", content=["backup"], shared=True),
            StorageFact(storage="local", type="dir", content=["backup", "images"]),
        ]
    )
    assert backup_storage(lab) == "nfs"  # shared first
    assert drill_storage(lab) == "local"
    assert "backups" not in config_document(facts(storages=[]))


def test_traefik_is_written_when_given() -> None:
    lab = facts(traefik=TraefikFact(url="http://traefik:8080", entrypoint="10.0.0.2:443"))
    config = parse_config(yaml.safe_load(render(lab)))
    assert config.systems.traefik is not None
    assert config.systems.traefik.entrypoint == "10.0.0.2:443"


def test_missing_privileges_per_operation() -> None:
    config = parse_config(config_document(facts()))
    needs = operation_needs(config, ["pve1", "pve2"])
    paths = paths_to_read(needs)
    assert {"/", "/vms", "/storage/pbs-main", "/storage/local-lvm", "/nodes/pve2"} <= set(paths)
    assert len(paths) == len(set(paths))

    everything = {
        p: [
            "Sys.Audit",
            "VM.Audit",
            "VM.Backup",
            "VM.Allocate",
            "VM.Config.Network",
            "VM.Config.Options",
            "VM.PowerMgmt",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
            "VM.GuestAgent.Unrestricted",
            "Datastore.Audit",
            "Datastore.AllocateSpace",
        ]
        for p in paths
    }
    assert all(not lines for lines in missing_by_operation(needs, everything).values())

    auditor = {"/": ["Sys.Audit", "VM.Audit", "Datastore.Audit"], "/vms": ["VM.Audit"]}
    missing = missing_by_operation(needs, auditor)
    assert missing["security-digest"] == ["Datastore.Audit on /storage (read storages)"]
    assert "VM.Backup on /vms (back the guests up)" in missing["backups"]
    assert any(
        m.startswith("Datastore.AllocateSpace on /storage/pbs-main") for m in missing["backups"]
    )
    assert "Sys.Audit on /nodes/pve1 (read node pve1)" in missing["certificates"]
    agent = "VM.GuestAgent.Unrestricted on /vms (commands in VMs without SSH)"
    assert agent in missing["patch-check"] and agent in missing["patch-apply"]
    assert any(m.startswith("VM.Allocate on /vms/9900") for m in missing["restore-drill"])

    table = privilege_table({"backups": [], "patch-apply": ["VM.Snapshot on /vms (x)"]})
    assert table.splitlines() == [
        "OPERATION    MISSING PRIVILEGE (ON PATH, WHY)",
        f"backups      {NO_PRIVILEGES}",
        "patch-apply  VM.Snapshot on /vms (x)",
    ]


def test_renewal_adds_sys_modify_on_each_node() -> None:
    doc = config_document(facts())
    doc["certificates"] = {"renewal": {"enabled": True}}
    needs = operation_needs(parse_config(doc), ["pve1"])
    missing = missing_by_operation(needs, {"/nodes/pve1": ["Sys.Audit"]})
    assert missing["certificates"] == ["Sys.Modify on /nodes/pve1 (renew ACME certificates)"]
