"""vzdump outcomes, pure: a task's exit status, a locked guest, why a guest's backup failed.

vzdump writes ``ERROR: Backup of VM <vmid> failed - <reason>`` for each failed guest and ends
the task with ``TASK ERROR: job errors``; the exit status alone never says why.
"""

from __future__ import annotations

import re

_GUEST_ERROR = re.compile(r"^ERROR: Backup of VM (\d+) failed - (.+)$")


def vzdump_failure(lines: list[str], vmid: int) -> str | None:
    """The reason ``vmid``'s backup failed, from the task log; None when the log names none.

    Falls back to the first other ``ERROR:`` line (a job-level error such as a storage that
    cannot be activated).
    """
    other: str | None = None
    for line in lines:
        match = _GUEST_ERROR.match(line.strip())
        if match and int(match.group(1)) == vmid:
            return match.group(2).strip()
        if other is None and line.startswith("ERROR:"):
            other = line.removeprefix("ERROR:").strip()
    return other


def classify_exitstatus(exitstatus: str) -> str:
    """``OK`` -> ok, ``WARNINGS: n`` -> warning, anything else -> error (as PVE classifies)."""
    text = exitstatus.strip()
    if text == "OK":
        return "ok"
    if text.startswith("WARNINGS"):
        return "warning"
    return "error"


_LOCK = re.compile(r"\bis locked\b|\blocked \(|can't lock file|got timeout|lock.*timeout", re.I)


def is_lock_error(text: str) -> bool:
    """True for the messages PVE gives when a guest is locked by another operation."""
    return bool(_LOCK.search(text or ""))
