"""What a check found and what a run found, in one vocabulary shared by every operation.

Two notions live here, and nowhere else:

- :class:`Checked`: the state of one checked thing (a host, guest, endpoint, digest source).
  ``ok`` (checked, fine), ``found`` (checked, something to report) or ``unknown`` (could not
  check). ``unknown`` always carries a :class:`CouldNotCheck`: why, and since when. Unknown is
  never fine: it is never counted as ok, up to date or resolved.
  :class:`UnknownSince` is a flow's memory of that "since" across runs; the check columns
  (``check_columns`` / ``read_check_columns``) carry the state in every per-entity table artifact,
  which is how the security digest reads other flows' rows (never by the words of a status).
- :class:`Outcome`: what a whole run found. ``clean``, ``findings`` (it did its job and found
  something, with the highest severity) or ``failed`` (it could not do its job). The CLI exit
  code, the Prefect state and the metrics all derive from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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

    def describe(self) -> str:
        """'could not check (timeout: no answer in 120 s) since 2026-11-27 06:00 UTC'."""
        return f"could not check ({self.why}) since {self.since:%Y-%m-%d %H:%M} UTC"

    @property
    def why(self) -> str:
        """'timeout: no answer in 120 s': the kind, then the reason (unless it is the kind)."""
        reason = " ".join(self.reason.split())
        if not reason or reason == self.kind:
            return self.kind
        return f"{self.kind}: {reason.removeprefix(self.kind + ': ')}"

    def earlier(self, since: datetime | None) -> CouldNotCheck:
        """The same, dated from ``since`` when that is earlier (the first failure in a row)."""
        if since is None or since >= self.since:
            return self
        return self.model_copy(update={"since": since})


class UnknownSince(BaseModel):
    """What a flow remembers between runs: since when each entity could not be checked.

    ``since`` survives across runs: an entity that fails again keeps the time of its first failed
    check; one that was checked (fine or with findings) is forgotten; one that was not looked at
    this run (a partial run, a skipped host) keeps its entry.
    """

    since: dict[str, datetime] = Field(default_factory=dict)

    def carry(self, unknown: Mapping[str, datetime], checked: Iterable[str]) -> UnknownSince:
        """The next memory, from this run's unknown entities (with this run's time) and the
        entities this run checked."""
        done = set(checked)
        kept = {k: t for k, t in self.since.items() if k not in done and k not in unknown}
        now = {k: min(t, self.since.get(k, t)) for k, t in unknown.items()}
        return UnknownSince(since={**kept, **now})


# -- the check columns of a table artifact ---------------------------------------------------
# Every per-entity table (patch hosts, backup guests, certificate endpoints) carries these three
# columns; the security digest reads them, never the words of a status column.
CHECK_COLUMN = "check"
WHY_COLUMN = "could not check"
SINCE_COLUMN = "unknown since"
NOT_CHECKED = "not checked"


def check_columns(check: Checked | None, unknown: CouldNotCheck | None) -> dict[str, str]:
    """The three columns of one row; ``check`` None is an entity left out on purpose."""
    if check is None:
        return {CHECK_COLUMN: NOT_CHECKED, WHY_COLUMN: "", SINCE_COLUMN: ""}
    if check is Checked.UNKNOWN and unknown is not None:
        return {
            CHECK_COLUMN: check.value,
            WHY_COLUMN: unknown.why,
            SINCE_COLUMN: unknown.since.isoformat(timespec="seconds"),
        }
    return {CHECK_COLUMN: check.value, WHY_COLUMN: "", SINCE_COLUMN: ""}


class RowCheck(BaseModel):
    """What a table row says about its entity (read back by the digest)."""

    check: Checked | None = Field(..., description="None: not checked on purpose (skipped).")
    unknown: CouldNotCheck | None = None


def read_check_columns(row: Mapping[str, Any], fallback_since: datetime) -> RowCheck:
    """The check of a table row. A row without the columns, or with a value this version does
    not know, could not be judged: it is unknown, never fine."""
    value = str(row.get(CHECK_COLUMN, "")).strip().lower()
    if value == NOT_CHECKED:
        return RowCheck(check=None)
    if value in (Checked.OK.value, Checked.FOUND.value):
        return RowCheck(check=Checked(value))
    if value == Checked.UNKNOWN.value:
        why = str(row.get(WHY_COLUMN, "")).strip() or "error"
        kind, _, reason = why.partition(":")
        return RowCheck(
            check=Checked.UNKNOWN,
            unknown=CouldNotCheck(
                reason=reason.strip() or kind.strip(),
                kind=kind.strip() or "error",
                since=_parse_since(row.get(SINCE_COLUMN)) or fallback_since,
            ),
        )
    shown = value[:40] or "missing"
    return RowCheck(
        check=Checked.UNKNOWN,
        unknown=CouldNotCheck(
            reason=f"the row's check column is {shown!r} (a report of another labops version?)",
            kind="error",
            since=fallback_since,
        ),
    )


def _parse_since(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def kind_of(exc: BaseException) -> str:
    """The could-not-check kind of one of labops' errors (``error`` for anything else)."""
    from labops import errors

    if isinstance(exc, errors.AuthFailed):
        return "auth-failed"
    if isinstance(exc, errors.HostKeyRejected):
        return "host-key-rejected"
    if isinstance(exc, errors.TlsRejected):
        return "tls"
    if isinstance(exc, errors.CommandTimeout):
        return "timeout"
    if isinstance(exc, errors.Unreachable):
        return "timeout" if "timed out" in exc.message else "unreachable"
    return "error"


class Outcome(StrEnum):
    CLEAN = "clean"
    FINDINGS = "findings"
    FAILED = "failed"
