"""API payload models of the systems labops talks to (one module per system)."""

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
