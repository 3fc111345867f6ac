"""Each claim against the live facts: match, drifted (with the live value) or unverifiable."""

from __future__ import annotations

import re

from labops.docs.models import (
    Claim,
    ClaimKind,
    LiveFacts,
    LiveGuest,
    Status,
    Undocumented,
    Verdict,
)
from labops.docs.runbook import HOST_KINDS, judge_host_claim

_SOURCE = {
    "nodes": "proxmox",
    "lxc": "proxmox",
    "qemu": "proxmox",
    "guests": "proxmox",
    "pve_version": "proxmox",
    "https_services": "traefik",
    "routers": "traefik",
    "dns_records": "technitium",
    "beszel_agents": "beszel",
    "scrape_targets": "victoriametrics",
    "wazuh_agents": "wazuh_api",
}


def compare(claims: list[Claim], live: LiveFacts) -> list[Verdict]:
    """One verdict per claim, in the claims' order."""
    return [_judge(claim, live) for claim in claims]


def _unverifiable(claim: Claim, reason: str) -> Verdict:
    return Verdict(
        claim=claim, status=Status.UNVERIFIABLE, documented=_documented(claim), reason=reason
    )


def _documented(claim: Claim) -> str:
    if claim.bound is not None:
        return claim.bound.describe()
    if claim.kind == ClaimKind.GUEST:
        parts = [
            claim.subject,
            claim.name or "",
            f"on {claim.node}" if claim.node else "",
            claim.ip or "",
        ]
        return " ".join(p for p in parts if p)
    return claim.value or claim.ip or claim.subject


def _judge(claim: Claim, live: LiveFacts) -> Verdict:
    if claim.source == "llm":
        return _unverifiable(claim, "proposed by the LLM pass: pin it in docs.claims to check it")
    if claim.fact is None:
        return _unverifiable(
            claim, claim.note or "no live source for this kind of claim (pin it in docs.claims)"
        )
    if claim.kind in HOST_KINDS:
        return _judge_host(claim, live)
    scoped = claim.fact.startswith(("tag:", "node:"))  # guests per tag or node
    source = _SOURCE.get(claim.fact, "proxmox" if scoped else claim.fact)
    if source in live.unavailable:
        return _unverifiable(claim, f"{source}: {live.unavailable[source]}")
    if claim.kind == ClaimKind.COUNT:
        return _judge_count(claim, live, source)
    if claim.kind == ClaimKind.GUEST:
        return _judge_guest(claim, live)
    if claim.kind == ClaimKind.IP:
        return _judge_ip_owner(claim, live)
    if claim.kind == ClaimKind.NODE:
        return _judge_node(claim, live)
    if claim.kind == ClaimKind.DNS:
        return _judge_dns(claim, live)
    if claim.kind == ClaimKind.VERSION:
        if live.pve_version is None:
            return _unverifiable(claim, "proxmox: not configured")
        ok = live.pve_version.startswith(claim.value or "")
        documented = claim.value or ""
        major_minor = ".".join(live.pve_version.split(".")[: documented.count(".") + 1])
        return Verdict(
            claim=claim,
            status=Status.MATCH if ok else Status.DRIFTED,
            documented=documented,
            live=live.pve_version,
            source="proxmox",
            replacements={} if ok else {"version": major_minor},
        )
    return _unverifiable(claim, "no live source")


def _judge_host(claim: Claim, live: LiveFacts) -> Verdict:
    if "ssh" in live.unavailable:
        return _unverifiable(claim, f"ssh: {live.unavailable['ssh']}")
    status, found, reason = judge_host_claim(claim, (live.hosts or {}).get(claim.name or ""))
    return Verdict(
        claim=claim,
        status=Status(status),
        documented=claim.value or "",
        live=found or None,
        source="ssh",
        reason=reason,
    )


def _judge_count(claim: Claim, live: LiveFacts, source: str) -> Verdict:
    assert claim.fact is not None and claim.bound is not None
    value = live.count(claim.fact)
    if value is None:
        return _unverifiable(claim, f"{source}: not configured")
    ok = claim.bound.holds(value)
    replacement = {} if ok else {"count": _format_like(claim, value)}
    return Verdict(
        claim=claim,
        status=Status.MATCH if ok else Status.DRIFTED,
        documented=claim.bound.describe(),
        live=str(value),
        source=source,
        replacements=replacement,
    )


def _format_like(claim: Claim, value: int) -> str:
    """The live number written the way the doc wrote it ("650k" stays in thousands)."""
    written = claim.value or ""
    if re.search(r"\d[kK]\b", written):
        return f"{round(value / 1000)}k"
    if re.search(r"\dM\b", written):
        return f"{round(value / 1_000_000)}M"
    if "," in written:
        return f"{value:,}"
    return str(value)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _same_name(documented: str, live: str) -> bool:
    a, b = _norm(documented), _norm(live)
    return bool(a) and (a == b or a in b or b in a)


def _judge_guest(claim: Claim, live: LiveFacts) -> Verdict:
    if live.guests is None:
        return _unverifiable(claim, "proxmox: not configured")
    guest = next((g for g in live.guests if g.vmid == claim.vmid), None)
    documented = _documented(claim)
    if guest is None:
        return Verdict(
            claim=claim,
            status=Status.DRIFTED,
            documented=documented,
            live="no such guest",
            source="proxmox",
            reason=f"{claim.subject} does not exist in the live lab",
        )
    problems: list[str] = []
    replacements: dict[str, str] = {}
    if claim.name and not _same_name(claim.name, guest.name):
        problems.append(f"name is {guest.name}")
    if claim.node and claim.node != guest.node:
        problems.append(f"runs on {guest.node}")
        replacements["node"] = guest.node
    if claim.ip and guest.ips and claim.ip not in guest.ips:
        problems.append(f"IP is {guest.ips[0]}")
        replacements["ip"] = guest.ips[0]
    live_text = " ".join(
        p for p in [claim.subject, guest.name, f"on {guest.node}", ",".join(guest.ips)] if p
    )
    return Verdict(
        claim=claim,
        status=Status.DRIFTED if problems else Status.MATCH,
        documented=documented,
        live=live_text,
        source="proxmox",
        reason="; ".join(problems),
        replacements=replacements,
    )


def _find_by_name(guests: list[LiveGuest], name: str) -> LiveGuest | None:
    exact = [g for g in guests if _norm(g.name) == _norm(name)]
    if exact:
        return exact[0]
    loose = [g for g in guests if _same_name(name, g.name)]
    return loose[0] if len(loose) == 1 else None


def _judge_ip_owner(claim: Claim, live: LiveFacts) -> Verdict:
    if live.guests is None:
        return _unverifiable(claim, "proxmox: not configured")
    guest = _find_by_name(live.guests, claim.name or "")
    if guest is None:
        return _unverifiable(claim, f"no guest named like {claim.name!r}")
    ok = claim.ip in guest.ips
    return Verdict(
        claim=claim,
        status=Status.MATCH if ok else Status.DRIFTED,
        documented=claim.ip or "",
        live=",".join(guest.ips) or "no IP",
        source="proxmox",
        reason="" if ok else f"{guest.name} has {', '.join(guest.ips) or 'no IP'}",
        replacements={} if ok or not guest.ips else {"ip": guest.ips[0]},
    )


def _judge_node(claim: Claim, live: LiveFacts) -> Verdict:
    """A node's address against the cluster's; its role is the doc's own word (PVE knows no
    roles), so only that the node exists backs it."""
    if live.nodes is None:
        return _unverifiable(claim, "proxmox: not configured")
    documented = " ".join(p for p in (claim.node, claim.ip, claim.value) if p)
    if claim.node not in live.nodes:
        return Verdict(
            claim=claim,
            status=Status.DRIFTED,
            documented=documented,
            live="no such node",
            source="proxmox",
            reason=f"{claim.node} is not a node of the cluster",
        )
    if not claim.ip and claim.value:
        # A role alone ("pve2 is the backup node"): PVE knows no roles, so the node's existence
        # is all that could be confirmed, and calling the role right would be a guess.
        return _unverifiable(
            claim,
            f"{claim.node} is a node of the cluster; no live source knows node roles "
            f"({claim.value!r} is the doc's word)",
        )
    address = (live.node_ips or {}).get(claim.node or "")
    if claim.ip and address is None:
        return _unverifiable(claim, f"proxmox: no address known for {claim.node}")
    ok = not claim.ip or claim.ip == address
    return Verdict(
        claim=claim,
        status=Status.MATCH if ok else Status.DRIFTED,
        documented=documented,
        live=f"{claim.node} {address or ''}".strip(),
        source="proxmox",
        reason="" if ok else f"{claim.node} is at {address}",
        replacements={} if ok or not address else {"ip": address},
    )


def _judge_dns(claim: Claim, live: LiveFacts) -> Verdict:
    if live.dns_records is None:
        return _unverifiable(claim, "technitium: not configured")
    name = claim.subject.lstrip(".").lower().rstrip(".")
    records = [
        r
        for r in live.dns_records
        if r.type in ("A", "AAAA") and r.name.lower().rstrip(".") == name
    ]
    if not records:
        return Verdict(
            claim=claim,
            status=Status.DRIFTED,
            documented=claim.ip or "",
            live="no record",
            source="technitium",
            reason=f"no A record for {name}",
        )
    values = [r.value for r in records]
    ok = claim.ip in values
    return Verdict(
        claim=claim,
        status=Status.MATCH if ok else Status.DRIFTED,
        documented=claim.ip or "",
        live=",".join(values),
        source="technitium",
        replacements={} if ok else {"ip": values[0]},
    )


def undocumented(claims: list[Claim], live: LiveFacts) -> list[Undocumented]:
    """Live guests and routers that no claim and no line of the docs mentions."""
    text = "\n".join(c.text for c in claims).lower()
    seen_ids = {c.vmid for c in claims if c.vmid is not None}
    out: list[Undocumented] = []
    for g in live.guests or []:
        if g.template or g.vmid in seen_ids:
            continue
        label = "VM" if g.type == "qemu" else "CT"
        out.append(
            Undocumented(
                kind="guest", entity=f"{label} {g.vmid} {g.name} on {g.node}", source="proxmox"
            )
        )
    # A router whose host is named after a documented guest ("grafana.lab" for CT grafana) is
    # documented through that guest.
    names = {_norm(c.name) for c in claims if c.name}
    for r in live.routers or []:
        if not any(h.lower() in text or _norm(h.split(".")[0]) in names for h in r.hosts):
            out.append(
                Undocumented(
                    kind="router", entity=f"{r.name} ({', '.join(r.hosts)})", source="traefik"
                )
            )
    return out
