"""The deterministic claim extractor: the common forms of homelab prose, lists, tables, headings.

It knows a small vocabulary of countable things (nodes, containers, VMs, HTTPS services, agents,
scrape targets, blocked domains, ...) and the usual ways of naming guests ("Traefik (CT 110)",
"CT 100 (pve1)", "CT 110 traefik on pve2"), IP ownership ("192.168.1.110 (Traefik)"), DNS patterns
("*.lab.internal points to 192.168.1.110"), direct links ("pve1 <-> pve2") and versions. What it
cannot map to a live fact is still returned, with ``fact=None``, so it is listed as unverifiable.
"""

from __future__ import annotations

import heapq
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import pairwise

from labops.docs.models import Bound, Claim, ClaimKind, Span
from labops.docs.paragraph import Paragraph, join_lines
from labops.docs.runbook import host_claims

IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"

# (noun regex, fact key or None when no live source exists, subject shown in reports)
_NOUNS: list[tuple[str, str | None, str]] = [
    (
        r"proxmox(?:\s+ve)?\s+(?:nodes?|hosts?|servers?)|pve\s+(?:nodes?|hosts?)|hypervisors?",
        "nodes",
        "Proxmox nodes",
    ),
    (r"lxc\s+containers?|lxcs?|cts|ct\b|containers?", "lxc", "LXC containers"),
    (r"vms?\b|virtual\s+machines?", "qemu", "VMs"),
    (r"guests?|workloads?", "guests", "guests"),
    (r"https\s+services?|tls\s+services?", "https_services", "HTTPS services"),
    (r"(?:http\s+|proxy\s+|traefik\s+)?routers?", "routers", "Traefik routers"),
    (r"beszel\s+agents?", "beszel_agents", "Beszel agents"),
    (r"wazuh\s+agents?", "wazuh_agents", "Wazuh agents"),
    (r"agents?", "@service", "agents"),
    (r"(?:monitored\s+)?(?:hosts?|systems?|machines?)", "@service", "hosts"),
    (r"(?:scrape\s+)?targets?", "scrape_targets", "scrape targets"),
    (r"blocked\s+domains?|domains?", None, "blocked domains"),
    (r"playbooks?", None, "playbooks"),
    (r"(?:detection\s+)?scenarios?", None, "scenarios"),
    (r"crons?|cron\s+jobs?", None, "crons"),
    (r"nodes?", "@nodes", "nodes"),
]
_NOUN_RE = "|".join(f"(?:{n})" for n, _, _ in _NOUNS)

_UNITS = [
    *("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"),
    *("twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS, start=1)} | {
    w: 20 + 10 * i for i, w in enumerate(_TENS)
}
# "one" alone is mostly an article ("one container per service"): only "only one", "exactly
# one", "just one" and "a single" count.
_WORD_NUM = (
    rf"(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_UNITS[:9])}))?"
    rf"|(?:{'|'.join(_UNITS[1:])})|half\s+a\s+dozen|a\s+dozen|a\s+single"
    r"|(?<=only\s)one|(?<=exactly\s)one|(?<=just\s)one"
)
_COUNT = re.compile(
    r"(?<![\w.:/-])"
    r"(?P<prefix>~|≈|about\s|around\s|approx\.?\s|approximately\s|roughly\s|over\s|"
    r"more\sthan\s|at\sleast\s|up\sto\s|under\s|fewer\sthan\s|less\sthan\s|no\smore\sthan\s|"
    r"only\s|exactly\s|just\s)?"
    rf"(?P<num>\d{{1,3}}(?:,\d{{3}})+|\d+|{_WORD_NUM})(?P<mult>[kKM](?![\w-]))?(?P<plus>\+)?"
    r"\s+(?:of\s+(?:the\s+|our\s+|its\s+)?)?(?P<adj>(?:[A-Za-z][\w-]*\s+){0,3}?)"
    rf"(?P<noun>{_NOUN_RE})(?![\w-])",
    re.IGNORECASE,
)
# "no VMs", "no containers": a count of none, only where the words end the statement ("pve1:
# no VMs", "runs no VMs and 7 containers"), not "no VMs are exposed", which counts nothing.
_ZERO = re.compile(
    r"(?<![\w.:/-])(?P<prefix>)(?P<num>no)(?P<mult>)(?P<plus>)\s+(?P<adj>)"
    r"(?P<noun>vms|virtual\s+machines|lxc\s+containers|containers|lxcs|cts|guests)(?![\w-])"
    r"(?=\s*(?:$|[.,;:!?)\u2013\u2014]|(?:and|or|but|on|yet|left|anymore|at\s+all|so\s+far)\b))",
    re.IGNORECASE,
)
# "thirty-one of them": a part of the set the sentence (or the one before) counted.
_OF_THEM = re.compile(  # not "if one of them fails": a condition counts nothing
    r"(?<![\w.:/-])(?<!if\s)(?<!when\s)(?<!unless\s)(?<!whether\s)"
    r"(?P<prefix>only\s|exactly\s|just\s)?"
    rf"(?P<num>\d+|{_WORD_NUM}|one)(?P<mult>)(?P<plus>)\s+of\s+(?:them|these|those)\b",
    re.IGNORECASE,
)
_PART_KIND = re.compile(
    r"^\s*(?:are|is|being)\s+(?P<noun>lxc\s+containers|containers|cts|lxcs|vms|virtual\s+machines"
    r"|container|vm|https\s+services?|tls\s+services?)(?![\w-])",
    re.IGNORECASE,
)
_PART_NODE = re.compile(r"\b(?:on|at)\s+`?(?P<node>[a-z]{2,}-?\d{1,2})(?![\w-])(?!\.\w)")
# A node's role in prose: "pve2 is the backup node", "pve3 acts as the quorum tiebreaker".
_ROLE_STOP = r"and|for|with|when|while|but|so|between|in|on|of|to|at|during|if|because|since"
_ROLE = re.compile(
    r"(?<![\w.-])`?(?P<node>[a-z]{2,}-?\d{1,2})`?,?\s+(?:"
    r"(?:is|stays|remains)\s+(?:the|a|an|our)\s+(?P<role>[a-z][\w-]*(?:\s+[a-z][\w-]*){0,2}?)"
    r"\s+(?:node|host|hypervisor|server|box|machine)(?![\w-])"
    r"|(?:acts|serves|works|doubles|is\s+used)\s+as\s+(?:(?:the|a|an|our)\s+)?"
    rf"(?P<role2>[a-z][\w-]*(?:\s+(?!(?:{_ROLE_STOP})\b)[a-z][\w-]*){{0,2}})"
    rf"(?=\s*(?:$|[.,;:!?)(\u2013\u2014]|(?:{_ROLE_STOP})\b))"
    r")",
)
_ROLE_NOUN = re.compile(r"\s+(?:node|host|hypervisor|server|box|machine)$")
_NOT_ROLES = re.compile(r"^(?:only|same|other|whole|entire|one|last|next)\b")
_GUEST = re.compile(r"\b(?P<kind>CT|VM|LXC)\s?(?P<id>\d{3,9})\b")
# Both only look at the end of the text before a guest id (_BEFORE_CHARS), from a word start:
# searched over the whole line before each of a thousand ids, they made a long line quadratic.
_NAME_BEFORE = re.compile(r"(?<![\w.-])(?P<name>[A-Za-z][\w.-]*)\s+\(\s*(?:CT|VM|LXC)\s?\d+\s*\)$")
_NAME_BEFORE_BARE = re.compile(r"(?<![\w.-])(?P<name>[A-Za-z][\w.-]*)\s+$")
_BEFORE_CHARS = 120
_PAREN_AFTER = re.compile(r"^\s*\((?P<inner>[^)]{1,40})\)")
_NAME_AFTER = re.compile(r"^\s*[:\u2013-]?\s*(?P<name>[a-z][\w.-]*[a-z0-9])\b")
_ON_NODE = re.compile(r"\bon\s+(?P<node>[a-z][\w-]*\d)\b")
_NODE_LIKE = re.compile(r"^[a-z][\w-]*\d$")
_IP_OWNER = re.compile(rf"(?P<ip>{IPV4})(?:/\d+)?\s*\((?P<owner>[A-Za-z][^)]{{0,40}})\)")
# Both start only where a token starts (the look-behinds) and only run on lines holding their
# keyword: one long token (a URL, an inline image) must not make the scan quadratic.
_DNS = re.compile(
    rf"(?<![\w.*-])[`'\"]?(?P<name>\*?\.?[\w-]*(?:\.[\w-]+)+)[`'\"]?\s+(?:(?:all\s+)?"
    rf"(?:points?|resolves?|is\s+pointed|goes|go|sends?\s+everything)\s+(?:to|at)|=>|=)"
    rf"\s+(?:the\s+)?(?:[A-Za-z][\w-]*\s+)?\(?`?(?P<ip>{IPV4})(?!\.?\d)"
    rf"|(?<![\w.*-])[`'\"]?(?P<name2>\*?\.?[\w-]*(?:\.[\w-]+)+)[`'\"]?\s*(?:->|\u2192)"
    rf"\s*(?:[A-Za-z][\w-]*\s+)?\(?`?(?P<ip2>{IPV4})(?!\.?\d)"
)
# A wildcard anywhere with an address later on the line ("wildcard `*.home.arpa`, A record
# 192.168.1.110"): the zone is whatever the doc uses.
_WILDCARD = re.compile(r"(?<![\w.*-])(?P<name>\*\.[\w-]+(?:\.[\w-]+)*)")
_ANY_IP = re.compile(rf"(?<![\d.]){IPV4}(?!\.?\d)")
_DNS_HINT = re.compile(r"point|resolv|->|\u2192|=|\*\.|goes|go\s|sends", re.IGNORECASE)
_LINK = re.compile(
    r"(?<![\w.-])(?P<a>[A-Za-z][\w.-]*\w)\s*(?:<->|\u2194|<=>)\s*(?P<b>[A-Za-z](?:[\w.-]*\w)?)"
)
_LINK_HINT = re.compile(r"<->|\u2194|<=>")
_VERSION = re.compile(r"\bProxmox\s+VE\s+(?P<v>\d+\.\d+(?:\.\d+)?)\b", re.IGNORECASE)
_ROLES = {"primary", "secondary", "master", "replica", "backup", "main", "spare", "the", "a"}
_STOP = {"and", "or", "on", "is", "with", "to", "in", "at", "for", "runs", "hosts", "via"}
_UNIT = re.compile(r"^(?:[kKMGT]i?B|ms|s|sec|min|h|Gbps|Mbps|GHz|MHz|%|x)\b")
_HEADING_MD = re.compile(r"^\s{0,3}#{1,6}\s+(?P<h>.+?)\s*#*\s*$")


_SERVICES = [  # a count next to a service's name is that service's ("Beszel (30 hosts)")
    (re.compile(r"beszel", re.I), "beszel_agents", "Beszel agents"),
    (re.compile(r"wazuh", re.I), "wazuh_agents", "Wazuh agents"),
    (
        re.compile(r"victoria\s*metrics|vmagent|prometheus|scrap", re.I),
        "scrape_targets",
        "scrape targets",
    ),
]
_CLUSTER = re.compile(r"proxmox|\bpve\b|cluster|hypervisor", re.I)
_NODE_TOKEN = re.compile(r"(?<![\w.-])(?P<node>[a-z]{2,}-?\d{1,2})(?![\w.-])")
_NOT_NODES = re.compile(r"^(?:vmbr|eth|ens|enp|wlan|bond|debian|ubuntu|alpine|win|rpo|ipv|tls)")
_TOTAL = re.compile(r"\b(?:in\s+total|total|overall|in\s+all|altogether|across)\b", re.I)
_TAG = re.compile(
    r"\btag(?:ged)?\s+(?:with\s+)?(?:the\s+)?(?:tag\s+)?[`'\"]?(?P<a>[\w-]+)"
    r"|[`'\"](?P<b>[\w-]+)[`'\"]\s+tag|\btag:\s*[`'\"]?(?P<c>[\w-]+)",
    re.I,
)
_SUBSET = re.compile(
    r"\b(?:main|other|remaining|first|last|primary|secondary|big|small|always-on|new|old|"
    r"spare|gpu|storage|backup|core|critical|public|internal|external|stopped|running)\b",
    re.I,
)
_SENTENCE_END = re.compile(r"[.;!?](?:\s|$)")


def node_token(text: str) -> str | None:
    """The node a short text names ("pve2", "node-3"), or None."""
    m = _NODE_TOKEN.fullmatch(text.strip().strip("`*"))
    return m.group("node") if m and not _NOT_NODES.match(m.group("node")) else None


def _nodes_in(text: str) -> list[re.Match[str]]:
    return [m for m in _NODE_TOKEN.finditer(text) if not _NOT_NODES.match(m.group("node"))]


def extract_claims(text: str, file: str) -> list[Claim]:
    """Every claim of one document, in reading order."""
    claims: list[Claim] = []
    heading = ""
    in_code = False
    lines = text.splitlines()
    table: list[tuple[int, str]] = []
    parents: list[tuple[int, str | None]] = []  # (indent, node) of the list items above
    carry = ""  # the unfinished sentence a wrapped prose line continues
    clustered = bool(_CLUSTER.search(text))
    # Paragraphs (prose or one list item with its continuation lines), each with the heading
    # and node scope of its first line: read again as one text once their lines are read.
    paragraphs: list[tuple[list[tuple[int, str]], str, str | None]] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        fence = stripped.startswith("```") or stripped.startswith("~~~")
        md = None if in_code or fence else _HEADING_MD.match(line)
        current = paragraphs[-1][0] if paragraphs else None
        item = re.match(r"^\s*(?:[-*+]|\d+[.)])\s", line)
        heading_like = not md and _looks_like_heading(stripped)
        goes_on = (
            current is not None
            and stripped
            and current[-1][0] == number - 1
            and not (fence or in_code or md or item or stripped.startswith("|"))
            and _continues(current[-1][1], stripped, heading_like)
        )
        if fence:
            in_code = not in_code
            continue
        if in_code:
            continue
        if stripped.startswith("|"):
            table.append((number, line))
            continue
        if table:
            claims.extend(_table_claims(table, file, heading))
            table = []
        if md:
            heading = md.group("h")
            parents = []
        elif heading_like and not goes_on:
            heading = stripped
            parents = []
        scope = _list_scope(line, parents) or _heading_node(heading)
        if goes_on and current is not None:
            current.append((number, line))
        elif stripped and not md and not heading_like:
            paragraphs.append(([(number, line)], heading, scope))
        claims.extend(_line_claims(line, number, file, heading, scope, carry, clustered))
        following = lines[number] if number < len(lines) else ""
        claims.extend(_wrapped_wildcards(line, following, number, file))
        carry = _unfinished(line)
    if table:
        claims.extend(_table_claims(table, file, heading))
    return _with_paragraphs(claims, paragraphs, file)


def _with_paragraphs(
    claims: list[Claim],
    paragraphs: list[tuple[list[tuple[int, str]], str, str | None]],
    file: str,
) -> list[Claim]:
    """The claims of the lines, completed by reading each paragraph as one text: what a
    sentence wrapped over lines says, and the parts ("thirty-one of them") of a set counted
    before. A claim the lines already read right keeps its line; one only the paragraph shows
    (or reads right) is reported at the line where its sentence starts."""
    by_line: dict[int, list[int]] = {}
    for i, claim in enumerate(claims):
        by_line.setdefault(claim.line, []).append(i)
    added: list[Claim] = []
    for lines, heading, scope in paragraphs:
        par = join_lines(lines)
        mine = [i for number, _ in lines for i in by_line.get(number, [])]
        anchored: list[tuple[int, Claim]] = []  # claims of the joined text, where they stand
        if len(lines) > 1:
            added.extend(_rejoined(par, claims, mine, file, heading, scope, anchored))
        for i in mine:
            span = claims[i].spans.get("count")
            start = par.offset(span.line, span.start) if span else None
            if claims[i].kind == ClaimKind.COUNT and start is not None:
                anchored.append((start, claims[i]))
        added.extend(_parts(par, anchored, file))
    # Stable: reading order within a line; a claim moved to its sentence's line moves up.
    return sorted([*claims, *added], key=lambda c: c.line)


def _rejoined(
    par: Paragraph,
    claims: list[Claim],
    mine: list[int],
    file: str,
    heading: str,
    scope: str | None,
    anchored: list[tuple[int, Claim]],
) -> list[Claim]:
    """Claims of a paragraph read as one text: one the lines found too (a value at the same
    place) is replaced in ``claims`` when the whole sentence says more about it; the others
    are returned. Each placed count is added to ``anchored`` with its offset in the text."""
    at: dict[tuple[str, str, int], int] = {}  # (kind, start/end, offset) -> index in claims
    guests: dict[int, int] = {}
    for i in mine:
        claim = claims[i]
        if claim.kind == ClaimKind.GUEST and claim.vmid is not None:
            guests.setdefault(claim.vmid, i)
        for span in claim.spans.values():
            start = par.offset(span.line, span.start)
            if start is not None:
                at.setdefault((claim.kind.value, "s", start), i)
                at.setdefault((claim.kind.value, "e", start + span.end - span.start), i)
    new: list[Claim] = []
    text = par.text
    found = [
        *_counts(text, 0, file, heading, scope, paragraph=True),
        *_guests(text, 0, file),
        *_nodes(text, 0, file),
        *_ip_owners(text, 0, file),
        *_dns(text, 0, file),
        *_versions(text, 0, file),
        *_roles(text, 0, file),
    ]
    for claim in found:
        kind = claim.kind.value
        same = next(
            (
                at[key]
                for span in claim.spans.values()
                for key in ((kind, "s", span.start), (kind, "e", span.end))
                if key in at
            ),
            guests.get(claim.vmid) if claim.vmid is not None else None,
        )
        if same is None and not claim.spans:
            continue  # nothing places it: the lines' reading stands
        anchor = min((span.start for span in claim.spans.values()), default=0)
        placed = _placed(claim, par, anchor, file)
        if same is None:
            new.append(placed)
        elif _says_more(placed, claims[same]):
            claims[same] = placed  # read right only over the lines: where its sentence starts
        else:
            continue
        if placed.kind == ClaimKind.COUNT:
            anchored.append((anchor, placed))
    return new


def _says_more(joined: Claim, lines: Claim) -> bool:
    fields: tuple[str, ...] = ("fact", "subject", "bound", "name", "node", "ip")
    if joined.kind != ClaimKind.COUNT:  # a count's words ("53 LXC" / "53 LXC containers") aside
        fields = (*fields, "value")
    return any(getattr(joined, f) != getattr(lines, f) for f in fields) and not (
        joined.kind == ClaimKind.GUEST
        and sum(getattr(joined, f) is not None for f in ("name", "node", "ip"))
        < sum(getattr(lines, f) is not None for f in ("name", "node", "ip"))
    )


_MAX_TEXT = 400  # a claim's text in a long paragraph: its sentence, cut around the claim


def _placed(claim: Claim, par: Paragraph, anchor: int, file: str) -> Claim:
    """A claim read in a paragraph's joined text, put back on its lines: its spans where they
    stand (one a line break cuts is dropped: it cannot be patched in place), its line the
    line its sentence starts on, its text the sentence."""
    spans: dict[str, Span] = {}
    for key, span in claim.spans.items():
        if par.same_line(span.start, span.end):
            number, column = par.locate(span.start)
            spans[key] = Span(
                file=file, line=number, start=column, end=column + span.end - span.start
            )
    _, start, end = par.sentence(anchor)
    if end - start > _MAX_TEXT:
        start, end = max(start, anchor - _MAX_TEXT // 2), min(end, anchor + _MAX_TEXT // 2)
    first = start + len(par.text[start:end]) - len(par.text[start:end].lstrip())
    return claim.model_copy(
        update={
            "line": par.locate(first)[0],
            "text": par.text[start:end].strip(),
            "spans": spans,
        }
    )


def _parts(par: Paragraph, anchored: list[tuple[int, Claim]], file: str) -> Iterator[Claim]:
    """ "Thirty-one of them live on pve2": a part of what the sentence, or the one before,
    counted. Narrowed to a node, a tag or a kind it is a count of its own; a part picked by
    anything else ("one of them is only on for backups"), or of a set not counted nearby, is
    listed as unverifiable, never taken as the whole."""
    sets = sorted(anchored, key=lambda s: s[0])
    starts = [start for start, _ in sets]
    for m in _OF_THEM.finditer(par.text):
        i = bisect_left(starts, m.start("num"))
        if i < len(sets) and sets[i][0] == m.start("num"):
            continue  # "39 of them HTTPS services": a count of its own noun, read already
        index, _, end = par.sentence(m.start())
        whole = sets[i - 1][1] if i and par.sentence(sets[i - 1][0])[0] >= index - 1 else None
        rest = par.text[m.end() : min(end, m.end() + 200)]
        fact, subject, note = _part_of(whole, rest)
        placed = _placed(
            Claim(
                kind=ClaimKind.COUNT,
                file=file,
                line=0,
                text="",
                subject=subject,
                fact=fact,
                bound=_bound(m),
                value=m.group(0).strip(),
                note=note,
                spans={"count": Span(file=file, line=0, start=m.start("num"), end=m.end("num"))},
            ),
            par,
            m.start(),
            file,
        )
        yield placed


def _part_of(whole: Claim | None, rest: str) -> tuple[str | None, str, str | None]:
    """(fact, subject, why not checkable) of "N of them" + the rest of its sentence."""
    if whole is None:
        return (
            None,
            "a part of them",
            "what 'them' are is not counted in this sentence or the one before",
        )
    base = (whole.fact or "").split(":")[-1]
    subject = whole.subject.split(" (")[0]
    kind = _PART_KIND.match(rest)
    noun_fact = _noun_fact(kind.group("noun"))[0] if kind else None
    node = _PART_NODE.search(rest)
    node_name = node.group("node") if node and node_token(node.group("node")) else None
    tag = _TAG.search(rest)
    tag_name = (tag.group("a") or tag.group("b") or tag.group("c")) if tag else None
    scoped = whole.fact is not None and ":" in whole.fact
    if not scoped and base in ("lxc", "qemu", "guests"):
        if noun_fact in ("lxc", "qemu") and base == "guests" and not (node_name or tag_name):
            return noun_fact, _noun_fact(kind.group("noun"))[1] if kind else subject, None
        if (node_name or tag_name) and not noun_fact:
            scope = f"node:{node_name}" if node_name else f"tag:{tag_name}"
            label = f"node {node_name}" if node_name else f"tag {tag_name}"
            return f"{scope}:{base}", f"{subject} ({label})", None
    if base == "routers" and noun_fact == "https_services":
        return "https_services", "HTTPS services", None
    return (
        None,
        f"{subject} (a part of them)",
        f"a part of the {subject} picked by what no live source tells",
    )


def _unfinished(line: str) -> str:
    """The tail of a prose line whose sentence goes on in the next line ("" otherwise)."""
    text = line.strip()
    if (
        not text
        or text.startswith(("#", "|", "-", "*", "+", ">"))
        or _SENTENCE_END.search(text + " ", len(text) - 1)
    ):
        return ""
    ends = list(_SENTENCE_END.finditer(text))
    return text[ends[-1].end() :] if ends else text


def _wrapped_wildcards(line: str, following: str, number: int, file: str) -> Iterator[Claim]:
    """A wildcard whose address is on the next line of the paragraph (wrapped prose)."""
    last_ip = max((m.start() for m in _ANY_IP.finditer(line)), default=-1)
    for m in _WILDCARD.finditer(line):
        if last_ip >= m.end() or not following.strip():
            continue
        ip = re.search(IPV4, following[:60])
        if ip and not re.search(r"\*\.", following[: ip.start()]):
            yield Claim(
                kind=ClaimKind.DNS,
                file=file,
                line=number,
                text=f"{line.strip()} {following.strip()}",
                subject=m.group("name"),
                fact="dns_records",
                value=ip.group(0),
                ip=ip.group(0),
                spans={"ip": Span(file=file, line=number + 1, start=ip.start(), end=ip.end())},
            )


def _heading_node(heading: str) -> str | None:
    words = re.split(r"[\s:(),\u2013\u2014-]+", heading.strip())
    named = [w for w in words if node_token(w)]
    return named[0] if len(named) == 1 and len(words) <= 4 else None


def _list_scope(line: str, parents: list[tuple[int, str | None]]) -> str | None:
    """The node a nested list item is about: the nearest item above it, less indented, that
    starts with a node's name ("- pve2 (192.168.1.12)" over "  - 31 containers")."""
    m = re.match(r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])\s+(?P<item>.*)$", line)
    if not m:
        if line.strip():
            parents.clear()
        return None
    indent = len(m.group("indent"))
    while parents and parents[-1][0] >= indent:
        parents.pop()
    first = re.split(r"[\s:(),]+", m.group("item").strip().strip("*`"), maxsplit=1)[0]
    parents.append((indent, node_token(first)))
    return next((node for _, node in reversed(parents[:-1]) if node), None)


# A line ending in a word broken by a hyphen or in a word no heading ends with ("the", "from")
# is the start of a wrapped sentence, however short.
_GOES_ON = re.compile(
    r"(?:[A-Za-z]-|\b(?:the|a|an|of|to|and|or|is|are|from|with|for|in|on|at|by|as))$", re.I
)


_ENDS_NUMBER = re.compile(rf"(?:\d|\b(?:{_WORD_NUM}|one))$", re.IGNORECASE)


def _continues(previous: str, line: str, heading_like: bool) -> bool:
    """Whether ``line`` goes on with the paragraph of the line before it: after a finished
    sentence unless it is a heading; after an unfinished one only where the words ask for more
    (a comma, "the", a number, a broken word) or go on in lower case. Pages exported from HTML
    put each block on its own line without a full stop ("Result: 30 agents" after "Rejected:
    ..."): those are not one sentence."""
    previous = previous.rstrip()
    if previous.endswith((".", ";", "!", "?")):
        return not heading_like
    return bool(
        previous.endswith(",")
        or _GOES_ON.search(previous)
        or _ENDS_NUMBER.search(previous)
        or re.match(r"[a-z0-9(`*]", line)
    )


def _looks_like_heading(line: str) -> bool:
    # Pages exported from HTML lose their '#': a short line without sentence punctuation.
    return (
        0 < len(line) <= 40
        and not re.search(r"[.:;,]$", line)
        and not _GOES_ON.search(line)
        and not _COUNT.search(line)
        and not line.startswith(("-", "*", "+", "|", ">"))
    )


def _line_claims(
    line: str,
    number: int,
    file: str,
    heading: str,
    scope: str | None = None,
    carry: str = "",
    clustered: bool = False,
) -> Iterator[Claim]:
    yield from _counts(line, number, file, heading, scope, carry)
    # A stats label ("- **Nodes:** 4") on a page about a Proxmox cluster counts its nodes; in
    # prose "62 nodes" may be anything's (a topology export's devices).
    yield from _label_count(line, number, file, f"pve {heading}" if clustered else heading, scope)
    yield from _guests(line, number, file)
    yield from _nodes(line, number, file)
    yield from _ip_owners(line, number, file)
    yield from _dns(line, number, file)
    yield from _links(line, number, file)
    yield from _versions(line, number, file)
    yield from _roles(line, number, file)
    yield from host_claims(line, number, file, heading)


def _service_fact(
    line: str, pos: int, heading: str, named: list[tuple[int, str, str]] | None = None
) -> tuple[str | None, str]:
    """The service a count of agents/hosts belongs to: the nearest one named before it on the
    line, else after it, else in the heading. ``named``: the line's services by position, when
    already found."""
    if named is None:
        named = _services_in(line)
    i = bisect_left([start for start, _, _ in named], pos)
    chosen = named[i - 1] if i else named[i] if i < len(named) else None
    if chosen:
        return chosen[1], chosen[2]
    for pattern, fact, subject in _SERVICES:
        if pattern.search(heading):
            return fact, subject
    return None, "agents"


def _services_in(text: str) -> list[tuple[int, str, str]]:
    return sorted(
        (m.start(), fact, subject)
        for pattern, fact, subject in _SERVICES
        for m in pattern.finditer(text)
    )


class _Sentences:
    """A line's sentence boundaries, node names and tag phrases, found once: a long line of
    counts must not make each count rescan it."""

    def __init__(self, line: str) -> None:
        self.line = line
        marks = list(_SENTENCE_END.finditer(line))
        self.starts = [m.start() for m in marks]
        self.ends = [m.end() for m in marks]
        found = _nodes_in(line)
        self.node_at = [m.start() for m in found]
        self.node_names = [m.group("node") for m in found]
        self._tags: dict[int, tuple[str | None, bool]] = {}

    def bounds(self, start: int, end: int) -> tuple[int, int]:
        i = bisect_right(self.ends, start)
        left = self.ends[i - 1] if i else 0
        j = bisect_left(self.starts, end)
        return left, self.starts[j] if j < len(self.starts) else len(self.line)

    def tag_and_total(self, left: int, right: int) -> tuple[str | None, bool]:
        if left not in self._tags:
            sentence = self.line[left:right]
            tag = _TAG.search(sentence)
            name = (tag.group("a") or tag.group("b") or tag.group("c")) if tag else None
            self._tags[left] = (name, bool(_TOTAL.search(sentence)))
        return self._tags[left]

    def node_before(self, left: int, start: int) -> str | None:
        i = bisect_left(self.node_at, start)
        if i and self.node_at[i - 1] >= left:
            return self.node_names[i - 1]
        return None


def _scoped(fact: str, index: _Sentences, start: int, end: int, scope: str | None) -> str:
    """A guest count narrowed to a tag ("tagged nobackup") or a node ("pve2 runs 31 CTs")."""
    left, right = index.bounds(start, end)
    tag, total = index.tag_and_total(left, right)
    if tag:
        return f"tag:{tag}:{fact}"
    if total:
        return fact
    before = index.node_before(left, start)
    if before:
        return f"node:{before}:{fact}"
    on = re.match(r"\s*(?:on|at)\s+(?P<node>[a-z]{2,}-?\d{1,2})\b", index.line[end : end + 40])
    if on and node_token(on.group("node")):
        return f"node:{on.group('node')}:{fact}"
    return f"node:{scope}:{fact}" if scope else fact


def _counts(
    line: str,
    number: int,
    file: str,
    heading: str,
    scope: str | None = None,
    carry: str = "",
    paragraph: bool = False,
) -> Iterator[Claim]:
    """The counts of a line (or, ``paragraph``, of a paragraph's joined text, where whether
    "nodes" are Proxmox's is asked of the sentence, not of the whole paragraph)."""
    context = f"{heading} {line}"
    index: _Sentences | None = None
    named: list[tuple[int, str, str]] | None = None
    matches = heapq.merge(_COUNT.finditer(line), _ZERO.finditer(line), key=lambda m: m.start())
    for m in matches:
        if _UNIT.search(m.group("adj")):
            continue  # "10 MB Go agents" counts megabytes, not agents
        noun = m.group("noun")
        fact, subject = _noun_fact(noun)
        if _SUBSET.search(m.group("adj")):
            fact = None  # "the two main nodes" are some of them: listed, not checked
        if fact == "@service":
            # the sentence may have begun on the line before ("Wazuh gathers logs from\n52 agents")
            if named is None:
                named = _services_in(f"{carry} {line}")
            fact, subject = _service_fact(
                f"{carry} {line}", len(carry) + 1 + m.start(), heading, named
            )
            subject = subject if fact else noun.lower()
        elif fact == "@nodes":
            if paragraph:
                index = index or _Sentences(line)
                left, right = index.bounds(m.start(), m.end())
                context = f"{heading} {line[left:right]}"
            clustered = _CLUSTER.search(context)
            fact, subject = ("nodes", "Proxmox nodes") if clustered else (None, "nodes")
        if fact in ("lxc", "qemu", "guests"):
            index = index or _Sentences(line)
            fact = _scoped(fact, index, m.start(), m.end(), scope)
            if fact.startswith(("tag:", "node:")):
                subject = f"{subject} ({fact.split(':')[0]} {fact.split(':')[1]})"
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


def word_number(text: str) -> int | None:
    """The value of a number written in words ("five", "twenty-one", "a dozen"), or None."""
    words = re.sub(r"\s+", " ", text.lower().strip())
    special = {"a dozen": 12, "half a dozen": 6, "a single": 1, "one": 1}
    if words in special:
        return special[words]
    parts = re.split(r"[- ]", words)
    if all(p in _WORD_VALUES for p in parts) and 1 <= len(parts) <= 2:
        return sum(_WORD_VALUES[p] for p in parts)
    return None


def _number(text: str) -> int | None:
    text = text.strip()
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+", text):
        return int(text.replace(",", ""))
    return word_number(text)


def _bound(m: re.Match[str]) -> Bound:
    value = _number(m.group("num")) or 0
    mult = (m.group("mult") or "").lower()
    value *= {"k": 1000, "m": 1_000_000}.get(mult, 1)
    prefix = (m.group("prefix") or "").strip().lower()
    if m.group("plus") or prefix in {"over", "more than", "at least"}:
        return Bound(value=value, op="ge")
    if prefix in {"up to", "under", "fewer than", "less than", "no more than"}:
        return Bound(value=value, op="le")
    if prefix in {"only", "exactly", "just"}:
        return Bound(value=value)
    if prefix or mult or "dozen" in m.group("num").lower():
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
        before = line[max(0, m.end() - _BEFORE_CHARS) : m.end()]
        nb = _NAME_BEFORE.search(before + ")") if line.startswith(")", m.end()) else None
        if nb:
            name = nb.group("name")
        else:
            bare = _NAME_BEFORE_BARE.search(line[max(0, m.start() - _BEFORE_CHARS) : m.start()])
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


_NODE_IP = re.compile(
    rf"(?<![\w.-])(?<!on\s)(?P<node>[a-z]{{2,}}-?\d{{1,2}})`?\s*(?:\(|:|at\s|is\s+(?:at\s+)?|on\s|"
    rf"(?:answers|listens|lives|sits|is\s+reachable)\s+(?:at|on)\s|"
    rf"\u2013|\u2014|-|=|->)\s*`?(?P<ip>{IPV4})(?!\.?\d)"
    rf"|(?<![\d.])(?P<ip2>{IPV4})`?\s*(?:\(|:|\u2013|\u2014|-|is\s)\s*`?(?P<node2>[a-z]{{2,}}-?\d{{1,2}})(?![\w.-])"
)


def node_claim(
    file: str,
    number: int,
    text: str,
    node: str,
    ip: str | None,
    role: str | None = None,
    ip_span: Span | None = None,
) -> Claim:
    """A node named with its address (and its role, from a node table)."""
    return Claim(
        kind=ClaimKind.NODE,
        file=file,
        line=number,
        text=text.strip(),
        subject=node,
        fact="nodes",
        node=node,
        ip=ip,
        value=role or None,
        spans={"ip": ip_span} if ip_span else {},
    )


def _nodes(line: str, number: int, file: str) -> Iterator[Claim]:
    for m in _NODE_IP.finditer(line):
        node = m.group("node") or m.group("node2")
        group = "ip" if m.group("ip") else "ip2"
        if not node_token(node):
            continue
        span = Span(file=file, line=number, start=m.start(group), end=m.end(group))
        yield node_claim(file, number, line, node, m.group(group), ip_span=span)


def _roles(line: str, number: int, file: str) -> Iterator[Claim]:
    """A node's role said in prose ("pve2 is the backup node")."""
    if " as " not in line and " is " not in line and "remains" not in line and "stays" not in line:
        return
    for m in _ROLE.finditer(line):
        group = "role" if m.group("role") else "role2"
        role = _ROLE_NOUN.sub("", m.group(group))  # "a spare host": the role is "spare"
        if not node_token(m.group("node")) or _NOT_ROLES.match(role):
            continue
        claim = node_claim(file, number, line, m.group("node"), None, role)
        span = Span(file=file, line=number, start=m.start(group), end=m.start(group) + len(role))
        yield claim.model_copy(update={"spans": {"role": span}})


def _ip_owners(line: str, number: int, file: str) -> Iterator[Claim]:
    for m in _IP_OWNER.finditer(line):
        owner = m.group("owner").strip()
        if _GUEST.fullmatch(owner) or node_token(owner):
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
    seen: set[str] = set()
    found = [
        (m.group("name") or m.group("name2"), m.span("ip" if m.group("ip") else "ip2"))
        for m in _DNS.finditer(line)
    ]
    # A wildcard with the next address on the line, found by position (no rescans).
    ips = [m.span() for m in _ANY_IP.finditer(line)]
    starts = [start for start, _ in ips]
    for m in _WILDCARD.finditer(line):
        i = bisect_left(starts, m.end())
        if i < len(ips):
            found.append((m.group("name"), ips[i]))
    for name, (start, end) in found:
        if name in seen or not re.search(r"[A-Za-z]", name):
            continue
        seen.add(name)
        yield Claim(
            kind=ClaimKind.DNS,
            file=file,
            line=number,
            text=line.strip(),
            subject=name,
            fact="dns_records",
            value=line[start:end],
            ip=line[start:end],
            spans={"ip": Span(file=file, line=number, start=start, end=end)},
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
    "name": {"name", "service", "hostname", "host", "container", "guest", "node", "hypervisor"},
    "node": {"node", "pve node", "proxmox node", "hypervisor"},
    "ip": {"ip", "ip address", "address", "ipv4", "mgmt ip", "management ip"},
    "role": {"role", "purpose", "function", "used for"},
}


def _header_roles(header: list[str]) -> dict[int, str]:
    roles: dict[int, str] = {}
    for i, cell in enumerate(header):
        for role, names in _COLUMNS.items():
            if cell in names and role not in roles.values():
                roles[i] = role
                break
    return roles


def _table_claims(rows: list[tuple[int, str]], file: str, heading: str = "") -> Iterator[Claim]:
    """A Markdown table: guest rows (a CT/ID column), node rows (a first column of node names:
    address, role and per-node counts), or any other table read row by row, each number cell
    read with its column's header ("| Beszel | Hosts |" over "| ... | 30 |")."""
    if len(rows) < 3:
        return
    header = [c.strip().lower().strip("*") for c in rows[0][1].strip().strip("|").split("|")]
    roles = _header_roles(header)
    if "vmid" in roles.values():
        yield from _guest_rows(rows, roles, file)
        return
    name_col = next((i for i, r in roles.items() if r == "name"), 0)
    first_cells = [_cells(line) for _, line in rows[2:]]
    is_node_table = all(
        len(c) > name_col and node_token(line[c[name_col][0] : c[name_col][1]])
        for c, (_, line) in zip(first_cells, rows[2:], strict=True)
    )
    for (number, line), cells in zip(rows[2:], first_cells, strict=True):
        texts = [line[a:b] for a, b in cells]
        node = node_token(texts[name_col]) if is_node_table and len(texts) > name_col else None
        if node:
            ip_col = next((i for i, r in roles.items() if r == "ip"), None)
            role_col = next((i for i, r in roles.items() if r == "role"), None)
            has_ip = ip_col is not None and ip_col < len(texts)
            ip = re.search(IPV4, texts[ip_col]) if has_ip and ip_col is not None else None
            span = None
            if ip and ip_col is not None:
                start = cells[ip_col][0] + ip.start()
                span = Span(file=file, line=number, start=start, end=start + len(ip.group(0)))
            role = texts[role_col] if role_col is not None and role_col < len(texts) else None
            yield node_claim(file, number, line, node, ip.group(0) if ip else None, role, span)
        label = texts[0] if texts else ""
        for i, (start, end) in enumerate(cells):
            if i == name_col or i >= len(header) or roles.get(i) in ("ip", "name"):
                continue
            yield from _cell_count(line, number, file, heading, header[i], label, start, end, node)
        if not node:
            yield from _line_claims(line, number, file, f"{heading} {' '.join(header)}")


def _cell_count(
    line: str,
    number: int,
    file: str,
    heading: str,
    column: str,
    label: str,
    start: int,
    end: int,
    node: str | None,
) -> Iterator[Claim]:
    """A cell holding only a number (or "~40", "20+", "five"): a count of its column's noun,
    else of the row label's ("| Traefik routers | 42 |")."""
    cell = line[start:end].strip()
    start += len(line[start:end]) - len(line[start:end].lstrip())
    m = _CELL_NUMBER.fullmatch(cell)
    if not m:
        return
    others = [line[a:b] for a, b in _cells(line) if (a, b) != (start, end)]
    phrases = [f"{m.group('num')} {text}" for text in (column, label, *others) if text]
    for phrase in phrases:
        counted = [
            c
            for c in _counts(phrase, number, file, f"{heading} {label} {column}", node)
            if c.fact is not None
        ]
        if counted:
            claim = counted[0]
            value = _number(m.group("num")) or 0
            prefix = (m.group("prefix") or "").strip()
            op = "ge" if m.group("plus") or prefix.startswith(">") else "eq"
            op = "le" if prefix.startswith("<") else "approx" if prefix in ("~", "≈") else op
            num_start = start + m.start("num")
            yield claim.model_copy(
                update={
                    "text": line.strip(),
                    "bound": Bound(value=value, op=op),
                    "value": cell,
                    "spans": {
                        "count": Span(
                            file=file, line=number, start=num_start, end=start + m.end("num")
                        )
                    },
                }
            )
            return


_CELL_NUMBER = re.compile(
    rf"(?P<prefix>~|≈|>=?\s?|<=?\s?)?(?P<num>\d+|{_WORD_NUM}|one)(?P<plus>\+)?", re.I
)


_LABEL = re.compile(
    r"^\s*(?:[-*+]\s+)?\**(?P<label>[A-Za-z][\w ()/`'-]{1,40}?)\**\s*:\s*\**"
    rf"(?P<cell>(?:~|≈)?\s?(?:\d+|{_WORD_NUM})\+?)\**\.?\s*$",
    re.I,
)


def _label_count(
    line: str, number: int, file: str, heading: str, scope: str | None
) -> Iterator[Claim]:
    """A label and its number ("- **Containers:** 53", "Traefik routers: 40")."""
    m = _LABEL.match(line)
    if m:
        label = m.group("label")
        yield from _cell_count(
            line, number, file, heading, label, label, m.start("cell"), m.end("cell"), scope
        )


def _guest_rows(rows: list[tuple[int, str]], roles: dict[int, str], file: str) -> Iterator[Claim]:
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
        spans.pop("role", None)
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
