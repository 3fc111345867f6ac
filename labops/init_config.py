"""``labops init``'s decisions: a first config from what the Proxmox API showed, and which
privileges the token still lacks for each operation. Pure: the CLI gathers the facts.

The document written holds only references to secrets (the ``SecretRef`` syntax); the facts
that are not settings (node and guest counts, storages, Traefik routers) go in comments, so the
file says what it was written from without pinning what discovery finds anew at every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, Field

from labops.backups.drill import Need, missing_privileges, scratch_needs, source_needs
from labops.config.loader import parse_config
from labops.config.model import LabopsConfig

NO_PRIVILEGES = "(held)"
"""What the table shows for an operation whose privileges the token all holds."""


class NodeFact(BaseModel):
    name: str
    online: bool = True


class GuestFact(BaseModel):
    vmid: int
    node: str
    kind: str = Field(..., description="lxc | qemu")
    name: str | None = None
    template: bool = False
    tags: list[str] = Field(default_factory=list)


class StorageFact(BaseModel):
    storage: str
    type: str | None = None
    content: list[str] = Field(default_factory=list)
    shared: bool = False
    nodes: list[str] = Field(default_factory=list, description="Nodes that list it.")


class TraefikFact(BaseModel):
    url: str
    entrypoint: str
    routers: int = 0
    tls_hosts: int = 0


class LabFacts(BaseModel):
    """What ``labops init`` was told and what it found."""

    lab_name: str = "homelab"
    pve_url: str
    token_id: str
    token_secret_ref: str
    tls: dict[str, Any] = Field(default_factory=dict, description="systems.proxmox.tls keys.")
    nodes: list[NodeFact] = Field(default_factory=list)
    guests: list[GuestFact] = Field(default_factory=list)
    storages: list[StorageFact] = Field(default_factory=list)
    traefik: TraefikFact | None = None


# -- which storage for what -------------------------------------------------------------------


def pbs_storage(facts: LabFacts) -> str | None:
    """The PVE storage of type ``pbs`` holding backups (the first by name when several)."""
    found = sorted(s.storage for s in facts.storages if s.type == "pbs")
    return found[0] if found else None


def backup_storage(facts: LabFacts) -> str | None:
    """Where backups go: the PBS storage, else a shared storage for backups, else any one."""
    pbs = pbs_storage(facts)
    if pbs:
        return pbs
    backup = [s for s in facts.storages if "backup" in s.content]
    backup.sort(key=lambda s: (not s.shared, s.storage))
    return backup[0].storage if backup else None


def drill_storage(facts: LabFacts) -> str | None:
    """Where the restore drill puts the scratch guest's disks: ``local-lvm`` when a node has
    it, else the first storage holding guest disks (``images`` or ``rootdir``)."""
    disks = sorted(s.storage for s in facts.storages if {"images", "rootdir"} & set(s.content))
    if "local-lvm" in disks:
        return "local-lvm"
    return disks[0] if disks else None


# -- the config document ----------------------------------------------------------------------


def config_document(facts: LabFacts) -> dict[str, Any]:
    """The settings of the first config (only keys that differ from the defaults or that the
    operator must see); ``parse_config`` accepts it."""
    proxmox: dict[str, Any] = {
        "url": facts.pve_url,
        "token_id": facts.token_id,
        "token_secret": facts.token_secret_ref,
    }
    if facts.tls:
        proxmox["tls"] = dict(facts.tls)
    systems: dict[str, Any] = {"proxmox": proxmox}
    if facts.traefik is not None:
        systems["traefik"] = {"url": facts.traefik.url, "entrypoint": facts.traefik.entrypoint}
    backups: dict[str, Any] = {}
    target = backup_storage(facts)
    if target:
        backups["storage"] = target
    drill = drill_storage(facts)
    if drill:
        backups["restore_drill"] = {"storage": drill}
    doc: dict[str, Any] = {
        "lab": {"name": facts.lab_name},
        "systems": systems,
        "inventory": {"discover_from_proxmox": True},
    }
    if backups:
        doc["backups"] = backups
    tags = {t for g in facts.guests for t in g.tags}
    if "nopatch" in tags:
        doc["patching"] = {"exclusions": {"tags": ["nopatch"]}}
    return doc


def validate(doc: Mapping[str, Any]) -> LabopsConfig:
    """The document as the loader reads it (ConfigError naming each bad key)."""
    return parse_config(yaml.safe_load(yaml.safe_dump(dict(doc))), source="labops init")


def facts_summary(facts: LabFacts) -> list[str]:
    """One line per kind of thing found, for the file's header and the terminal."""
    online = [n.name for n in facts.nodes if n.online]
    offline = [n.name for n in facts.nodes if not n.online]
    kinds = Counter(g.kind for g in facts.guests if not g.template)
    templates = sum(1 for g in facts.guests if g.template)
    lines = [
        f"nodes: {len(facts.nodes)} ({', '.join(online) or 'none'} online"
        + (f"; {', '.join(offline)} offline" if offline else "")
        + ")",
        f"guests: {len(facts.guests)} ({kinds.get('lxc', 0)} LXC, {kinds.get('qemu', 0)} VMs, "
        f"{templates} template{'' if templates == 1 else 's'})",
    ]
    tags = Counter(t for g in facts.guests for t in g.tags)
    if tags:
        lines.append("tags: " + ", ".join(f"{t} ({n})" for t, n in sorted(tags.items())))
    storages = sorted(facts.storages, key=lambda s: s.storage)
    lines.append(
        "storages: "
        + (
            ", ".join(
                f"{s.storage} ({s.type or '?'}: {','.join(s.content) or '-'})" for s in storages
            )
            or "none visible to the token"
        )
    )
    lines.append(f"PBS storage: {pbs_storage(facts) or 'none (no storage of type pbs)'}")
    if facts.traefik is not None:
        lines.append(
            f"Traefik: {facts.traefik.routers} routers, {facts.traefik.tls_hosts} TLS host names"
        )
    return lines


_SECTION_NOTES: dict[str, str] = {
    "lab": "The lab's name: every report, metric, artifact and MQTT topic carries it.",
    "systems": (
        "Where labops talks to. Secrets are references (env:, file:, block:), never values.\n"
        "Add the other systems (pbs, ssh, step_ca, technitium, wazuh, crowdsec, victoriametrics,\n"
        "loki, beszel, telegram, mqtt, llm) from `labops config example` when you have them:\n"
        "a system left out is skipped and named in every report."
    ),
    "inventory": "Nodes and guests are listed from the Proxmox API at every run.",
    "backups": (
        "Backups go to the PBS storage (else a storage holding backups); the restore drill\n"
        "restores its scratch guest onto restore_drill.storage. RPO tiers: 24h by default, 7d for\n"
        "guests tagged rpo-7d; guests tagged nobackup are skipped (see `labops config example`\n"
        "for tiers, retention, limits). Give the drill a pool (restore_drill.pool, see\n"
        "docs/production.md section 8) so its token changes only the guests in that pool."
    ),
    "patching": "Guests tagged nopatch are never patched.",
}


def render(facts: LabFacts, written_by: str = "labops init") -> str:
    """The commented YAML file: a header with what was found, then each section with a note."""
    doc = config_document(facts)
    validate(doc)
    out = [
        f"# labops configuration, written by {written_by} from the Proxmox API of {facts.pve_url}.",
        "# Every key is documented in `labops config example`; unknown keys are errors.",
        "# Relative paths are taken from this file's directory.",
        "#",
        "# Found:",
        *(f"#   {line}" for line in facts_summary(facts)),
        "",
    ]
    for key, value in doc.items():
        out.extend(f"# {line}" for line in _SECTION_NOTES.get(key, "").splitlines())
        out.append(yaml.safe_dump({key: value}, sort_keys=False).rstrip())
        if key == "systems" and facts.traefik is None:
            out.append("  # traefik: {url: https://traefik.lab.internal, entrypoint: 10.0.0.2:443}")
        if key == "systems" and pbs_storage(facts):
            out.append(
                "  # pbs: {url: https://pbs.lab.internal:8007, token_id: labops@pbs!labops,\n"
                "  #       token_secret: env:LABOPS_PBS_TOKEN, datastore: store1,"
                f" pve_storage: {pbs_storage(facts)}}}"
            )
        out.append("")
    return "\n".join(out)


# -- privileges -------------------------------------------------------------------------------


def operation_needs(config: LabopsConfig, nodes: Sequence[str]) -> dict[str, list[Need]]:
    """What each operation that calls PVE calls it for, as privileges on paths
    (docs/production.md, section 8; housekeeping talks to Prefect only); the restore drill's
    needs are the drill's own (labops.backups.drill)."""
    storage = config.backups.storage or (
        config.systems.pbs.pve_storage if config.systems.pbs else None
    )
    drill = config.backups.restore_drill
    see = [
        Need(paths=["/"], privs=["Sys.Audit"], why="list nodes and cluster state"),
        Need(paths=["/vms"], privs=["VM.Audit"], why="list the guests"),
    ]
    per_node = [
        Need(paths=[f"/nodes/{n}"], privs=["Sys.Audit"], why=f"read node {n}") for n in nodes
    ]
    backups = [
        *see,
        Need(paths=["/vms"], privs=["VM.Backup"], why="back the guests up"),
    ]
    if storage:
        backups.append(
            Need(
                paths=[f"/storage/{storage}"],
                privs=["Datastore.Audit", "Datastore.AllocateSpace"],
                why="list and write the backups",
            )
        )
    restore = source_needs(None, storage) if storage else []
    restore += scratch_needs(drill.storage, drill.pool, drill.scratch_vmid_min, drill.network)
    certificates = list(per_node)
    if config.certificates.renewal.enabled:
        certificates += [
            Need(paths=[f"/nodes/{n}"], privs=["Sys.Modify"], why="renew ACME certificates")
            for n in nodes
        ]
    readers = [*see, Need(paths=["/storage"], privs=["Datastore.Audit"], why="read storages")]
    # VMs without SSH are checked and upgraded through their QEMU guest agent (agent/exec)
    agent = Need(
        paths=["/vms"], privs=["VM.GuestAgent.Unrestricted"], why="commands in VMs without SSH"
    )
    return {
        "backups": backups,
        "restore-drill": restore,
        "certificates": certificates,
        "patch-check": [*see, *per_node, agent],
        "patch-apply": [
            *see,
            agent,
            Need(
                paths=["/vms"],
                privs=["VM.Snapshot", "VM.Snapshot.Rollback", "VM.PowerMgmt"],
                why="snapshot, roll back, restart",
            ),
        ],
        "security-digest": readers,
        "doc-reconcile": readers,
    }


def paths_to_read(needs: Mapping[str, Iterable[Need]]) -> list[str]:
    """Every path whose privileges the token's own permissions are read for, once each."""
    return list(dict.fromkeys(p for ns in needs.values() for need in ns for p in need.paths))


def missing_by_operation(
    needs: Mapping[str, Sequence[Need]], held: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Operation -> one line per privilege it lacks, with the path to grant it on."""
    return {op: list(dict.fromkeys(missing_privileges(ns, held))) for op, ns in needs.items()}


def privilege_table(missing: Mapping[str, Sequence[str]]) -> str:
    """OPERATION / MISSING, one row per missing privilege (``(held)`` when none is missing)."""
    rows = [(op, line) for op, lines in missing.items() for line in (lines or [NO_PRIVILEGES])]
    width = max(len("OPERATION"), *(len(op) for op, _ in rows)) if rows else len("OPERATION")
    out = [f"{'OPERATION'.ljust(width)}  MISSING PRIVILEGE (ON PATH, WHY)"]
    out.extend(f"{op.ljust(width)}  {line}" for op, line in rows)
    return "\n".join(out)
