"""The per-node and per-storage backup limits, and where they are enforced.

``lanes`` (pure) packs the guests to back up into ``per_node`` sequential lanes per node;
``run_backups`` runs all lanes at once in threads that keep the flow's run context, and holds each
lane's node and storage slots (Prefect global concurrency limits, :func:`labops.limits.limit_name`)
around its guests. Every planned guest gets an outcome, also when its lane could not run.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import groupby
from typing import Any, Protocol

from labops.backups.models import BackupOutcome, GuestPlan, PlanAction
from labops.backups.vzdump_job import VzdumpSettings
from labops.config.policies.backups import BackupPolicy
from labops.limits import ensure_limit, limit_name


def lanes(
    plans: Sequence[GuestPlan],
    per_node: int,
    weight: Callable[[GuestPlan], float] | None = None,
) -> list[list[GuestPlan]]:
    """Split the guests to back up into ``per_node`` sequential lanes per node.

    Each lane runs one backup after another, so a node never waits for a concurrency slot its
    own lane holds. Heaviest guests go first onto the lightest lane (LPT), which keeps a node's
    lanes even; lanes of different nodes are interleaved so every node starts at once.
    """
    weigh = weight or (lambda p: float(p.last_good.size) if p.last_good else 0.0)
    per_node_plans: dict[str, list[GuestPlan]] = defaultdict(list)
    for plan in plans:
        if plan.action is PlanAction.BACKUP:
            per_node_plans[plan.guest.node].append(plan)
    node_lanes: list[list[list[GuestPlan]]] = []
    for node in sorted(per_node_plans, key=lambda n: -sum(weigh(p) for p in per_node_plans[n])):
        buckets: list[list[GuestPlan]] = [[] for _ in range(max(1, per_node))]
        loads = [0.0] * len(buckets)
        for plan in sorted(per_node_plans[node], key=lambda p: (-weigh(p), p.guest.vmid)):
            i = loads.index(min(loads))
            buckets[i].append(plan)
            loads[i] += weigh(plan) or 1.0
        # Guests of one storage run back to back, so a lane takes each storage's slot once.
        node_lanes.append(
            [sorted(b, key=lambda p: p.policy.storage if p.policy else "") for b in buckets if b]
        )
    out: list[list[GuestPlan]] = []
    depth = max((len(n) for n in node_lanes), default=0)
    for i in range(depth):
        out.extend(n[i] for n in node_lanes if i < len(n))
    return out


class Pending(Protocol):
    """A submitted backup task (a Prefect future)."""

    def result(self, timeout: float | None = ..., raise_on_failure: bool = ...) -> Any: ...


Tell = Callable[[BackupOutcome], None]
Submit = Callable[[list[tuple[GuestPlan, VzdumpSettings]], Tell], Pending]
"""Submit one task that backs up a lane's guests of one storage in order, telling each outcome."""
Hold = Callable[[list[str]], AbstractContextManager[object]]
Known = Callable[[list[BackupOutcome]], None]
"""Told the outcomes of guests as they become known, from the lane's thread."""


def slot(kind: str, key: str, policy: BackupPolicy, lab: str) -> str:
    """The concurrency-limit name of a node or storage of this lab, in the policy's scope."""
    return limit_name(kind, key, lab=lab, scope=policy.limits_scope)


def settings_for(plan: GuestPlan, policy: BackupPolicy, listed_at: float) -> VzdumpSettings:
    """How the vzdump of one planned guest runs (its tier's storage and mode, the policy's
    waits)."""
    assert plan.policy is not None
    return VzdumpSettings(
        storage=plan.policy.storage,
        mode=plan.policy.mode,
        compress=policy.compress,
        notes_template=policy.notes_template or None,
        protected=policy.protected,
        task_timeout_s=policy.task_timeout,
        poll_s=policy.poll_interval,
        lock_wait_s=policy.lock_wait,
        lock_retry_s=policy.lock_retry,
        listed_at=listed_at,
        start_attempts=policy.start_attempts,
        lost_answer_wait_s=policy.lost_answer_wait,
    )


def not_run(plans: list[GuestPlan], reason: str) -> dict[int, BackupOutcome]:
    """A failed outcome for each of ``plans`` that did not run, saying why."""
    return {
        p.guest.vmid: BackupOutcome(vmid=p.guest.vmid, status="failed", reason=reason)
        for p in plans
    }


def run_backups(
    todo: list[GuestPlan],
    policy: BackupPolicy,
    lab: str,
    listed_at: float,
    submit: Submit,
    known: Known | None = None,
) -> dict[int, BackupOutcome]:
    """Back up ``todo`` (CHANGES THE LAB through ``submit``), at most ``per_node_limit``
    backups per node and ``per_storage_limit`` per storage at once, across runs of this lab.
    ``known`` is told each guest's outcome as soon as it is known (from the lanes' threads)."""
    for node in {p.guest.node for p in todo}:
        ensure_limit(slot("node", node, policy, lab), policy.per_node_limit)
    for st in {p.policy.storage for p in todo if p.policy}:
        ensure_limit(slot("storage", st, policy, lab), policy.per_storage_limit)
    slot_wait = policy.slot_wait or policy.task_timeout

    def hold(names: list[str]) -> AbstractContextManager[object]:
        from prefect.concurrency.sync import concurrency

        return concurrency(
            names,
            occupy=1,
            strict=True,
            lease_duration=max(60.0, policy.lease),
            timeout_seconds=slot_wait,
        )

    return run_lanes(
        lanes(todo, policy.per_node_limit),
        lambda group, tell: submit([(p, settings_for(p, policy, listed_at)) for p in group], tell),
        hold,
        lambda kind, key: slot(kind, key, policy, lab),
        known,
    )


def run_lanes(
    plan_lanes: list[list[GuestPlan]],
    submit: Callable[[list[GuestPlan], Tell], Pending],
    hold: Hold,
    slot_of: Callable[[str, str], str],
    known: Known | None = None,
) -> dict[int, BackupOutcome]:
    """Run each lane's backups one after another, all lanes at once: one submitted task per
    lane and storage backs its guests up in order and tells each outcome as it is known.

    A lane takes its node's and its storage's concurrency slots together (one ``hold``) and
    keeps them over all its guests of that storage. Taking slots per guest instead costs a
    Prefect API round trip each time, measured at ~2 s against a SQLite-backed server busy
    recording task events, which would double a nightly run. Slots are leases: a killed flow
    frees them when the lease ends; a crashed task frees nothing, its lane goes on. A lane
    holds one (node, storage) pair at a time, so lanes never wait on each other in a cycle.
    """
    outcomes: dict[int, BackupOutcome] = {}
    guard = threading.Lock()

    def record(outcome: BackupOutcome) -> None:
        with guard:
            if outcome.vmid in outcomes:  # told once, and returned again at the end
                return
            outcomes[outcome.vmid] = outcome
        if known is not None:
            known([outcome])

    def run(lane: list[GuestPlan]) -> None:
        try:
            for storage, grouped in groupby(
                lane, key=lambda p: p.policy.storage if p.policy else ""
            ):
                group = list(grouped)
                with hold([slot_of("node", lane[0].guest.node), slot_of("storage", storage)]):
                    result = submit(group, record).result(raise_on_failure=False)
                told = result if isinstance(result, list) else []
                for outcome in told:
                    if isinstance(outcome, BackupOutcome):
                        record(outcome)
                with guard:
                    left = [p for p in group if p.guest.vmid not in outcomes]
                for plan in left:  # the task crashed before this guest's outcome was known
                    record(
                        BackupOutcome(
                            vmid=plan.guest.vmid,
                            status="failed",
                            reason=f"backup task crashed: {result}",
                        )
                    )
        except Exception as exc:  # no slot in time, or the Prefect API gone
            with guard:
                left = [p for p in lane if p.guest.vmid not in outcomes]
            missed = not_run(left, f"not run: {type(exc).__name__}: {exc}")
            with guard:
                outcomes.update(missed)
            if known is not None and missed:
                known(list(missed.values()))

    # Each thread runs in a copy of the flow's context, so its task submissions belong to it.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run, lane), daemon=True)
        for lane in plan_lanes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes
