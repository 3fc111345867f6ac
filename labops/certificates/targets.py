"""Merging targets from every discovery source: each endpoint once, its sources remembered."""

from __future__ import annotations

from collections.abc import Iterable

from labops.certificates.models import Target

_KIND_ORDER = ["ca", "node", "pbs", "service"]


def merge_targets(found: Iterable[Target]) -> tuple[list[Target], int]:
    """De-duplicate by (name, address, port); returns the targets and how many were merged.

    The merged target keeps every source, the first group set, the most specific kind (a node's
    URL also listed in the config stays a node, so renewal still applies to it) and its system's
    CA bundle.
    """
    merged: dict[str, Target] = {}
    dupes = 0
    for t in found:
        seen = merged.get(t.key)
        if seen is None:
            merged[t.key] = t
            continue
        dupes += 1
        kind = min(
            (seen.kind, t.kind),
            key=lambda k: _KIND_ORDER.index(k) if k in _KIND_ORDER else len(_KIND_ORDER),
        )
        merged[t.key] = seen.model_copy(
            update={
                "sources": tuple(dict.fromkeys(seen.sources + t.sources)),
                "group": seen.group or t.group,
                "kind": kind,
                "node": seen.node or t.node,
                "ca_bundle": seen.ca_bundle or t.ca_bundle,
            }
        )
    return list(merged.values()), dupes
