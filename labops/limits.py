"""Prefect global concurrency limits, created on demand so that a missing limit never silently
turns into no limit (``concurrency(strict=False)`` only warns when a limit does not exist)."""

from __future__ import annotations

import logging

from labops.scope import PREFIX, scoped_name

log = logging.getLogger("labops.limits")


def limit_name(kind: str, key: str, *, lab: str, scope: str = PREFIX) -> str:
    """``labops-homelab-node-pve1``, ``labops-homelab-storage-pbs``: one lab's limit, named the
    same in every run (``scope`` replaces the ``labops`` prefix, e.g. for tests)."""
    return scoped_name(lab, kind, key, prefix=scope)


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
