"""Which guests Traefik sends traffic to ("exposed"), and through which router. Pure: no I/O.

A guest is exposed when an enabled router routes to it: the router's service is named after the
guest (``jellyfin`` or ``jellyfin@file``), or one of its rule's host names is the guest's name in
the lab's domain (``Host(`jellyfin.lab.internal`)``). Each exposure is shown as the router, its
rule and its entrypoints, so the operator sees why.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from labops.models.traefik import TraefikRouter, rule_hosts


class Exposure(BaseModel):
    router: str
    rule: str
    entry_points: list[str] = Field(default_factory=list)

    def line(self) -> str:
        via = ",".join(self.entry_points) or "default entrypoints"
        return f"{self.router}: {self.rule} @ {via}"


def exposures(routers: Iterable[TraefikRouter], hosts: Iterable[str]) -> dict[str, list[Exposure]]:
    """host -> the enabled routers sending traffic to it (hosts without one are left out)."""
    wanted = {h.lower(): h for h in hosts}
    out: dict[str, list[Exposure]] = {}
    for r in routers:
        if r.status == "disabled":
            continue
        names = {(r.service or "").split("@")[0].lower(), r.name.split("@")[0].lower()}
        names |= {h.split(".")[0] for h in rule_hosts(r.rule)}
        for name in sorted(names & set(wanted)):
            out.setdefault(wanted[name], []).append(
                Exposure(router=r.name, rule=r.rule, entry_points=list(r.entry_points))
            )
    return out
