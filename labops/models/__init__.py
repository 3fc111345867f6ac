"""API payloads of the systems labops talks to: one module per system (``pve``, ``pbs``), plus
the PVE net property string (``pve_net``) and Traefik routers (``traefik``)."""

from labops.models.pbs import PbsDatastore, PbsSnapshot, PbsTaskStatus, PbsUpid, PbsVersion
from labops.models.pve import (
    PveGuest,
    PveNode,
    PveTaskStatus,
    PveUpid,
    PveVersion,
    TaskStatus,
    is_upid,
)

__all__ = [
    "PbsDatastore",
    "PbsSnapshot",
    "PbsTaskStatus",
    "PbsUpid",
    "PbsVersion",
    "PveGuest",
    "PveNode",
    "PveTaskStatus",
    "PveUpid",
    "PveVersion",
    "TaskStatus",
    "is_upid",
]
