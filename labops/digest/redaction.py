"""Stable placeholders for what identifies the lab, before anything goes to an LLM, and back.

IPs, e-mail addresses, host names and user names become ``IP_1``, ``EMAIL_1``, ``HOST_1``,
``USER_1``: the same value always gets the same placeholder within one digest, so the model can
still say "IP_3 hit HOST_1 twelve times", and :meth:`Redactor.restore` puts the real values back.
Only the fields in ``ALLOWED_FIELDS`` of a finding ever reach the prompt.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from labops.digest.findings import Finding

ALLOWED_FIELDS = ("severity", "status", "source", "title", "entity", "rule", "count", "evidence")
MAX_EVIDENCE_LINES = 2
MAX_EVIDENCE_CHARS = 240

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
# Only suffixes a homelab's or the internet's host names use: "auth.log" or "sshd.service" are
# not hosts, and guessing wrong only means a file name is hidden or shown.
_TLDS = (
    "internal|lan|local|localdomain|home|arpa|lab|corp|intranet|com|net|org|io|dev|app|cloud|"
    "de|fr|eu|uk|nl|ch|at|be|it|es|us|ca|info|xyz|tech|me|ovh"
)
_FQDN = re.compile(
    rf"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+(?:{_TLDS})(?![\w-])",
    re.IGNORECASE,
)
_USER_PATTERNS = [
    re.compile(r"\b[Ii]nvalid user (?P<u>[^\s;]+)"),
    re.compile(r"\b(?:Failed|Accepted) \S+ for (?:invalid user )?(?P<u>[^\s;]+) from"),
    re.compile(r"\b(?:ruser|logname|USER|user|srcuser|dstuser|acct)=\"?(?P<u>[^\s;\"]+)"),
    re.compile(r"\bsudo(?:\[\d+\])?:\s+(?P<u>[^\s;]+) :"),
    re.compile(r"\bsession (?:opened|closed) for user (?P<u>[^\s;(]+)"),
]
# The host field of a syslog line: "<host> sshd[811]:" (with or without the timestamp before it).
_SYSLOG_HOST = re.compile(r"(?:^|(?<=\s))(?P<h>[A-Za-z0-9][\w.-]*) (?=[\w.-]+(?:\[\d+\])?: )")
_PLACEHOLDER = re.compile(r"\b(IP|EMAIL|HOST|USER)_(\d+)\b")


class Redactor:
    """Replaces identifying values with placeholders and maps them back."""

    def __init__(self, hosts: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        self._forward: dict[str, str] = {}
        self._back: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._by_value: dict[str, str] = {}  # real value -> its first placeholder
        self._sweep: tuple[int, re.Pattern[str] | None] | None = None
        self._hosts = sorted({h for h in hosts if h and len(h) > 1}, key=len, reverse=True)
        self._users = sorted({u for u in users if u and len(u) > 1}, key=len, reverse=True)

    @property
    def mapping(self) -> dict[str, str]:
        """placeholder -> real value."""
        return dict(self._back)

    def _placeholder(self, kind: str, value: str) -> str:
        key = f"{kind}:{value}"
        if key not in self._forward:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = f"{kind}_{self._counts[kind]}"
            self._forward[key] = name
            self._back[name] = value
            self._by_value.setdefault(value, name)
        return self._forward[key]

    def redact(self, text: str) -> str:
        text = _EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group(0)), text)
        text = _IPV4.sub(lambda m: self._placeholder("IP", m.group(0)), text)
        text = _IPV6.sub(self._ipv6, text)
        for pattern in _USER_PATTERNS:
            text = pattern.sub(self._user_in_match, text)
        for user in self._users:
            text = _word(user).sub(lambda m: self._placeholder("USER", m.group(0)), text)
        for host in self._hosts:
            text = _word(host).sub(lambda m: self._placeholder("HOST", m.group(0)), text)
        text = _FQDN.sub(lambda m: self._placeholder("HOST", m.group(0)), text)
        text = _SYSLOG_HOST.sub(self._syslog_host, text)
        # A value one line gave away by its position ("backup01 cron[12]:") is the same value
        # where it stands alone in another line: every value learnt so far is swept once more.
        known = self._known_values()
        return known.sub(lambda m: self._by_value[m.group(0)], text) if known else text

    def _known_values(self) -> re.Pattern[str] | None:
        if self._sweep is None or self._sweep[0] != len(self._by_value):
            values = sorted(self._by_value, key=len, reverse=True)
            alternatives = "|".join(re.escape(v) for v in values)
            pattern = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-])") if values else None
            self._sweep = (len(self._by_value), pattern)
        return self._sweep[1]

    def _syslog_host(self, match: re.Match[str]) -> str:
        host = match.group("h")
        if _PLACEHOLDER.fullmatch(host) or host.isdigit() or re.fullmatch(r"[\d:]+", host):
            return match.group(0)
        return self._placeholder("HOST", host) + " "

    def _ipv6(self, match: re.Match[str]) -> str:
        value = match.group(0)
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            return value  # a clock time or MAC-like token, not an address
        return self._placeholder("IP", value)

    def _user_in_match(self, match: re.Match[str]) -> str:
        user = match.group("u")
        if _PLACEHOLDER.fullmatch(user):
            return match.group(0)
        start, end = match.span("u")
        offset = match.start(0)
        whole = match.group(0)
        return whole[: start - offset] + self._placeholder("USER", user) + whole[end - offset :]

    def restore(self, text: str) -> str:
        """Put the real values back where the placeholders stand (unknown ones stay)."""
        return _PLACEHOLDER.sub(lambda m: self._back.get(m.group(0), m.group(0)), text)

    def leaked(self, text: str) -> list[str]:
        """Real values still standing as words in ``text`` (a check before sending)."""
        return sorted(v for v in set(self._back.values()) if _word(v).search(text))


def _word(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-])")


def llm_payload(findings: Iterable[Finding], redactor: Redactor) -> list[dict[str, Any]]:
    """The allow-listed, redacted view of the findings that may leave the lab.

    Two passes: a value learnt from a later finding (a host name a syslog line gives away) is
    also hidden where an earlier finding mentions it alone; the placeholders stay the same.
    """
    findings = list(findings)
    _payload(findings, redactor)
    return _payload(findings, redactor)


def _payload(findings: list[Finding], redactor: Redactor) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in findings:
        row: dict[str, Any] = {}
        for field in ALLOWED_FIELDS:
            value = getattr(f, field)
            if field == "evidence":
                value = [
                    redactor.redact(line[:MAX_EVIDENCE_CHARS])
                    for line in value[:MAX_EVIDENCE_LINES]
                ]
            elif isinstance(value, str):
                value = redactor.redact(value)
            elif hasattr(value, "value"):
                value = value.value
            row[field] = value
        out.append(row)
    return out


def payload_text(payload: list[dict[str, Any]]) -> str:
    """The redacted values of a payload, one per line: what :meth:`Redactor.leaked` checks. Not
    the prompt itself, whose JSON keys ("rule", "status") and frame are words a redacted value
    may also be (``"Alert rule 5503: ..."`` makes "rule" a syslog host name)."""
    values: list[str] = []
    for row in payload:
        for value in row.values():
            values.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return "\n".join(values)


def redactor_for(findings: Iterable[Finding], hosts: Iterable[str] = ()) -> Redactor:
    """A redactor knowing the entities and users of these findings, plus the inventory's hosts."""
    findings = list(findings)
    known_hosts = set(hosts)
    for f in findings:
        if f.entity and not _IPV4.fullmatch(f.entity):
            known_hosts.add(f.entity)
    # "nextcloud.lab.internal" shows up as plain "nextcloud" in its own log lines
    known_hosts |= {h.split(".")[0] for h in known_hosts if "." in h}
    users = {u for f in findings for u in f.users}
    return Redactor(hosts=known_hosts, users=users)


def users_in(line: str) -> list[str]:
    """User names a log line mentions (failed logins, sudo, PAM), in order."""
    found: list[str] = []
    for pattern in _USER_PATTERNS:
        found.extend(m.group("u") for m in pattern.finditer(line))
    return list(dict.fromkeys(u for u in found if u))


def foreign_values(answer: str, findings: Iterable[Finding]) -> list[str]:
    """What a summary names that the findings sent do not: an address or e-mail from nowhere,
    or a placeholder that was never handed out. The summary may only reorder and phrase the
    digest; one that names something else followed an instruction, not the data."""
    known = " ".join(
        " ".join([f.title, f.entity, f.ip or "", f.rule or "", *f.users, *f.evidence])
        for f in findings
    )
    named = [m.group(0) for pattern in (_IPV4, _EMAIL) for m in pattern.finditer(answer)]
    named += [m.group(0) for m in _PLACEHOLDER.finditer(answer)]  # left after restore: unknown
    return sorted({v for v in named if _PLACEHOLDER.fullmatch(v) or not _word(v).search(known)})
