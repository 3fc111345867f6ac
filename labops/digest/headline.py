"""The digest read in 30 seconds: one line per rule across hosts, at most 15 lines, worst first.

The message an operator reads on the phone is this headline, not the full digest: new critical
findings first, then what is exploited or exposed, then every finding that could not be checked
(never folded into a count: not knowing must stay visible), then the rest as one line per source
with its counts. Everything else, row by row, is in the run's artifacts behind the link (pure).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from labops.digest.findings import Finding, Status, rank
from labops.markdown import md_text
from labops.outcome import CouldNotCheck
from labops.reports import Severity

MAX_LINES = 15
MAX_HOSTS_NAMED = 6
SOURCE_NAMES = {
    "wazuh": "Wazuh",
    "crowdsec": "CrowdSec",
    "loki": "Logs",
    "metrics": "Metrics",
    "proxmox": "Proxmox",
    "labops": "labops",
}


class DigestLine(BaseModel):
    """One rule (or check) and every entity it was seen on: counts summed, the worst wins."""

    source: str
    rule: str
    title: str = Field(..., description="The worst finding's title.")
    severity: Severity
    status: Status = Field(..., description="new when any is new; unknown lines stay apart.")
    entities: list[str] = Field(default_factory=list, description="Worst first, each once.")
    count: int = 0
    findings: int = Field(0, description="How many findings (rows of the table) it stands for.")
    exposed: bool = False
    unknown: CouldNotCheck | None = None

    def text(self) -> str:
        """'[CRITICAL] NEW sshd brute force | pve1, pve2 (+3) | x37'; a could-not-check line
        ends with why and since when (outside text made inert)."""
        mark = " NEW" if self.status == "new" else ""
        named = ", ".join(md_text(e, 60) for e in self.entities[:MAX_HOSTS_NAMED])
        more = len(self.entities) - MAX_HOSTS_NAMED
        hosts = named + (f" (+{more})" if more > 0 else "")
        line = f"[{self.severity.value.upper()}]{mark} {md_text(self.title, 120)} | {hosts}"
        line += f" | x{self.count}"
        if self.unknown is not None:
            line += f" | {md_text(self.unknown.describe(), 160)}"
        return line


def is_exposed(f: Finding) -> bool:
    """Exploited or exposed: an attacker's address acting on the lab at warning or worse (an
    address CrowdSec already bans is info), or security updates still pending on a host."""
    if f.severity.rank < Severity.WARNING.rank:
        return False
    return f.ip is not None or (f.rule or "").endswith(":security-updates")


def group(findings: Iterable[Finding]) -> list[DigestLine]:
    """One line per (source, rule) across entities, worst first; could-not-check findings get
    their own lines, so a rule never hides that some of its hosts were not checked."""
    lines: dict[tuple[str, str, bool], DigestLine] = {}
    for f in rank(findings):
        key = (f.source, f.rule or f.title, f.status == "unknown")
        line = lines.get(key)
        if line is None:
            lines[key] = DigestLine(
                source=f.source,
                rule=key[1],
                title=f.title,
                severity=f.severity,
                status=f.status,
                entities=[f.entity],
                count=f.count,
                findings=1,
                exposed=is_exposed(f),
                unknown=f.unknown,
            )
            continue
        if f.entity not in line.entities:
            line.entities.append(f.entity)
        line.count += f.count
        line.findings += 1
        line.exposed = line.exposed or is_exposed(f)
        if f.status == "new":
            line.status = "new"
        if f.unknown is not None and (line.unknown is None or f.unknown.since < line.unknown.since):
            line.unknown = f.unknown
    return list(lines.values())


class Headline(BaseModel):
    """The lines shown (at most ``MAX_LINES`` unless more could not be checked) and the rest."""

    listed: list[DigestLine] = Field(default_factory=list)
    summarised: dict[str, list[DigestLine]] = Field(
        default_factory=dict, description="Source -> its lines not listed (as counts only)."
    )

    def lines(self) -> list[str]:
        out = [line.text() for line in self.listed]
        out.extend(_source_line(source, rest) for source, rest in self.summarised.items())
        return out


def _source_line(source: str, rest: list[DigestLine]) -> str:
    """'Wazuh: 14 more finding(s) in 5 line(s) (2 critical, 12 warning), 3 new; worst: sshd
    brute force x37 on 5 host(s)'."""
    by_sev = {s: 0 for s in (Severity.CRITICAL, Severity.WARNING, Severity.INFO)}
    for line in rest:
        by_sev[line.severity] = by_sev.get(line.severity, 0) + line.findings
    total = sum(line.findings for line in rest)
    new = sum(line.findings for line in rest if line.status == "new")
    counts = ", ".join(f"{n} {s.value}" for s, n in by_sev.items() if n)
    name = SOURCE_NAMES.get(source, md_text(source, 40))
    text = f"{name}: {total} more finding(s) in {len(rest)} line(s) ({counts})"
    text += f", {new} new" if new else ""
    top = rest[0]  # the worst of them, so the count line still says what it is mostly about
    hosts = f" on {len(top.entities)} host(s)" if len(top.entities) > 1 else ""
    return text + f"; worst: {md_text(top.title, 80)} x{top.count}{hosts}"


def headline(findings: Iterable[Finding], max_lines: int = MAX_LINES) -> Headline:
    """New critical lines, then exploited/exposed ones, then the could-not-check ones (all of
    them), then one count line per source for the rest; as many listed as fit in ``max_lines``."""
    lines = group(findings)
    unknown = [x for x in lines if x.status == "unknown"]
    critical = [x for x in lines if x.status == "new" and x.severity is Severity.CRITICAL]
    exposed = [x for x in lines if x.exposed and x not in critical and x not in unknown]
    candidates = critical + exposed
    for n in range(len(candidates), -1, -1):
        chosen = candidates[:n]
        rest = [x for x in lines if x not in chosen and x not in unknown]
        summarised: dict[str, list[DigestLine]] = {}
        for line in rest:
            summarised.setdefault(line.source, []).append(line)
        if n + len(unknown) + len(summarised) <= max_lines or n == 0:
            break
    if len(unknown) + len(summarised) > max_lines:  # too many sources: the rest in one line
        summarised = {"other sources": [x for group in summarised.values() for x in group]}
    return Headline(listed=[*chosen, *unknown], summarised=summarised)
