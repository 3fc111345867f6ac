"""Pure readers of each source's answers: raw API JSON in, findings out (no I/O)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from labops.config.policies.digest import LogQuery, PromCheck
from labops.digest.findings import MAX_EVIDENCE, Collected, Finding
from labops.digest.redaction import users_in
from labops.outcome import Checked, CouldNotCheck, read_check_columns
from labops.reports import Severity

_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)? ([+-]\d{4}) \w+$")


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 / ISO 8601 (``+0000`` too), Go's ``time.String()``, epoch s/ms/ns; else None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        try:
            number = float(value)
            if not math.isfinite(number):
                return None
            while number > 1e11:  # ms or ns
                number /= 1000
            return datetime.fromtimestamp(number, UTC)
        except (ValueError, OverflowError, OSError):  # before year 1, or past 9999
            return None
    text = str(value).strip()
    go = _GO_TIME.match(text)
    if go:
        text = f"{go.group(1)}T{go.group(2)}{go.group(3) or ''}{go.group(4)}"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sev(name: str) -> Severity:
    return Severity(name)


# Answers come from outside: an item or field of an unexpected shape is skipped or read as
# empty, never the reason a whole source fails.
def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objs(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


# -- Wazuh -------------------------------------------------------------------------------------


def wazuh_alert_findings(hits: Iterable[dict[str, Any]], critical_level: int) -> list[Finding]:
    """Indexer hits (``hits.hits``) aggregated by rule and agent."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for hit in _objs(hits):
        doc = _obj(hit.get("_source", hit))
        rule = _obj(doc.get("rule"))
        who = _obj(doc.get("agent"))
        groups[(str(rule.get("id", "?")), str(who.get("name") or who.get("id") or "?"))].append(doc)
    out = []
    for (rule_id, agent), docs in groups.items():
        level = max(_int(_obj(d.get("rule")).get("level")) for d in docs)
        times = [t for d in docs if (t := parse_time(d.get("timestamp") or d.get("@timestamp")))]
        ips = {
            str(_obj(d.get("data")).get("srcip")) for d in docs if _obj(d.get("data")).get("srcip")
        }
        users = {
            str(u)
            for d in docs
            for k in ("srcuser", "dstuser")
            if (u := _obj(d.get("data")).get(k))
        }
        evidence = [str(d["full_log"])[:300] for d in docs if d.get("full_log")]
        first = _obj(docs[0].get("rule"))
        out.append(
            Finding(
                source="wazuh",
                severity=Severity.CRITICAL if level >= critical_level else Severity.WARNING,
                title=f"{first.get('description', 'Wazuh rule ' + rule_id)} (level {level})",
                entity=agent,
                rule=rule_id,
                count=len(docs),
                first_seen=min(times) if times else None,
                last_seen=max(times) if times else None,
                ip=next(iter(ips)) if len(ips) == 1 else None,
                users=sorted(users),
                evidence=list(dict.fromkeys(evidence))[:MAX_EVIDENCE],
            )
        )
    return out


def wazuh_agent_findings(agents: Iterable[dict[str, Any]]) -> list[Finding]:
    """Agents from ``GET /agents?status=...`` (disconnected / never connected / pending)."""
    out = []
    for a in _objs(agents):
        if a.get("id") == "000":  # the manager itself
            continue
        status = str(a.get("status", "unknown"))
        severity = Severity.WARNING if status == "disconnected" else Severity.INFO
        name = str(a.get("name") or a.get("id"))
        out.append(
            Finding(
                source="wazuh",
                severity=severity,
                title=f"Wazuh agent {status.replace('_', ' ')}",
                entity=name,
                rule=f"agent-{status}",
                last_seen=parse_time(a.get("lastKeepAlive")),
                evidence=[f"agent {a.get('id')} {name} ip={a.get('ip')} status={status}"[:300]],
            )
        )
    return out


# -- CrowdSec ----------------------------------------------------------------------------------


def active_bans(decisions: list[dict[str, Any]] | None) -> list[str]:
    """Values of active IP/range bans (``GET /v1/decisions`` answers ``null`` when empty)."""
    return sorted(
        {
            str(d["value"])
            for d in _objs(decisions)
            if d.get("type") == "ban"
            and str(d.get("scope", "")).lower() in ("ip", "range")
            and d.get("value")
            and not d.get("simulated")
        }
    )


def crowdsec_findings(
    alerts: list[dict[str, Any]] | None, banned: Iterable[str], repeat_alerts: int
) -> list[Finding]:
    """Alerts grouped by scenario and source; repeat offenders as a finding of their own.

    An alert whose IP is banned is handled (info); one without a ban is a warning.
    """
    banned_set = set(banned)
    per_ip: dict[str, list[dict[str, Any]]] = defaultdict(list)
    out: list[Finding] = []
    for alert in _objs(alerts):
        source = _obj(alert.get("source"))
        ip = str(source.get("ip") or source.get("value") or "?")
        per_ip[ip].append(alert)
        when = [t for k in ("start_at", "stop_at", "created_at") if (t := parse_time(alert.get(k)))]
        where = ", ".join(str(x) for x in (source.get("as_name"), source.get("cn")) if x)
        scenario = str(alert.get("scenario") or "?")
        out.append(
            Finding(
                source="crowdsec",
                severity=Severity.INFO if ip in banned_set else Severity.WARNING,
                title=f"{scenario}"
                + (f" ({where})" if where else "")
                + (": banned" if ip in banned_set else ": not banned"),
                entity=ip,
                rule=scenario,
                ip=ip if _IPV4.fullmatch(ip) else None,
                count=max(0, _int(alert.get("events_count"), 1) or 1),
                first_seen=min(when) if when else None,
                last_seen=max(when) if when else None,
                evidence=[str(alert.get("message", ""))[:300]] if alert.get("message") else [],
            )
        )
    for ip, items in per_ip.items():
        if len(items) < repeat_alerts:
            continue
        scenarios = sorted({str(a.get("scenario")) for a in items})
        out.append(
            Finding(
                source="crowdsec",
                severity=Severity.WARNING,
                title=f"Repeat offender: {len(items)} alerts ({', '.join(scenarios)})",
                entity=ip,
                rule="repeat-offender",
                ip=ip if _IPV4.fullmatch(ip) else None,
                count=len(items),
            )
        )
    return out


# -- Loki --------------------------------------------------------------------------------------


def loki_findings(query: LogQuery, body: dict[str, Any]) -> list[Finding]:
    """A ``query_range`` streams answer: one finding per entity and source IP."""
    data = _obj(_obj(body).get("data"))
    if data.get("resultType") not in (None, "streams"):
        raise ValueError(f"log query {query.name!r} returned {data.get('resultType')}, not streams")
    lines: dict[tuple[str, str | None], list[tuple[datetime | None, str]]] = defaultdict(list)
    for stream in _objs(data.get("result")):
        labels = _obj(stream.get("stream"))
        entity = str(labels.get(query.entity_label) or labels.get("job") or "unknown")
        raw = stream.get("values")
        for pair in raw if isinstance(raw, list) else []:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
                continue
            ts, line = pair
            ip_match = _IPV4.search(line)
            lines[(entity, ip_match.group(0) if ip_match else None)].append((parse_time(ts), line))
    out = []
    for (entity, ip), items in lines.items():
        if len(items) < query.min_count:
            continue
        times = [t for t, _ in items if t]
        out.append(
            Finding(
                source="loki",
                severity=_sev(query.severity),
                title=query.name + (f" from {ip}" if ip else ""),
                entity=entity,
                rule=query.name + (f"|{ip}" if ip else ""),
                ip=ip,
                count=len(items),
                first_seen=min(times) if times else None,
                last_seen=max(times) if times else None,
                users=sorted({u for _, line in items for u in users_in(line)}),
                evidence=[line[:300] for _, line in sorted(items, key=lambda x: x[0] or _EPOCH)][
                    -MAX_EVIDENCE:
                ],
            )
        )
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- VictoriaMetrics ---------------------------------------------------------------------------


def prom_findings(check: PromCheck, body: dict[str, Any]) -> list[Finding]:
    """An instant-query answer judged by one check."""
    data = _obj(_obj(body).get("data"))
    result = data.get("result") or []
    if data.get("resultType") == "scalar":
        result = [{"metric": {}, "value": result}] if result else []
    result = _objs(result)
    if check.condition == "no_series":
        if result:
            return []
        return [
            Finding(
                source="metrics",
                severity=_sev(check.severity),
                title=check.name,
                entity=check.name,
                rule=check.name,
                evidence=[f"no series for {check.query}"],
            )
        ]
    out = []
    for series in result:
        labels = {str(k): str(v) for k, v in _obj(series.get("metric")).items()}
        parts = [labels[k] for k in check.entity_labels if labels.get(k)]
        entity = " ".join(parts[:2]) or labels.get("__name__", check.name)
        pair = series.get("value")
        value = pair[1] if isinstance(pair, list) and len(pair) > 1 else "?"
        shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        out.append(
            Finding(
                source="metrics",
                severity=_sev(check.severity),
                title=check.name,
                entity=entity,
                rule=check.name,
                evidence=[f"{{{shown}}} = {value}"],
            )
        )
    return out


# -- Proxmox -----------------------------------------------------------------------------------


def pve_task_findings(tasks: Iterable[dict[str, Any]], since: datetime) -> list[Finding]:
    """Failed tasks of ``/cluster/tasks`` that ended in the window, grouped by type and guest."""
    out = []
    for t in _objs(tasks):
        status = str(t.get("status") or "")
        end = parse_time(t.get("endtime"))
        if not status or status == "OK" or status.startswith("WARNINGS") or end is None:
            continue  # running, fine, or warnings only
        if end < since:
            continue
        node = str(t.get("node") or "?")
        guest = str(t.get("id") or "")
        kind = str(t.get("type") or "task")
        entity = f"guest {guest} on {node}" if guest else f"node {node}"
        out.append(
            Finding(
                source="proxmox",
                severity=Severity.WARNING,
                title=f"Proxmox task {kind} failed",
                entity=entity,
                rule=kind,
                first_seen=parse_time(t.get("starttime")),
                last_seen=end,
                users=[str(t["user"]).split("@")[0]] if t.get("user") else [],
                evidence=[f"{t.get('upid', '')}: {status}"[:300]],
            )
        )
    return out


# -- labops' own flows -------------------------------------------------------------------------

_ENTITY_COLUMNS = ("guest", "host", "target", "entity", "name", "vmid")
_STATUS_COLUMNS = ("status", "state", "result", "outcome")


def labops_row_findings(flow: str, rows: Iterable[dict[str, Any]], reported: datetime) -> Collected:
    """What another labops flow's table artifact says, row by row, from its check columns
    (``labops.outcome.check_columns``), never from the words of a status:

    - ok: checked and fine (its scope is checked: earlier findings of it may resolve);
    - found: a finding (the patch check's pending security updates; else the row's status with
      its ``severity`` column);
    - unknown: could not check, why and since when; itself a warning finding;
    - not checked (skipped on purpose): no finding, but earlier findings of it stay unknown.

    ``reported``: when the table was written (the "since" of a row that does not say).
    """
    out = Collected()
    exploited: list[Finding] = []
    exposed: list[Finding] = []
    for row in _objs(rows):
        values = {str(k).lower(): str(v) for k, v in row.items()}
        entity = next((values[k] for k in _ENTITY_COLUMNS if values.get(k)), "?")
        scope = f"{flow}|{entity}"
        state = read_check_columns(values, reported)
        if state.check is None:
            status = next((values[k] for k in _STATUS_COLUMNS if values.get(k)), "skipped")
            out.unknown[scope] = CouldNotCheck(
                reason=f"not checked: {status}"[:300], kind="skipped", since=reported
            )
            continue
        if state.check is Checked.UNKNOWN and state.unknown is not None:
            out.unknown[scope] = state.unknown
            out.findings.append(
                Finding(
                    source="labops",
                    severity=Severity.WARNING,
                    title=f"{flow}: could not check ({state.unknown.kind})",
                    entity=entity,
                    rule=f"{flow}:could-not-check",
                    scope=scope,
                    unknown=state.unknown,
                    evidence=[state.unknown.reason[:300]],
                )
            )
            continue
        out.checked.append(scope)
        if state.check is Checked.FOUND:
            out.findings += _found(flow, entity, scope, values)
            kev = _kev_finding(flow, entity, scope, values)
            if kev is not None:
                exploited.append(kev)
                if values.get("exposed"):
                    exposed.append(kev)
    if exploited:  # at the top of the digest: one line, exposed hosts first
        where = (
            f"{len(exposed)} exposed host(s)"
            + (
                f" (+{len(exploited) - len(exposed)} not exposed)"
                if len(exploited) > len(exposed)
                else ""
            )
            if exposed
            else f"{len(exploited)} host(s) (none exposed)"
        )
        out.findings.append(
            Finding(
                source="labops",
                severity=Severity.CRITICAL,
                title=f"exploited CVE pending on {where}",
                entity=", ".join(f.entity for f in (exposed or exploited)[:5]),
                rule=f"{flow}:kev-summary",
                scope=f"{flow}|kev",
                evidence=[e for f in exploited for e in f.evidence][:10],
            )
        )
        out.findings += exploited
    return out


def _kev_finding(flow: str, entity: str, scope: str, values: dict[str, str]) -> Finding | None:
    """The patch check's ``cves`` cell naming known-exploited CVEs (``4 (high, KEV: CVE-...)``),
    with the Traefik routers of its ``exposed`` cell as evidence."""
    cell = values.get("cves", "")
    if "KEV:" not in cell:
        return None
    cves = cell.split("KEV:", 1)[1].strip(" )")
    exposed = values.get("exposed", "")
    return Finding(
        source="labops",
        severity=Severity.CRITICAL,
        title=f"{flow}: known-exploited CVE pending ({cves[:120]})",
        entity=entity,
        rule=f"{flow}:kev",
        scope=scope,
        evidence=[f"{entity}: {cves[:200]}" + (f" via {exposed[:150]}" if exposed else "")],
    )


def _found(flow: str, entity: str, scope: str, values: dict[str, str]) -> list[Finding]:
    if "security" in values:  # the patch check: pending security updates are the finding
        security = values["security"]
        if not (security.isdigit() and int(security) > 0):
            return []  # updates, none of them security: not a security finding
        return [
            Finding(
                source="labops",
                severity=Severity.WARNING,
                title=f"{flow}: {security} security update(s) pending",
                entity=entity,
                rule=f"{flow}:security-updates",
                scope=scope,
                count=int(security),
            )
        ]
    status = next((values[k] for k in _STATUS_COLUMNS if values.get(k)), "found")
    short = status.split(":")[0].strip()[:80]
    severity = {s.value: s for s in Severity}.get(values.get("severity", ""), Severity.WARNING)
    detail = values.get("reason") or values.get("detail") or values.get("message") or status
    return [
        Finding(
            source="labops",
            severity=severity if severity is not Severity.OK else Severity.WARNING,
            title=f"{flow}: {short}",
            entity=entity,
            rule=f"{flow}:{short}",
            scope=scope,
            evidence=[detail[:300]],
        )
    ]
