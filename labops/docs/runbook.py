"""Runbook drift: what a doc says about one host (a path, an interface, a systemd unit, a
command, a listening port), the read-only script that checks it there, and its reading (pure).

A doc comes from outside, so nothing of it is ever run: each value is validated against a
strict pattern and quoted, and only goes into one of five fixed templates (``test -e``,
``systemctl cat``, ``command -v``, ``ip -o link show``, ``ss -ltn``). A value that does not
pass is not a claim.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

from pydantic import BaseModel

from labops.docs.models import Claim, ClaimKind, HostProbe, LiveFacts, Span

HOST_KINDS = (
    ClaimKind.PATH,
    ClaimKind.INTERFACE,
    ClaimKind.UNIT,
    ClaimKind.COMMAND,
    ClaimKind.PORT,
)

_PATH = re.compile(
    r"(?<![\w.:/~$-])(?P<v>/(?:etc|var|opt|srv|usr|home|root|mnt|data|run|lib)"
    r"(?:/[\w.@+-]*[\w@+-])*)/?(?![\w/])"
)
_IFACE = re.compile(
    r"(?<![\w.-])(?P<v>vmbr\d+|enp\d+s\d+(?:f\d+)?|eno\d+|ens\d+|eth\d+|bond\d+|wg\d+|nic\d+)"
    r"(?![\w-])"
)
_UNIT = re.compile(r"(?<![\w/.-])(?P<v>[A-Za-z0-9_][\w@.-]*\.(?:service|socket|timer))(?![\w-])")
_PORT = re.compile(
    r"\b(?:ports?|listens?\s+on(?:\s+port)?|listening\s+on(?:\s+port)?)\s+`?:?(?P<v>\d{1,5})`?\b"
    r"|`:(?P<v2>\d{1,5})`",
    re.IGNORECASE,
)
_CODE = re.compile(r"`(?P<v>[^`\n]{1,200})`")
_COMMAND_NAME = re.compile(r"[a-z][\w.+-]{0,63}")

# Safe values: what may go, quoted, into a template.
_SAFE = {
    ClaimKind.PATH: re.compile(r"/[\w.@+/-]{1,250}"),
    ClaimKind.INTERFACE: re.compile(r"[a-z][a-z0-9._-]{0,14}"),
    ClaimKind.UNIT: re.compile(r"[A-Za-z0-9_][\w@.-]{0,200}\.(?:service|socket|timer)"),
    ClaimKind.COMMAND: _COMMAND_NAME,
    ClaimKind.PORT: re.compile(r"\d{1,5}"),
}

# Which host a line is about: a guest id, a node name, "on <host>", or the section's heading.
_GUEST_REF = re.compile(r"\b(?P<kind>CT|VM|LXC)\s?(?P<id>\d{3,9})\b")
_NODE_REF = re.compile(r"(?<![\w.-])(?P<h>pve\d{1,2}|node-?\d{1,2}|px\d{1,2})(?![\w.-])")
_ON_HOST = re.compile(
    r"\b(?:on|host|container|inside|in)\s*:?\s+`?(?P<h>[a-z][a-z0-9-]{1,40}[a-z0-9])`?"
    r"(?=[\s,.;:)]|$)"
)
_NOT_HOSTS = {
    "port", "the", "boot", "demand", "each", "every", "all", "this", "that", "it", "a", "an",
    "one", "both", "order", "case", "use", "there", "here", "time", "place", "top", "front",
    "turn", "mind", "general", "total", "charge", "call", "disk", "site", "line", "doubt",
}  # fmt: skip


def valid(kind: ClaimKind, value: str) -> bool:
    """Whether ``value`` may be checked at all (then it is quoted into a fixed template)."""
    pattern = _SAFE.get(kind)
    if pattern is None or not pattern.fullmatch(value) or ".." in value:
        return False
    return kind != ClaimKind.PORT or 1 <= int(value) <= 65535


def _named_host(text: str) -> str | None:
    guest = _GUEST_REF.search(text)
    if guest:
        return f"{'VM' if guest.group('kind') == 'VM' else 'CT'} {guest.group('id')}"
    node = _NODE_REF.search(text)
    return node.group("h") if node else None


def _host_after_on(text: str) -> str | None:
    for m in _ON_HOST.finditer(text):
        word = m.group("h")
        if word not in _NOT_HOSTS and not _IFACE.fullmatch(word):
            return word
    return None


def host_ref(line: str, heading: str = "") -> str | None:
    """The host a line is about: a guest id ("CT 110") or node ("pve2") it names, else its
    section's, else the word after "on"/"host" in it or its heading ("on traefik")."""
    return (
        _named_host(line) or _named_host(heading) or _host_after_on(line) or _host_after_on(heading)
    )


def host_claims(line: str, number: int, file: str, heading: str) -> Iterator[Claim]:
    """Path, interface, unit, command and port claims of one line, with the host they are
    about (the line's own, else its section's); a line about no host makes none."""
    found: list[tuple[ClaimKind, str, int, int]] = []
    for kind, pattern in (
        (ClaimKind.PATH, _PATH),
        (ClaimKind.INTERFACE, _IFACE),
        (ClaimKind.UNIT, _UNIT),
    ):
        found += [(kind, m.group("v"), m.start("v"), m.end("v")) for m in pattern.finditer(line)]
    for m in _PORT.finditer(line):
        group = "v" if m.group("v") else "v2"
        found.append((ClaimKind.PORT, m.group(group), m.start(group), m.end(group)))
    for m in _CODE.finditer(line):
        words = m.group("v").split()
        if len(words) >= 2 and _COMMAND_NAME.fullmatch(words[0]) and "=" not in words[0]:
            start = m.start("v")
            found.append((ClaimKind.COMMAND, words[0], start, start + len(words[0])))
    found = [f for f in found if valid(f[0], f[1])]
    if not found:
        return
    host = host_ref(line, heading)
    if host is None:
        return
    for kind, value, start, end in found:
        yield Claim(
            kind=kind,
            file=file,
            line=number,
            text=line.strip(),
            subject=f"{host}: {value}",
            fact="host",
            name=host,
            value=value,
            spans={"value": Span(file=file, line=number, start=start, end=end)},
        )


_TEMPLATES = {
    ClaimKind.PATH: "test -e {}",
    ClaimKind.UNIT: "systemctl cat {}",
    ClaimKind.COMMAND: "command -v {}",
}
_LINKS = "ip -o link show"
_PORTS = "ss -ltn"


def probe_script(claims: list[Claim]) -> str:
    """One read-only script checking every claim about one host: each check between markers,
    its exit status after it. Values were validated and are quoted; nothing else of the doc
    goes in."""
    parts: list[str] = []
    seen: set[tuple[ClaimKind, str]] = set()
    for c in claims:
        value = c.value or ""
        if (c.kind, value) in seen or not valid(c.kind, value):
            continue
        seen.add((c.kind, value))
        if c.kind in _TEMPLATES:
            check = _TEMPLATES[c.kind].format(shlex.quote(value))
            parts.append(f"echo @@{c.kind.value}; {check}; echo @@rc=$?")
    if any(c.kind == ClaimKind.INTERFACE for c in claims):
        parts.append(f"echo @@links; {_LINKS}; echo @@rc=$?")
    if any(c.kind == ClaimKind.PORT for c in claims):
        parts.append(f"echo @@ports; {_PORTS}; echo @@rc=$?")
    return "; ".join(parts)


def probe_values(claims: list[Claim]) -> list[tuple[ClaimKind, str]]:
    """The (kind, value) checks of ``probe_script``, in its order (to read its sections)."""
    out: list[tuple[ClaimKind, str]] = []
    for c in claims:
        value = c.value or ""
        if c.kind in _TEMPLATES and valid(c.kind, value) and (c.kind, value) not in out:
            out.append((c.kind, value))
    return out


_LINK_LINE = re.compile(r"^\d+:\s+(?P<name>[^:@\s]+)(?:@\S+)?:\s+<")
_LISTEN = re.compile(r"^LISTEN\s+\d+\s+\d+\s+(?P<local>\S+):(?P<port>\d+)\s")


def parse_links(output: str) -> list[str]:
    """Interface names of ``ip -o link show`` ("2: eth0@if45: <...> ..." -> eth0)."""
    return [m.group("name") for line in output.splitlines() if (m := _LINK_LINE.match(line))]


def parse_listening(output: str) -> list[int]:
    """Listening TCP ports of ``ss -ltn`` (IPv4 and IPv6 rows, header skipped)."""
    return sorted({int(m.group("port")) for ln in output.splitlines() if (m := _LISTEN.match(ln))})


def read_probe(host: str, claims: list[Claim], output: str) -> HostProbe:
    """The answer of ``probe_script`` read back: each section's exit status and output. A
    section missing from the output (cut short) leaves its checks unknown, never "absent"."""
    probe = HostProbe(host=host)
    sections: list[tuple[str, list[str], int | None]] = []
    for line in output.splitlines():
        if line.startswith("@@rc=") and sections:
            name, body, _ = sections[-1]
            status = line[5:].strip()
            sections[-1] = (name, body, int(status) if status.isdigit() else None)
        elif line.startswith("@@"):
            sections.append((line[2:].strip(), [], None))
        elif sections:
            sections[-1][1].append(line)
    checks = iter(probe_values(claims))
    table = {
        ClaimKind.PATH: probe.paths,
        ClaimKind.UNIT: probe.units,
        ClaimKind.COMMAND: probe.commands,
    }
    for name, body, rc in sections:
        if name == "links" and rc == 0:
            probe.links = parse_links("\n".join(body))
        elif name == "ports" and rc == 0:
            probe.ports = parse_listening("\n".join(body))
        elif name in ("links", "ports"):
            continue
        else:
            kind, value = next(checks, (None, ""))
            if kind is not None and kind.value == name and rc is not None:
                table[kind][value] = rc == 0
    return probe


def by_host(claims: list[Claim]) -> dict[str, list[Claim]]:
    """The host claims grouped by the host they name."""
    out: dict[str, list[Claim]] = {}
    for c in claims:
        if c.kind in HOST_KINDS and c.name:
            out.setdefault(c.name, []).append(c)
    return out


class HostTarget(BaseModel):
    """Where a host claim is checked: over SSH to ``node`` (at ``address``), inside ``vmid``
    through ``pct exec`` when it is a container."""

    ref: str
    node: str
    address: str
    port: int = 22
    vmid: int | None = None


def resolve_hosts(
    refs: set[str], live: LiveFacts, node_ssh: dict[str, tuple[str, int]]
) -> tuple[list[HostTarget], dict[str, str]]:
    """Each host a doc names, resolved on the live lab: a node, or an LXC guest by id or name
    (reached through its node). What cannot be reached is returned with why."""
    targets: list[HostTarget] = []
    unreachable: dict[str, str] = {}
    guests = [g for g in live.guests or [] if not g.template]
    for ref in sorted(refs):
        m = _GUEST_REF.fullmatch(ref)
        if ref in (live.nodes or []):
            node, vmid = ref, None
        else:
            guest = next(
                (g for g in guests if (g.vmid == int(m.group("id")) if m else g.name == ref)),
                None,
            )
            if guest is None:
                unreachable[ref] = "no such node or guest in the live lab"
                continue
            if guest.type != "lxc":
                unreachable[ref] = "a VM: pct exec reaches containers only"
                continue
            node, vmid = guest.node, guest.vmid
        if node not in node_ssh:
            unreachable[ref] = f"no SSH address for node {node} (systems.proxmox.nodes)"
            continue
        address, port = node_ssh[node]
        targets.append(HostTarget(ref=ref, node=node, address=address, port=port, vmid=vmid))
    return targets, unreachable


def judge_host_claim(claim: Claim, probe: HostProbe | None) -> tuple[str, str, str]:
    """(status, live, reason) of one host claim: "match", "drifted" or "unverifiable"."""
    value = claim.value or ""
    if probe is None:
        return "unverifiable", "", f"host {claim.name} not checked"
    if probe.error:
        return "unverifiable", "", f"{claim.name}: {probe.error}"
    kind = claim.kind
    known: bool | None
    if kind == ClaimKind.INTERFACE:
        known = None if probe.links is None else value in probe.links
        live = ", ".join(probe.links or [])
    elif kind == ClaimKind.PORT:
        known = None if probe.ports is None else int(value) in probe.ports
        live = ", ".join(str(p) for p in probe.ports or [])
    else:
        table = {
            ClaimKind.PATH: probe.paths,
            ClaimKind.UNIT: probe.units,
            ClaimKind.COMMAND: probe.commands,
        }[kind]
        known = table.get(value)
        live = "present" if known else "absent"
    what = {
        ClaimKind.PATH: "no such path",
        ClaimKind.INTERFACE: "no such interface",
        ClaimKind.UNIT: "no such unit",
        ClaimKind.COMMAND: "no such command",
        ClaimKind.PORT: "nothing listens on it",
    }[kind]
    if known is None:
        return "unverifiable", "", f"{claim.name}: {kind.value} check gave no answer"
    return ("match", live, "") if known else ("drifted", live, f"{claim.name}: {what}")
