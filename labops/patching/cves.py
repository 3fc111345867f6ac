"""CVEs fixed by pending updates: the OSV, Debian security tracker and CISA KEV answers read into
one row per (host, package, CVE). Pure: no I/O (the fetching and caching is ``tasks/cves.py``).

How a CVE is matched to a pending update: OSV is asked twice per package, at the installed and at
the offered version (``/v1/querybatch``); the advisories that affect the installed version and not
the offered one are the ones the update fixes. This needs no version arithmetic of our own (OSV
knows each ecosystem's ordering). OSV names Debian, Ubuntu and Alpine packages by their SOURCE
package; the binary names apt and apk print are mapped through :data:`SOURCE_OF` (the common
splits), else used as they are.

Severity: the CVSS v3 base score when the advisory carries a vector (computed here from it), else
the distribution's own word (Ubuntu priority, Debian tracker urgency), else ``unknown``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

CveSeverity = Literal["critical", "high", "medium", "low", "unknown"]
SEVERITIES: list[CveSeverity] = ["critical", "high", "medium", "low", "unknown"]
_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # unknown 0 ... critical 4

# OSV ids: a prefix and an id (DSA-6015-1, UBUNTU-CVE-2025-9230, GHSA-xxxx-xxxx-xxxx, CVE-...).
_ADVISORY_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9._:-]{1,120}")

# Binary package -> source package, where they differ, for the packages a homelab's pending
# list is made of (OSV keys Debian/Ubuntu/Alpine advisories by source package).
SOURCE_OF: dict[str, str] = {
    "libssl3": "openssl",
    "libssl3t64": "openssl",
    "libcrypto3": "openssl",
    "openssh-server": "openssh",
    "openssh-client": "openssh",
    "openssh-sftp-server": "openssh",
    "libcurl4": "curl",
    "libcurl4t64": "curl",
    "libcurl": "curl",
    "libexpat1": "expat",
    "libc6": "glibc",
    "libc-bin": "glibc",
    "ssl_client": "busybox",
    "libxml2-utils": "libxml2",
    "libsystemd0": "systemd",
    "libudev1": "systemd",
}


def source_name(binary: str) -> str:
    return SOURCE_OF.get(binary, binary)


def ecosystem(os_id: str, version_id: str | None) -> str | None:
    """The OSV ecosystem of a release (None: OSV has none for it, e.g. an unknown OS)."""
    if not version_id:
        return None
    if os_id == "debian":
        return f"Debian:{version_id.split('.')[0]}"
    if os_id == "ubuntu":
        year, _, month = version_id.partition(".")
        lts = month == "04" and year.isdigit() and int(year) % 2 == 0
        return f"Ubuntu:{version_id}:LTS" if lts else f"Ubuntu:{version_id}"
    if os_id == "alpine":
        return "Alpine:v" + ".".join(version_id.split(".")[:2])
    return None


def os_of_label(label: str) -> tuple[str, str | None]:
    """(ID, VERSION_ID) back from a compliance-table label such as ``debian 12 (bookworm)``."""
    words = label.split()
    if not words:
        return "unknown", None
    version = words[1] if len(words) > 1 and words[1] != "?" else None
    return words[0], version


# -- CVSS v3 base score (FIRST's specification, section 7.1) --------------------------------------

_W = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _roundup(value: float) -> float:
    whole = round(value * 100000)
    return whole / 100000.0 if whole % 10000 == 0 else (math.floor(whole / 10000) + 1) / 10.0


def cvss3_score(vector: str) -> float | None:
    """Base score of a ``CVSS:3.x/AV:../...`` vector (None when it is not one)."""
    if not vector.startswith("CVSS:3"):
        return None
    try:
        m = dict(part.split(":", 1) for part in vector.split("/")[1:])
        changed = m["S"] == "C"
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[m["PR"]]
        iss = 1 - (1 - _W["C"][m["C"]]) * (1 - _W["I"][m["I"]]) * (1 - _W["A"][m["A"]])
        expl = 8.22 * _W["AV"][m["AV"]] * _W["AC"][m["AC"]] * pr * _W["UI"][m["UI"]]
    except (KeyError, ValueError):
        return None
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    raw = 1.08 * (impact + expl) if changed else impact + expl
    return _roundup(min(raw, 10.0))


def severity_of_score(score: float) -> CveSeverity:
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "unknown"


def severity_of_word(word: str | None) -> CveSeverity:
    """A distribution's urgency/priority word in the common scale (Debian: ``unimportant``,
    ``low``, ``medium``, ``high``, ``not yet assigned``; Ubuntu: ``negligible`` to
    ``critical``)."""
    w = (word or "").lower().rstrip("*").strip()
    if w in ("critical", "high", "medium", "low"):
        return w  # type: ignore[return-value]
    if w in ("unimportant", "negligible"):
        return "low"
    return "unknown"


# -- the sources' answers -------------------------------------------------------------------------


class OsvQuery(BaseModel):
    """One query of ``/v1/querybatch``: a package at a version in an ecosystem."""

    ecosystem: str
    name: str
    version: str

    def body(self) -> dict[str, Any]:
        return {
            "package": {"name": self.name, "ecosystem": self.ecosystem},
            "version": self.version,
        }

    @property
    def key(self) -> str:
        return f"{self.ecosystem}|{self.name}|{self.version}"


def batch_ids(answer: Any, count: int) -> list[list[str]]:
    """The advisory ids of each query of a querybatch answer (``{"results": [{"vulns": [{"id",
    "modified"}]}, {}]}``), in query order. A malformed answer raises ValueError."""
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise ValueError("osv querybatch: no results list")
    results = answer["results"]
    if len(results) != count:
        raise ValueError(f"osv querybatch: {len(results)} results for {count} queries")
    out = []
    for item in results:
        vulns = item.get("vulns") or [] if isinstance(item, dict) else []
        ids = [str(v["id"]) for v in vulns if isinstance(v, dict) and "id" in v]
        bad = [i for i in ids if not _ADVISORY_ID.fullmatch(i)]
        if bad:  # an id goes into a URL path (/v1/vulns/{id}): only OSV's id grammar
            raise ValueError(f"osv querybatch: advisory id outside the id grammar: {bad[0][:60]!r}")
        out.append(ids)
    return out


class Advisory(BaseModel):
    """What we keep of an OSV advisory (``/v1/vulns/{id}``)."""

    id: str
    cves: list[str] = Field(default_factory=list)
    score: float | None = None
    word: str | None = Field(None, description="The distribution's own severity word.")
    summary: str = ""


def parse_advisory(data: Any) -> Advisory:
    """An OSV record: CVE ids from ``id``, ``aliases``, ``upstream`` and ``related``; the highest
    CVSS v3 score of ``severity`` (also per ``affected``); a distribution's word (Ubuntu's
    ``severity`` of type ``Ubuntu``, ``database_specific.severity``)."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError("osv vuln: no id")
    names = [data["id"], *(data.get("aliases") or []), *(data.get("upstream") or [])]
    names += data.get("related") or []
    cves = sorted({n for n in names if isinstance(n, str) and n.startswith("CVE-")})
    severities = list(data.get("severity") or [])
    for affected in data.get("affected") or []:
        if isinstance(affected, dict):
            severities += affected.get("severity") or []
    score: float | None = None
    word: str | None = None
    for s in severities:
        if not isinstance(s, dict):
            continue
        value = str(s.get("score", ""))
        if str(s.get("type", "")).startswith("CVSS_V3"):
            got = cvss3_score(value)
            if got is not None and (score is None or got > score):
                score = got
        elif s.get("type") == "Ubuntu":
            word = value
    specific = data.get("database_specific")
    if word is None and isinstance(specific, dict) and isinstance(specific.get("severity"), str):
        word = specific["severity"]
    return Advisory(
        id=data["id"], cves=cves, score=score, word=word, summary=str(data.get("summary", ""))[:200]
    )


def parse_kev(data: Any) -> tuple[set[str], datetime | None]:
    """CISA KEV JSON: the ``cveID`` of every entry and the catalog's ``dateReleased``."""
    if not isinstance(data, dict) or not isinstance(data.get("vulnerabilities"), list):
        raise ValueError("kev: no vulnerabilities list")
    cves = {
        str(v["cveID"]) for v in data["vulnerabilities"] if isinstance(v, dict) and "cveID" in v
    }
    released = None
    if isinstance(data.get("dateReleased"), str):
        try:
            released = datetime.fromisoformat(data["dateReleased"].replace("Z", "+00:00"))
        except ValueError:
            released = None
    return cves, released


def tracker_urgency(data: Any, source: str, cve: str, codename: str | None) -> str | None:
    """The Debian tracker's urgency of ``cve`` in ``source`` for a release (``{source: {CVE:
    {"releases": {codename: {"urgency": ...}}}}}``); None when the tracker does not say."""
    if not isinstance(data, dict) or not codename:
        return None
    entry = (data.get(source) or {}).get(cve)
    if not isinstance(entry, dict):
        return None
    release = (entry.get("releases") or {}).get(codename)
    if not isinstance(release, dict):
        return None
    urgency = release.get("urgency")
    return urgency if isinstance(urgency, str) else None


# -- the result -----------------------------------------------------------------------------------


class PackageCve(BaseModel):
    """One CVE a pending update fixes on one host."""

    package: str
    to_version: str
    cve: str
    advisory: str
    severity: CveSeverity = "unknown"
    score: float | None = Field(None, description="CVSS v3 base score (None: the source has none).")
    severity_from: str = Field("", description="cvss, ubuntu, debian-tracker or '' (unknown).")
    kev: bool = Field(False, description="In CISA's Known Exploited Vulnerabilities catalog.")


FeedName = Literal["osv", "debian-tracker", "kev"]
FeedHealth = Literal["fresh", "stale", "unreachable"]


class FeedState(BaseModel):
    """How one source answered this run: fresh, stale (too old, shown with its age) or
    unreachable (no answer and no usable copy)."""

    name: FeedName
    url: str
    health: FeedHealth
    age_h: float | None = Field(None, description="Age of the data used (hours).")
    detail: str = ""

    def line(self) -> str:
        age = f", {self.age_h:.1f} h old" if self.age_h is not None else ""
        more = f": {self.detail}" if self.detail else ""
        return f"{self.name} {self.health}{age}{more}"


def rate(
    adv: Advisory, kev: set[str], urgency: dict[str, str | None] | None = None
) -> list[tuple[str, CveSeverity, float | None, str, bool]]:
    """(cve, severity, score, severity_from, kev) of every CVE of an advisory; ``urgency``: the
    Debian tracker's word per CVE, used when the advisory has no score and no word."""
    out: list[tuple[str, CveSeverity, float | None, str, bool]] = []
    for c in adv.cves:
        word = (urgency or {}).get(c)
        if adv.score is not None:
            sev, src = severity_of_score(adv.score), "cvss"
        elif severity_of_word(adv.word) != "unknown":
            sev, src = severity_of_word(adv.word), "ubuntu"
        elif severity_of_word(word) != "unknown":
            sev, src = severity_of_word(word), "debian-tracker"
        else:
            sev, src = "unknown", ""
        out.append((c, sev, adv.score, src, c in kev))
    return out


def fixed_by(before: list[str], after: list[str]) -> list[str]:
    """Advisories affecting the installed version and not the offered one."""
    still = set(after)
    return [a for a in before if a not in still]


def rank_key(kev: bool, severity: CveSeverity, exposed: bool) -> tuple[int, int]:
    """Order of pending updates: known exploited first, then severity x exposure (an exposed
    guest counts double)."""
    return (int(kev), _RANK[severity] * (2 if exposed else 1))


def worst(cves: list[PackageCve]) -> CveSeverity:
    return max((c.severity for c in cves), key=lambda s: _RANK[s], default="unknown")
