"""PBS namespaces in the backups audit: where each PVE storage's backups live on PBS (datastore
and namespace, from PVE's storage configs), which namespaces hold the backups that count, and
whether PBS's verify and prune jobs reach each of them.

A PBS job starts at its namespace ``ns`` (unset: the root) and goes ``max-depth`` levels down
(unset: all of them; 0: that namespace only), so a job on the root with no depth covers every
namespace, and one with depth 0 covers the root alone. A namespace that holds backups and that no
job reaches is never verified (or pruned): a finding. Jobs that could not be read leave the
namespace unknown, never covered. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from labops.backups.models import BackupCopy
from labops.models.pbs import PbsJobStatus
from labops.models.pve import PveStorageConfig

JobKind = Literal["verify", "prune"]
JOB_KINDS: tuple[JobKind, ...] = ("verify", "prune")


def normal_ns(ns: str | None) -> str:
    """A namespace path as PBS compares them: ``a/b``, the root as ``""``."""
    return "/".join(part for part in (ns or "").split("/") if part)


def ns_name(ns: str | None) -> str:
    """How a finding names a namespace: its path, ``root``, or ``unknown`` (None)."""
    if ns is None:
        return "unknown"
    return ns or "root"


class PbsLocation(BaseModel):
    """Where a PVE storage of type ``pbs`` keeps its backups."""

    storage: str
    datastore: str
    namespace: str = Field("", description="The namespace path; empty for the root.")

    @property
    def where(self) -> str:
        """``store1/home``, or ``store1`` for the root namespace."""
        return f"{self.datastore}/{self.namespace}" if self.namespace else self.datastore

    @property
    def label(self) -> str:
        """``pbs-home (store1/home)``: the storage as PVE names it, and where it is on PBS."""
        return f"{self.storage} ({self.where})"


def pbs_locations(configs: Iterable[PveStorageConfig]) -> dict[str, PbsLocation]:
    """Storage name -> its PBS datastore and namespace, for every PBS storage in PVE's configs
    (one without a datastore names no place on PBS and is left out)."""
    return {
        c.storage: PbsLocation(
            storage=c.storage, datastore=c.datastore, namespace=normal_ns(c.namespace)
        )
        for c in configs
        if c.type == "pbs" and c.datastore
    }


def location_label(storage: str, locations: Mapping[str, PbsLocation]) -> str:
    """How the report names a storage: a PBS one with its datastore and namespace."""
    found = locations.get(storage)
    return found.label if found is not None else storage


def guest_locations(
    copies: Iterable[BackupCopy], locations: Mapping[str, PbsLocation]
) -> dict[int, list[str]]:
    """Guest -> the storages holding its backups, labelled (``pbs-home (store1/home)``)."""
    held: dict[int, set[str]] = {}
    for copy in copies:
        held.setdefault(copy.vmid, set()).add(copy.storage)
    return {
        vmid: [location_label(s, locations) for s in sorted(storages)]
        for vmid, storages in held.items()
    }


def guest_places(
    copies: Iterable[BackupCopy], locations: Mapping[str, PbsLocation]
) -> dict[int, list[str]]:
    """Guest -> where on PBS its backups are (``store1``, ``store1/home``): what a sync job must
    read to copy them off-site. Backups on storages not on PBS are no PBS place."""
    held: dict[int, set[str]] = {}
    for copy in copies:
        loc = locations.get(copy.storage)
        if loc is not None:
            held.setdefault(copy.vmid, set()).add(loc.where)
    return {vmid: sorted(places) for vmid, places in held.items()}


def covers(job: PbsJobStatus, datastore: str, ns: str) -> bool:
    """Whether ``job`` (verify or prune) reaches namespace ``ns`` of ``datastore``."""
    if job.store is not None and job.store != datastore:
        return False
    start, target = normal_ns(job.ns), normal_ns(ns)
    if start == target:
        depth = 0
    elif not start or target.startswith(start + "/"):
        depth = len(target.split("/")) - (len(start.split("/")) if start else 0)
    else:
        return False
    return job.max_depth is None or depth <= job.max_depth


class NamespaceCoverage(BaseModel):
    """Whether the PBS jobs of one kind reach one namespace that holds backups."""

    kind: JobKind
    datastore: str
    namespace: str | None = Field(
        "", description="The namespace path (root: empty); None when which is unknown."
    )
    storages: list[str] = Field(default_factory=list, description="PVE storages writing there.")
    jobs: list[str] = Field(default_factory=list, description="Ids of the jobs that reach it.")
    groups: int | None = Field(None, description="Backup groups PBS lists in it (None: not read).")
    unknown: str | None = Field(None, description="Why the jobs could not be checked.")

    @property
    def ok(self) -> bool:
        return self.unknown is None and bool(self.jobs)

    @property
    def gap(self) -> str | None:
        """``PBS verify: no job covers namespace home (store1)``; None when covered, unknown, or
        PBS holds no backup group there (nothing to verify or prune yet)."""
        if self.unknown is not None or self.jobs or self.groups == 0:
            return None
        return (
            f"PBS {self.kind}: no job covers namespace {ns_name(self.namespace)} ({self.datastore})"
        )

    @property
    def unchecked(self) -> str | None:
        if self.unknown is None:
            return None
        return (
            f"PBS {self.kind} coverage of namespace {ns_name(self.namespace)} "
            f"({self.datastore}): {self.unknown}"
        )


def backup_namespaces(
    storages: Iterable[str], locations: Mapping[str, PbsLocation]
) -> dict[tuple[str, str], list[str]]:
    """(datastore, namespace) -> the PVE storages among ``storages`` (those whose backups count)
    that write there; storages not on PBS have no namespace and are left out."""
    out: dict[tuple[str, str], list[str]] = {}
    for storage in sorted(set(storages)):
        loc = locations.get(storage)
        if loc is not None:
            out.setdefault((loc.datastore, loc.namespace), []).append(storage)
    return out


JobsRead = Sequence[PbsJobStatus] | str


def namespace_coverage(
    namespaces: Mapping[tuple[str, str], Sequence[str]],
    jobs: Mapping[tuple[JobKind, str], JobsRead],
    groups: Mapping[tuple[str, str], int] | None = None,
) -> list[NamespaceCoverage]:
    """One row per namespace and job kind. ``jobs``: (kind, datastore) -> the jobs read, or why
    they could not be read (a missing entry counts as not read: unknown, never covered).
    ``groups``: (datastore, namespace) -> backup groups PBS lists there; a namespace missing from
    it was not read and counts as holding backups."""
    rows: list[NamespaceCoverage] = []
    for (datastore, ns), storages in sorted(namespaces.items()):
        for kind in JOB_KINDS:
            read = jobs.get((kind, datastore), f"{kind} jobs of {datastore} not read")
            row = NamespaceCoverage(
                kind=kind,
                datastore=datastore,
                namespace=ns,
                storages=sorted(storages),
                groups=(groups or {}).get((datastore, ns)),
            )
            if isinstance(read, str):
                row.unknown = read
            else:
                row.jobs = sorted(j.id for j in read if covers(j, datastore, ns))
            rows.append(row)
    return rows


def unknown_coverage(
    storages: Iterable[str], reason: str, datastore: str
) -> list[NamespaceCoverage]:
    """Coverage rows when PVE's storage configs could not be read: which namespaces hold the
    backups is unknown, so each job kind is unknown for the audited datastore."""
    return [
        NamespaceCoverage(
            kind=kind,
            datastore=datastore,
            namespace=None,
            storages=sorted(set(storages)),
            unknown=reason,
        )
        for kind in JOB_KINDS
    ]
