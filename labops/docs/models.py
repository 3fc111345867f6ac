"""Claims found in the docs, the live facts they are checked against, and the verdicts."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Bound(BaseModel):
    """A documented number: exactly, at least ("20+"), at most ("up to 8") or about ("~650k")."""

    value: int
    op: Literal["eq", "ge", "le", "approx"] = "eq"
    tolerance: float = Field(0.1, description="Relative tolerance of 'approx'.")

    def holds(self, live: int) -> bool:
        if self.op == "ge":
            return live >= self.value
        if self.op == "le":
            return live <= self.value
        if self.op == "approx":
            return abs(live - self.value) <= max(1.0, self.value * self.tolerance)
        return live == self.value

    def describe(self) -> str:
        return {"eq": "", "ge": ">= ", "le": "<= ", "approx": "~"}[self.op] + str(self.value)


class Span(BaseModel):
    """Where a value stands: file, 1-based line, and the character range within that line."""

    file: str
    line: int
    start: int
    end: int


class ClaimKind(StrEnum):
    COUNT = "count"
    GUEST = "guest"
    IP = "ip"
    DNS = "dns"
    LINK = "link"
    VERSION = "version"
    NODE = "node"  # a node's address and role ("pve2 | 192.168.1.12 | apps")
    # What a runbook says about one host, checked on it read-only (labops.docs.runbook).
    PATH = "path"
    INTERFACE = "interface"
    UNIT = "unit"
    COMMAND = "command"
    PORT = "port"
    PROSE = "prose"  # proposed by the LLM pass from free prose: listed, never applied


class Claim(BaseModel):
    """One checkable statement of the docs."""

    kind: ClaimKind
    file: str
    line: int
    text: str = Field(..., description="The sentence or line it was read from.")
    subject: str = Field(..., description="What it is about: 'lxc', 'CT 110', '*.lab.internal'.")
    fact: str | None = Field(
        None, description="Live fact key it maps to (None: no mapping known -> unverifiable)."
    )
    bound: Bound | None = None
    vmid: int | None = None
    name: str | None = None
    node: str | None = None
    ip: str | None = None
    value: str | None = Field(None, description="Documented value of non-numeric claims.")
    spans: dict[str, Span] = Field(
        default_factory=dict, description="Where each documented value stands, for patching."
    )
    source: Literal["extractor", "pinned", "llm"] = "extractor"
    note: str | None = Field(
        None, description="Why a claim without a live fact cannot be checked, when known."
    )


class LiveGuest(BaseModel):
    vmid: int
    name: str
    node: str
    type: Literal["lxc", "qemu"]
    status: str = "running"
    template: bool = False
    tags: list[str] = Field(default_factory=list)
    ips: list[str] = Field(default_factory=list)


class LiveRouter(BaseModel):
    name: str
    hosts: list[str]
    tls: bool


class LiveRecord(BaseModel):
    name: str
    type: str
    value: str


class HostProbe(BaseModel):
    """What one host answered to the checks of its claims (``error``: it could not be asked)."""

    host: str
    error: str | None = None
    paths: dict[str, bool] = Field(default_factory=dict)
    units: dict[str, bool] = Field(default_factory=dict)
    commands: dict[str, bool] = Field(default_factory=dict)
    links: list[str] | None = None
    ports: list[int] | None = None


class LiveFacts(BaseModel):
    """What the live sources say; None = that source is not configured or failed."""

    nodes: list[str] | None = None
    node_ips: dict[str, str] | None = Field(
        None, description="Node -> its cluster address (PVE /cluster/status)."
    )
    guests: list[LiveGuest] | None = None
    pve_version: str | None = None
    routers: list[LiveRouter] | None = None
    dns_records: list[LiveRecord] | None = None
    beszel_systems: list[str] | None = None
    scrape_targets: list[str] | None = None
    wazuh_agents: list[str] | None = None
    hosts: dict[str, HostProbe] | None = Field(
        None, description="Host reference -> its HostProbe (runbook claims checked on it)."
    )
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="Source -> why its facts are missing."
    )

    def count(self, fact: str) -> int | None:
        """The live number behind a count fact key, or None when its source is absent."""
        guests = [g for g in self.guests or [] if not g.template]
        if fact.startswith(("tag:", "node:")):
            return self._scoped_count(fact, guests)
        table: dict[str, int | None] = {
            "nodes": len(self.nodes) if self.nodes is not None else None,
            "lxc": sum(g.type == "lxc" for g in guests) if self.guests is not None else None,
            "qemu": sum(g.type == "qemu" for g in guests) if self.guests is not None else None,
            "guests": len(guests) if self.guests is not None else None,
            "routers": len(self.routers) if self.routers is not None else None,
            "https_services": (
                len({h for r in self.routers if r.tls for h in r.hosts})
                if self.routers is not None
                else None
            ),
            "beszel_agents": (
                len(self.beszel_systems) if self.beszel_systems is not None else None
            ),
            "scrape_targets": (
                len(self.scrape_targets) if self.scrape_targets is not None else None
            ),
            "wazuh_agents": len(self.wazuh_agents) if self.wazuh_agents is not None else None,
        }
        return table.get(fact)

    def _scoped_count(self, fact: str, guests: list[LiveGuest]) -> int | None:
        """``tag:<tag>[:<kind>]`` (guests carrying a tag) or ``node:<node>:<kind>`` (guests on a
        node); ``<kind>`` is lxc, qemu or guests. A node the lab does not have counts none."""
        if self.guests is None:
            return None
        scope, name, kind = ([*fact.split(":"), "guests"])[:3]
        if scope == "tag":
            chosen = [g for g in guests if name in g.tags]
        else:
            chosen = [g for g in guests if g.node == name]
        return sum(kind == "guests" or g.type == kind for g in chosen)


class Status(StrEnum):
    MATCH = "match"
    DRIFTED = "drifted"
    UNVERIFIABLE = "unverifiable"


class Verdict(BaseModel):
    claim: Claim
    status: Status
    documented: str
    live: str | None = None
    source: str | None = None
    reason: str = ""
    replacements: dict[str, str] = Field(
        default_factory=dict, description="Span key -> live text, for the proposed patch."
    )


class Undocumented(BaseModel):
    """A live thing no claim mentions (a new container, a new router)."""

    kind: str
    entity: str
    source: str
