"""Prefect global concurrency limits, created on demand so that a missing limit never silently
turns into no limit (``concurrency(strict=False)`` only warns when a limit does not exist)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from labops.errors import LabopsError
from labops.scope import PREFIX, lab_slug, scoped_name, slug_prefix

log = logging.getLogger("labops.limits")

LEASE_S = 60.0
"""Lease of a held slot (Prefect's minimum): the holder renews it while it runs; a killed run's
slot frees itself this long after its last renewal, before the zombie-run automation even marks
the run Crashed, so the re-run does not wait on it."""


def limit_name(kind: str, key: str, *, lab: str, scope: str = PREFIX) -> str:
    """``labops-homelab-node-pve1``, ``labops-homelab-storage-pbs``: one lab's limit, named the
    same in every run (``scope`` replaces the ``labops`` prefix, e.g. for tests)."""
    return scoped_name(lab, kind, key, prefix=scope)


LIMIT_KINDS = ("node", "storage", "maintenance", "drill")
"""The kinds of limit labops names (:func:`limit_name`'s ``kind``); a name of another kind is
no lab's as far as housekeeping is concerned, and never released by it."""


def _limit_of(name: str, slug: str, scope: str) -> bool:
    head = slug_prefix(slug, scope)
    kind, sep, key = name.removeprefix(head).partition("-")
    return name.startswith(head) and kind in LIMIT_KINDS and bool(sep and key)


def is_lab_limit(name: str, lab: str, other_labs: Iterable[str] = (), scope: str = PREFIX) -> bool:
    """Whether the limit ``name`` is one of ``lab``'s: ``<scope>-<lab>-<kind>-<key>``.

    A slug may contain dashes, so ``labops-home-node-x`` could also be read as the lab
    ``home-node``'s; ``other_labs`` (the slugs of labs known to share the server) settle it for
    the longest slug that fits, and a kind that is not one of :data:`LIMIT_KINDS` never fits
    (``labops-home-lab-node-x`` is not the lab ``home``'s)."""
    mine = lab_slug(lab)
    if not _limit_of(name, mine, scope):
        return False
    return not any(len(other) > len(mine) and _limit_of(name, other, scope) for other in other_labs)


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


class SlotBusy(LabopsError):
    """A slot stayed taken for as long as the run was willing to wait: it did not start."""


def maintenance_limit(lab: str) -> str:
    """``labops-<lab>-maintenance-slot``: the one slot backups and patch apply share per lab."""
    return limit_name("maintenance", "slot", lab=lab)


@contextmanager
def maintenance_slot(lab: str, wait_minutes: float, who: str, logger: Any = None) -> Iterator[None]:
    """Hold the lab's maintenance slot while changing it: backups and patch apply never change
    the lab at the same time. Waits up to ``wait_minutes`` for the other to finish, then raises
    :class:`SlotBusy` (nothing was started). The slot is a lease: a killed run frees it within
    :data:`LEASE_S`."""
    from prefect.concurrency.sync import concurrency

    name = maintenance_limit(lab)
    ensure_limit(name, 1)
    (logger or log).info(
        "%s: taking the maintenance slot %s (waits while another run holds it)", who, name
    )
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    strict=True,
                    timeout_seconds=max(1.0, wait_minutes * 60),
                    lease_duration=LEASE_S,
                )
            )
        except TimeoutError:
            raise SlotBusy(
                f"{who}: could not start: another backups or patch-apply run of {lab} kept "
                f"the maintenance slot {name} for {wait_minutes:g} min "
                "(platform.maintenance_wait_minutes)"
            ) from None
        yield
