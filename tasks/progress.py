"""How far a long run has got: a Prefect progress artifact in the UI and a short log line.

``Progress(lab, operation, total, what)`` creates the artifact once, keyed by lab and operation
(``labops-<lab>-<operation>-progress``: the same key run to run, never another lab's);
``advance()`` counts what is done and updates it ("12 of 40 guests"). The same count goes to the
run's log as ``progress: 12/40 guests`` at most once per tenth of the total (and at the end), so
``labops run`` shows it in the terminal and the logs stay short.

Progress is only shown, never relied on: an artifact API that fails is logged once and ignored,
and outside a flow run (a test calling ``.fn``, a script) nothing is created or logged.
Guests are backed up in threads, so ``advance`` may be called from many threads at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sized
from uuid import UUID

from labops.redact import redact
from labops.scope import artifact_key

# Updates are sent when the whole percentage changes (and at the end): a run of 1,000 guests
# makes at most ~100 artifact updates, not 1,000.
_STEPS = 100
_LOG_STEPS = 10


def progress_key(lab: str, operation: str) -> str:
    """The artifact key of an operation's progress in one lab."""
    return artifact_key(lab, operation, "progress")


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class Progress:
    """``done`` of ``total`` ``what`` (guests, hosts, drill steps, endpoints) of one run.
    Changes nothing in the lab; writes one artifact to the Prefect server."""

    def __init__(self, lab: str, operation: str, total: int, what: str) -> None:
        self.key = progress_key(lab, operation)
        self.total = max(0, total)
        self.what = what
        self.done = 0
        self.artifact_id: UUID | None = None
        self._lock = threading.Lock()
        self._sent_step = -1
        self._logged_step = -1
        self._active = _in_flow_run()
        self._broken = False
        if self._active:
            with self._lock:
                self._send(create=True, note="")

    def percent(self) -> float:
        """0..100; a run with nothing to do is done."""
        if self.total == 0:
            return 100.0
        return min(100.0, 100.0 * self.done / self.total)

    def description(self, note: str = "") -> str:
        text = f"{self.done} of {self.total} {self.what}"
        return redact(f"{text} ({note})" if note else text)

    def advance(self, n: int = 1, note: str = "") -> None:
        """``n`` more are done (never past the total); ``note`` says which, in the UI's
        description and the log line. Never raises."""
        with self._lock:
            self.done = min(self.total, self.done + max(0, n))
            if self._active:
                self._send(create=False, note=note)

    def saw(self, items: Sized) -> None:
        """``len(items)`` more are done: a callback for code that hands over what finished."""
        self.advance(len(items))

    def _step(self, steps: int) -> int:
        return steps if self.total == 0 else self.done * steps // self.total

    def _send(self, *, create: bool, note: str) -> None:
        """Create or update the artifact and log a line when their step changed (lock held)."""
        step = self._step(_STEPS)
        if create or step != self._sent_step:
            self._sent_step = step
            self._write(create, note)
        log_step = self._step(_LOG_STEPS)
        if create:  # "0 of N" needs no line of its own: the run's plan already said N
            self._logged_step = log_step
        elif log_step != self._logged_step:
            self._logged_step = log_step
            line = f"progress: {self.done}/{self.total} {self.what}"
            self._log(f"{line} ({note})" if note else line)

    def _write(self, create: bool, note: str) -> None:
        if self._broken:
            return
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if create:
                created = create_progress_artifact(
                    self.percent(), key=self.key, description=self.description(note)
                )
                # a coroutine only in an async flow, which labops' flows are not
                if not isinstance(created, UUID):
                    raise TypeError(f"create_progress_artifact returned {created!r}")
                self.artifact_id = created
            elif self.artifact_id is not None:
                update_progress_artifact(
                    self.artifact_id, self.percent(), description=self.description(note)
                )
        except Exception as exc:  # progress is shown, never relied on: the run goes on
            # No more tries this run: the client's own retries would hold every backup thread
            # behind this lock for each guest while the API is down.
            self._broken = True
            self._log(f"progress not shown in the UI: {type(exc).__name__}: {exc}", logging.WARNING)

    def _log(self, message: str, level: int = logging.INFO) -> None:
        try:
            from prefect import get_run_logger

            get_run_logger().log(level, "%s", redact(message))
        except Exception:  # no run logger (the context went away): nothing to say it to
            logging.getLogger("labops.progress").log(level, "%s", redact(message))
