"""Flows the warm-start tests deploy from this checkout (not labops operations)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow


@flow(name="warm-whoami")
def whoami(out: str) -> int:
    """Record which process ran the flow (its pid and its parent's), then end."""
    Path(out).write_text(f"{os.getpid()} {os.getppid()}")
    return os.getpid()


@flow(name="warm-hold")
def hold(out: str, seconds: float, until: str = "") -> None:
    """Record its pid, then wait ``seconds`` or until the file ``until`` exists."""
    Path(out).write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and Path(until).exists()):
        time.sleep(0.2)
