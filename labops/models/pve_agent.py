"""Answers of PVE's QEMU guest agent endpoints (``/nodes/{node}/qemu/{vmid}/agent/...``).

PVE hands back the agent's ``guest-exec-status`` with ``out-data``/``err-data`` already decoded
from base64; booleans arrive as 0/1 (or JSON true/false), both accepted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AgentExecStarted(BaseModel):
    """``POST .../agent/exec``: the pid of the process the agent started."""

    model_config = ConfigDict(extra="ignore")

    pid: int


class AgentExecStatus(BaseModel):
    """``GET .../agent/exec-status?pid=N``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    exited: bool
    exitcode: int | None = None
    signal: int | None = None
    out_data: str = Field("", alias="out-data")
    err_data: str = Field("", alias="err-data")
    out_truncated: bool = Field(False, alias="out-truncated")
    err_truncated: bool = Field(False, alias="err-truncated")


class AgentResult(BaseModel):
    """A finished command run through the guest agent (what the task hands on)."""

    exit_code: int | None = Field(None, description="None: ended by a signal.")
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = Field(False, description="Output was cut (agent buffer or labops' limit).")
