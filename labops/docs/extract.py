"""The deterministic claim extractor: the common forms of homelab prose, lists, tables, headings.

It knows a small vocabulary of countable things (nodes, containers, VMs, HTTPS services, agents,
scrape targets, blocked domains, ...) and the usual ways of naming guests ("Traefik (CT 110)",
"CT 100 (pve1)", "CT 110 traefik on pve2"), IP ownership ("192.168.1.110 (Traefik)"), DNS patterns
("*.lab.internal points to 192.168.1.110"), direct links ("pve1 <-> pve2") and versions. What it
cannot map to a live fact is still returned, with ``fact=None``, so it is listed as unverifiable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise

from labops.docs.models import Bound, Claim, ClaimKind, Span

IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"

# (noun regex, fact key or None when no live source exists, subject shown in reports)
_NOUNS: list[tuple[str, str | None, str]] = [
    (r"proxmox(?:\s+ve)?\s+nodes?|pve\s+nodes?|hypervisors?", "nodes", "Proxmox nodes"),
    (r"lxc\s+containers?|lxcs?|cts|ct\b|containers?", "lxc", "LXC containers"),
    (r"vms?\b|virtual\s+machines?", "qemu", "VMs"),
    (r"https\s+services?|tls\s+services?", "https_services", "HTTPS services"),
    (r"beszel\s+agents?", "beszel_agents", "Beszel agents"),
    (r"wazuh\s+agents?", "wazuh_agents", "Wazuh agents"),
    (r"agents?", "@agents", "agents"),
    (r"(?:scrape\s+)?targets?", "scrape_targets", "scrape targets"),
    (r"blocked\s+domains?|domains?", None, "blocked domains"),
    (r"playbooks?", None, "playbooks"),
    (r"(?:detection\s+)?scenarios?", None, "scenarios"),
    (r"crons?|cron\s+jobs?", None, "crons"),
    (r"nodes?", "@nodes", "nodes"),
]
_NOUN_RE = "|".join(f"(?:{n})" for n, _, _ in _NOUNS)

_COUNT = re.compile(
    r"(?<![\w.:/-])"
    r"(?P<prefix>~|≈|about\s|around\s|approx\.?\s|approximately\s|over\s|more\sthan\s|"
    r"at\sleast\s|up\sto\s|under\s|fewer\sthan\s|less\sthan\s)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?P<mult>[kKM])?(?P<plus>\+)?"
    r"\s+(?P<adj>(?:[A-Za-z][\w-]*\s+){0,3}?)"
    rf"(?P<noun>{_NOUN_RE})(?![\w-])",
    re.IGNORECASE,
)
_GUEST = re.compile(r"\b(?P<kind>CT|VM|LXC)\s?(?P<id>\d{3,9})\b")
_NAME_BEFORE = re.compile(r"(?P<name>[A-Za-z][\w.-]*)\s+\(\s*(?:CT|VM|LXC)\s?\d+\s*\)$")
_NAME_BEFORE_BARE = re.compile(r"(?P<name>[A-Za-z][\w.-]*)\s+$")
_PAREN_AFTER = re.compile(r"^\s*\((?P<inner>[^)]{1,40})\)")
_NAME_AFTER = re.compile(r"^\s*[:\u2013-]?\s*(?P<name>[a-z][\w.-]*[a-z0-9])\b")
_ON_NODE = re.compile(r"\bon\s+(?P<node>[a-z][\w-]*\d)\b")
_NODE_LIKE = re.compile(r"^[a-z][\w-]*\d$")
_IP_OWNER = re.compile(rf"(?P<ip>{IPV4})(?:/\d+)?\s*\((?P<owner>[A-Za-z][^)]{{0,40}})\)")
# Both start only where a token starts (the look-behinds) and only run on lines holding their
# keyword: one long token (a URL, an inline image) must not make the scan quadratic.
_DNS = re.compile(
    rf"(?<![\w.*-])(?P<name>\*?\.?[\w-]*(?:\.[\w-]+)+)\s+(?:points?|resolves?|is\s+pointed)"
    rf"\s+to\s+(?P<ip>{IPV4})"
    rf"|(?<![\w.*-])(?P<name2>\*?\.?[\w-]*(?:\.[\w-]+)+)\s*(?:->|\u2192)\s*(?P<ip2>{IPV4})"
)
_DNS_HINT = re.compile(r"point|resolv|->|\u2192", re.IGNORECASE)
_LINK = re.compile(
    r"(?<![\w.-])(?P<a>[A-Za-z][\w.-]*\w)\s*(?:<->|\u2194|<=>)\s*(?P<b>[A-Za-z](?:[\w.-]*\w)?)"
)
_LINK_HINT = re.compile(r"<->|\u2194|<=>")
_VERSION = re.compile(r"\bProxmox\s+VE\s+(?P<v>\d+\.\d+(?:\.\d+)?)\b", re.IGNORECASE)
_ROLES = {"primary", "secondary", "master", "replica", "backup", "main", "spare", "the", "a"}
_STOP = {"and", "or", "on", "is", "with", "to", "in", "at", "for", "runs", "hosts", "via"}
_UNIT = re.compile(r"^(?:[kKMGT]i?B|ms|s|sec|min|h|Gbps|Mbps|GHz|MHz|%|x)\b")
_HEADING_MD = re.compile(r"^\s{0,3}#{1,6}\s+(?P<h>.+?)\s*#*\s*$")


def extract_claims(text: str, file: str) -> list[Claim]:
    """Every claim of one document, in reading order."""
    claims: list[Claim] = []
    heading = ""
    in_code = False
    lines = text.splitlines()
    table: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if stripped.startswith("|"):
            table.append((number, line))
            continue
        if table:
            claims.extend(_table_claims(table, file))
            table = []
        md = _HEADING_MD.match(line)
        if md:
            heading = md.group("h")
        elif _looks_like_heading(stripped):
            heading = stripped
        claims.extend(_line_claims(line, number, file, heading))
    if table:
        claims.extend(_table_claims(table, file))
    return claims


def _looks_like_heading(line: str) -> bool:
    # Pages exported from HTML lose their '#': a short line without sentence punctuation.
    return 0 < len(line) <= 40 and not re.search(r"[.:;,]$", line) and not _COUNT.search(line)


def _line_claims(line: str, number: int, file: str, heading: str) -> Iterator[Claim]:
    yield from _counts(line, number, file, heading)
    yield from _guests(line, number, file)
    yield from _ip_owners(line, number, file)
    yield from _dns(line, number, file)
    yield from _links(line, number, file)
    yield from _versions(line, number, file)


def _counts(line: str, number: int, file: str, heading: str) -> Iterator[Claim]:
    context = f"{heading} {line}".lower()
    for m in _COUNT.finditer(line):
        if _UNIT.search(m.group("adj")):
            continue  # "10 MB Go agents" counts megabytes, not agents
        noun = m.group("noun")
        fact, subject = _noun_fact(noun)
        if fact == "@agents":
            fact, subject = _agents_fact(context)
        elif fact == "@nodes":
            fact, subject = ("nodes", "Proxmox nodes") if "proxmox" in context else (None, "nodes")
        bound = _bound(m)
        yield Claim(
            kind=ClaimKind.COUNT,
            file=file,
            line=number,
            text=line.strip(),
            subject=subject,
            fact=fact,
            bound=bound,
            value=m.group(0).strip(),
            spans={
                "count": Span(
                    file=file,
                    line=number,
                    start=m.start("num"),
                    end=m.end("mult") if m.group("mult") else m.end("num"),
                )
            },
        )


def _noun_fact(noun: str) -> tuple[str | None, str]:
    for pattern, fact, subject in _NOUNS:
        if re.fullmatch(pattern, noun, re.IGNORECASE):
            return fact, subject
    return None, noun.lower()


def _agents_fact(context: str) -> tuple[str | None, str]:
    if "beszel" in context:
        return "beszel_agents", "Beszel agents"
    if "wazuh" in context:
        return "wazuh_agents", "Wazuh agents"
    return None, "agents"


def _bound(m: re.Match[str]) -> Bound:
    value = int(m.group("num").replace(",", ""))
    mult = (m.group("mult") or "").lower()
    value *= {"k": 1000, "m": 1_000_000}.get(mult, 1)
    prefix = (m.group("prefix") or "").strip().lower()
    if m.group("plus") or prefix in {"over", "more than", "at least"}:
        return Bound(value=value, op="ge")
    if prefix in {"up to", "under", "fewer than", "less than"}:
        return Bound(value=value, op="le")
    if prefix or mult:
        return Bound(value=value, op="approx")
    return Bound(value=value)


def _guests(line: str, number: int, file: str) -> Iterator[Claim]:
    matches = list(_GUEST.finditer(line))
    for i, m in enumerate(matches):
        vmid = int(m.group("id"))
        clause_end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        clause = line[m.end() : clause_end]
        clause = re.split(r"[.;]\s|,\s(?=[A-Z])", clause, maxsplit=1)[0]
        spans: dict[str, Span] = {}
        name: str | None = None
        node: str | None = None
        before = line[: m.end()]
        nb = _NAME_BEFORE.search(before + ")") if line[m.end() :].startswith(")") else None
        if nb:
            name = nb.group("name")
        else:
            bare = _NAME_BEFORE_BARE.search(line[: m.start()])
            if bare and bare.group("name").lower() not in _ROLES | _STOP:
                name = bare.group("name")
        paren = _PAREN_AFTER.match(clause)
        offset = m.end()
        if paren:
            inner = paren.group("inner").strip()
            start = (
                offset
                + paren.start("inner")
                + (len(paren.group("inner")) - len(paren.group("inner").lstrip()))
            )
            if _NODE_LIKE.match(inner):
                node = inner
                spans["node"] = Span(file=file, line=number, start=start, end=start + len(inner))
            elif name is None and re.fullmatch(r"[A-Za-z][\w.-]*", inner):
                name = inner
        elif name is None:
            after = _NAME_AFTER.match(clause)
            if after and after.group("name") not in _STOP:
                name = after.group("name")
        if node is None:
            on = _ON_NODE.search(clause)
            if on:
                node = on.group("node")
                start = offset + on.start("node")
                spans["node"] = Span(file=file, line=number, start=start, end=start + len(node))
        ip_m = re.search(IPV4, clause)
        ip = ip_m.group(0) if ip_m else None
        if ip_m:
            spans["ip"] = Span(
                file=file, line=number, start=offset + ip_m.start(), end=offset + ip_m.end()
            )
        yield Claim(
            kind=ClaimKind.GUEST,
            file=file,
            line=number,
            text=line.strip(),
            subject=f"{'VM' if m.group('kind') == 'VM' else 'CT'} {vmid}",
            fact="guests",
            vmid=vmid,
            name=name,
            node=node,
            ip=ip,
            spans=spans,
        )


def _ip_owners(line: str, number: int, file: str) -> Iterator[Claim]:
    for m in _IP_OWNER.finditer(line):
        owner = m.group("owner").strip()
        if _GUEST.fullmatch(owner):
            continue
        yield Claim(
            kind=ClaimKind.IP,
            file=file,
            line=number,
            text=line.strip(),
            subject=owner,
            fact="guests",
            ip=m.group("ip"),
            name=owner,
            spans={"ip": Span(file=file, line=number, start=m.start("ip"), end=m.end("ip"))},
        )


def _dns(line: str, number: int, file: str) -> Iterator[Claim]:
    if not _DNS_HINT.search(line):
        return
    for m in _DNS.finditer(line):
        name = m.group("name") or m.group("name2")
        ip_group = "ip" if m.group("ip") else "ip2"
        yield Claim(
            kind=ClaimKind.DNS,
            file=file,
            line=number,
            text=line.strip(),
            subject=name,
            fact="dns_records",
            value=m.group(ip_group),
            ip=m.group(ip_group),
            spans={
                "ip": Span(file=file, line=number, start=m.start(ip_group), end=m.end(ip_group))
            },
        )


def _links(line: str, number: int, file: str) -> Iterator[Claim]:
    if not _LINK_HINT.search(line):
        return
    for m in _LINK.finditer(line):
        yield Claim(
            kind=ClaimKind.LINK,
            file=file,
            line=number,
            text=line.strip(),
            subject=f"{m.group('a')} <-> {m.group('b')}",
            fact=None,
            value=f"{m.group('a')} <-> {m.group('b')}",
        )


def _versions(line: str, number: int, file: str) -> Iterator[Claim]:
    for m in _VERSION.finditer(line):
        yield Claim(
            kind=ClaimKind.VERSION,
            file=file,
            line=number,
            text=line.strip(),
            subject="Proxmox VE",
            fact="pve_version",
            value=m.group("v"),
            spans={"version": Span(file=file, line=number, start=m.start("v"), end=m.end("v"))},
        )


_COLUMNS = {
    "vmid": {"ct", "vmid", "id", "vm", "ct id", "vm id", "ctid"},
    "name": {"name", "service", "hostname", "host", "container", "guest"},
    "node": {"node", "pve node", "proxmox node", "hypervisor"},
    "ip": {"ip", "ip address", "address", "ipv4"},
}


def _table_claims(rows: list[tuple[int, str]], file: str) -> Iterator[Claim]:
    """A Markdown table whose header names guest columns (CT/ID, name, node, IP)."""
    if len(rows) < 3:
        return
    header = [c.strip().lower() for c in rows[0][1].strip().strip("|").split("|")]
    roles: dict[int, str] = {}
    for i, cell in enumerate(header):
        for role, names in _COLUMNS.items():
            if cell in names and role not in roles.values():
                roles[i] = role
    if "vmid" not in roles.values():
        for number, line in rows[2:]:
            yield from _line_claims(line, number, file, "")
        return
    for number, line in rows[2:]:
        cells = _cells(line)
        values: dict[str, str] = {}
        spans: dict[str, Span] = {}
        for i, (start, end) in enumerate(cells):
            role_name = roles.get(i)
            if role_name:
                values[role_name] = line[start:end]
                spans[role_name] = Span(file=file, line=number, start=start, end=end)
        digits = re.search(r"\d{3,9}", values.get("vmid", ""))
        if not digits:
            continue
        spans.pop("vmid", None)
        spans.pop("name", None)
        yield Claim(
            kind=ClaimKind.GUEST,
            file=file,
            line=number,
            text=line.strip(),
            subject=f"{'VM' if 'vm' in values['vmid'].lower() else 'CT'} {digits.group(0)}",
            fact="guests",
            vmid=int(digits.group(0)),
            name=values.get("name") or None,
            node=values.get("node") or None,
            ip=(re.search(IPV4, values.get("ip", "")) or [None])[0],
            spans=spans,
        )


def _cells(line: str) -> list[tuple[int, int]]:
    """(start, end) of each cell's trimmed text in a table line."""
    bars = [i for i, c in enumerate(line) if c == "|"]
    out = []
    for left, right in pairwise(bars):
        raw = line[left + 1 : right]
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        out.append((left + 1 + lead, left + 1 + lead + len(text)))
    return out
