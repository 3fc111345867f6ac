"""What a check found and what a run found, in one vocabulary shared by every operation.

Two notions live here, and nowhere else:

- :class:`Checked`: the state of one checked thing (a host, guest, endpoint, digest source).
  ``ok`` (checked, fine), ``found`` (checked, something to report) or ``unknown`` (could not
  check). ``unknown`` always carries a :class:`CouldNotCheck`: why, and since when. Unknown is
  never fine: it is never counted as ok, up to date or resolved.
- :class:`Outcome`: what a whole run found. ``clean``, ``findings`` (it did its job and found
  something, with the highest severity) or ``failed`` (it could not do its job). The CLI exit
  code, the Prefect state and the metrics all derive from it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Checked(StrEnum):
    OK = "ok"
    FOUND = "found"
    UNKNOWN = "unknown"


class CouldNotCheck(BaseModel):
    """Why something could not be checked, and since when (the first failed check in a row)."""

    reason: str = Field(..., description="One line: 'unreachable: connection refused' ...")
    kind: str = Field(
        "error",
        description="unreachable, timeout, auth-failed, host-key-rejected, tls, error, ...",
    )
    since: datetime = Field(..., description="When the first check that failed ran.")


class Outcome(StrEnum):
    CLEAN = "clean"
    FINDINGS = "findings"
    FAILED = "failed"
