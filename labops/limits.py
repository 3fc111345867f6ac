"""Prefect global concurrency limits, created on demand so that a missing limit never silently
turns into no limit (``concurrency(strict=False)`` only warns when a limit does not exist)."""

from __future__ import annotations

import logging

log = logging.getLogger("labops.limits")


def limit_name(kind: str, key: str) -> str:
    """``labops-node-pve1``, ``labops-storage-pbs``: names must stay stable across runs."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in key.lower())
    return f"labops-{kind}-{safe}"


def ensure_limit(name: str, limit: int) -> None:
    """Create the global concurrency limit ``name`` with ``limit`` slots, or update its size."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
            )
            log.info("created concurrency limit %s=%d", name, limit)
            return
        if current.limit != limit or not current.active:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=limit, active=True)
            )
