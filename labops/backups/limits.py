"""The per-node backup limit, pure: how the guests to back up are packed into sequential lanes,
``per_node`` lanes per node (the flow runs each lane one backup after another under the node's
and the storage's concurrency slots, :func:`labops.limits.limit_name`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from labops.backups.models import GuestPlan, PlanAction


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
