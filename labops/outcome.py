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
  code, the Prefect state and the metrics all derive from it, through :class:`RunResult`.

Each report says what it found (:class:`Found`, with a :class:`Severity`) and what it could not
do (failures, endpoints it could not reach...); :func:`judge` turns both into one
:class:`RunResult`.
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


class Severity(StrEnum):
    """How bad a finding is (``ok``: nothing found). Ordered: compare with :attr:`rank`."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class Outcome(StrEnum):
    CLEAN = "clean"
    FINDINGS = "findings"
    FAILED = "failed"

    @property
    def code(self) -> int:
        """The value of the ``labops_flow_outcome`` metric: 0 clean, 1 findings, 2 failed."""
        return _OUTCOME_CODE[self]


_OUTCOME_CODE = {Outcome.CLEAN: 0, Outcome.FINDINGS: 1, Outcome.FAILED: 2}


class FailOn(StrEnum):
    """``labops run --fail-on``: the lowest finding severity that makes the exit code 3."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    NEVER = "never"


# Exit codes of ``labops run`` (the CLI's other commands use 0, 1 and 2 the same way).
EXIT_CLEAN = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_FINDINGS = 3

# The Prefect state name of each outcome: ``Findings`` is a COMPLETED-type state with its own
# name, so the UI's run list (which shows the state's name) tells it apart from ``Completed``.
STATE_NAMES = {Outcome.CLEAN: "Completed", Outcome.FINDINGS: "Findings", Outcome.FAILED: "Failed"}


class Found(BaseModel):
    """One kind of finding of a run, e.g. ``critical: 2 guest(s) past their RPO: 101, 102``."""

    severity: Severity
    what: str
    kind: str = Field(
        "",
        exclude=True,
        description="The kind of finding, without counts ('guest(s) past "
        "their RPO'), when the finding names its entities.",
    )
    names: list[str] = Field(
        default_factory=list, exclude=True, description="The entities found (all of them)."
    )

    def line(self) -> str:
        return f"{self.severity.value}: {self.what}"

    @classmethod
    def of(cls, severity: Severity, what: str, names: Iterable[str], shown: int = 5) -> list[Found]:
        """``[Found(severity, "<n> <what>: a, b and 3 more")]``, or ``[]`` when ``names`` is
        empty: how a report lists one kind of finding."""
        names = list(names)
        if not names:
            return []
        text = f"{len(names)} {what}: {listed(names, shown)}"
        return [cls(severity=severity, what=text, kind=what, names=names)]


class RunResult(BaseModel):
    """The verdict on one run: its outcome, the highest severity it found, and why, in one line."""

    outcome: Outcome
    severity: Severity = Field(
        Severity.OK, description="Highest severity among the findings (ok: none)."
    )
    detail: str = Field("", description="One line: the failures, else the findings, else 'clean'.")
    found: list[Found] = Field(default_factory=list)
    problems: list[str] = Field(
        default_factory=list, description="What kept the run from doing its job, one per item."
    )

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.outcome]

    def exit_code(self, fail_on: FailOn = FailOn.CRITICAL) -> int:
        """0 clean (or findings below ``fail_on``), 1 failed, 3 findings at or above it."""
        if self.outcome is Outcome.FAILED:
            return EXIT_FAILED
        if fail_on is FailOn.NEVER or self.outcome is Outcome.CLEAN:
            return EXIT_CLEAN
        return EXIT_FINDINGS if self.severity.rank >= Severity(fail_on.value).rank else EXIT_CLEAN


def _shorten(items: list[str], shown: int) -> str:
    more = len(items) - shown
    return "; ".join(items[:shown]) + (f"; and {more} more" if more > 0 else "")


def judge(problems: Iterable[str], found: Iterable[Found], shown: int = 5) -> RunResult:
    """The run's result: failed when anything kept it from its job (``problems``: failures,
    things it could not check), else findings when it found anything above ``ok``, else clean.
    The highest severity is kept even for a failed run (the metrics and the JSON show it)."""
    problems = list(problems)
    found = sorted(
        (f for f in found if f.severity is not Severity.OK), key=lambda f: -f.severity.rank
    )
    severity = found[0].severity if found else Severity.OK
    if problems:
        outcome = Outcome.FAILED
        detail = f"{len(problems)} failure(s): {_shorten(problems, shown)}"
    elif found:
        outcome = Outcome.FINDINGS
        detail = _shorten([f.line() for f in found], shown)
    else:
        outcome, detail = Outcome.CLEAN, "clean"
    return RunResult(
        outcome=outcome, severity=severity, detail=detail, found=found, problems=problems
    )


def listed(items: Iterable[str], shown: int = 5) -> str:
    """``a, b, c and 4 more``: a bounded list of names for one finding's line."""
    items = list(items)
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")
