"""How each source's answer is recorded in the digest: its time budget, why it failed, what it
found (pure; the flow starts the collectors and waits for them)."""

from __future__ import annotations

from labops.digest.findings import Collected
from labops.digest.report import SourceStatus
from labops.errors import ApiError, AuthFailed, LabopsError, Unreachable
from labops.outcome import kind_of


def fit_tries(timeout_s: float, attempts: int, budget_s: float) -> tuple[float, int]:
    """A retry policy (``timeout_s`` per try, ``attempts``) fitted into a source's budget.

    A task thread cannot be interrupted, and the flow waits for it before it ends; so the tries
    themselves must fit: at least one retry when the policy has retries (a transient 500), and no
    more tries than the budget holds (a stalled source).
    """
    per_try = min(timeout_s, budget_s if attempts == 1 else budget_s / 2)
    return per_try, max(1, min(attempts, int(budget_s // per_try)))


def describe(exc: BaseException) -> str:
    """Why a source gave no answer, in the digest's words."""
    if isinstance(exc, Unreachable):
        return f"unreachable ({exc.message})"
    if isinstance(exc, AuthFailed):
        return f"refused the credentials ({exc.message})"
    if isinstance(exc, ApiError):
        return f"answered with an error ({exc.message})"
    if isinstance(exc, LabopsError):
        return f"failed ({exc})"
    return f"failed ({type(exc).__name__}: {str(exc)[:200]})"


def skipped(status: SourceStatus, why: str) -> None:
    """Not asked: nothing to check in the policy, or the system is not configured."""
    status.state, status.detail = "skipped", why


def failed(status: SourceStatus, error: BaseException, budget_s: float | None = None) -> None:
    """The source failed; a request that timed out is said the same way as the budget running
    out (the request's own timeout is the budget)."""
    status.state, status.detail, status.kind = "failed", describe(error), kind_of(error)
    if budget_s is not None and isinstance(error, Unreachable) and "timed out" in error.message:
        status.detail = f"did not answer within {budget_s:g} s"


def timed_out(status: SourceStatus, budget_s: float) -> None:
    """The source was still working when its budget ran out."""
    status.state, status.detail = "failed", f"did not answer within {budget_s:g} s"
    status.kind = "timeout"


def answered(status: SourceStatus, collected: Collected) -> Collected:
    """The source answered: its findings, each labelled with the collector that found it."""
    collected.findings = [
        f.model_copy(update={"collector": status.name}) for f in collected.findings
    ]
    status.findings = len(collected.findings)
    status.detail = collected.note
    return collected
