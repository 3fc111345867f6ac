"""CVE lookup of pending updates: OSV (``/v1/querybatch`` + ``/v1/vulns/{id}``), the Debian
security tracker JSON and the CISA KEV feed, each cached in the lab's state directory. Reads only
(the sources and the local cache file).

A feed that cannot be fetched falls back to its cached copy, named stale with its age; with no
copy it is unreachable, and every host that needed it is "could not check" for CVEs (never "no
CVEs"). Matching, severity and ranking are ``labops/patching/cves.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect import task
from pydantic import BaseModel, Field

from labops.config.policies.cves import CvePolicy
from labops.http import HttpClient
from labops.patching import cves as core

CACHE_FILE = "cve-cache.json"


class HostPackages(BaseModel):
    """What one host asks: its OS and its pending updates (name, installed, offered)."""

    host: str
    os_id: str
    version_id: str | None = None
    codename: str | None = None
    packages: list[tuple[str, str, str]] = Field(default_factory=list)


class HostCves(BaseModel):
    host: str
    cves: list[core.PackageCve] = Field(default_factory=list)
    could_not_check: str | None = None


class CveLookup(BaseModel):
    hosts: list[HostCves] = Field(default_factory=list)
    feeds: list[core.FeedState] = Field(default_factory=list)
    queries: int = 0
    osv_calls: int = 0


class _Cache:
    """One JSON file: feeds (``{name: {"at": epoch, "data": ...}}``), OSV answers and advisories
    (``{key: {"at": epoch, ...}}``). A broken file is started afresh."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CACHE_FILE
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        for part in ("feeds", "osv", "vulns"):
            if not isinstance(self.data.get(part), dict):
                self.data[part] = {}

    def get(self, part: str, key: str, max_age_s: float | None) -> Any:
        item = self.data[part].get(key)
        if not isinstance(item, dict):
            return None
        if max_age_s is not None and time.time() - float(item.get("at", 0)) > max_age_s:
            return None
        return item

    def put(self, part: str, key: str, **value: Any) -> None:
        self.data[part][key] = {"at": time.time(), **value}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def _get(url: str, policy: CvePolicy, system: str) -> Any:
    parts = urlsplit(url)  # the client's base is the origin; the feed's path is asked for
    with HttpClient(system, f"{parts.scheme}://{parts.netloc}", retry=policy.retry) as client:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return client.request("GET", path or "/").json()


def _feed(
    name: core.FeedName,
    url: str,
    policy: CvePolicy,
    cache: _Cache,
    reduce: Callable[[Any], Any],
    released: Callable[[Any], datetime | None],
) -> tuple[Any, core.FeedState]:
    """A whole-file feed: fetched when the cached copy is older than ``refresh_h``; on failure
    the cached copy (stale), else nothing (unreachable)."""
    fresh = cache.get("feeds", name, policy.refresh_h * 3600)
    error = ""
    if fresh is None:
        try:
            data = reduce(_get(url, policy, name))
            cache.put("feeds", name, data=data)
            fresh = cache.get("feeds", name, None)
        except Exception as exc:  # any failure: say which, fall back to the copy
            error = f"{type(exc).__name__}: {exc}"[:200]
    item = fresh or cache.get("feeds", name, None)
    if item is None:
        return None, core.FeedState(name=name, url=url, health="unreachable", detail=error)
    fetched_age = (time.time() - float(item["at"])) / 3600
    when = released(item["data"])
    age = (datetime.now(UTC) - when).total_seconds() / 3600 if when else fetched_age
    stale = bool(error) or age > policy.max_age_h
    detail = f"fetch failed, cached copy used ({error})" if error else ""
    if not error and stale:
        detail = f"older than patching.cves.max_age_h ({policy.max_age_h:g} h)"
    return item["data"], core.FeedState(
        name=name, url=url, health="stale" if stale else "fresh", age_h=round(age, 1), detail=detail
    )


def _kev_reduce(raw: Any) -> dict[str, Any]:
    cves, released = core.parse_kev(raw)
    return {"cves": sorted(cves), "released": released.isoformat() if released else None}


def _kev_released(data: Any) -> datetime | None:
    value = data.get("released") if isinstance(data, dict) else None
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _tracker_reduce(raw: Any) -> dict[str, Any]:
    """Only the urgencies, in the tracker's own shape (``{source: {cve: {"releases": {codename:
    {"urgency": ...}}}}}``): what ``labops.patching.cves.tracker_urgency`` reads."""
    if not isinstance(raw, dict):
        raise ValueError("debian tracker: expected a JSON object")
    out: dict[str, Any] = {}
    for source, entries in raw.items():
        if not isinstance(entries, dict):
            continue
        for cve, entry in entries.items():
            releases = entry.get("releases") if isinstance(entry, dict) else None
            if isinstance(releases, dict):
                urg = {
                    code: {"urgency": r["urgency"]}
                    for code, r in releases.items()
                    if isinstance(r, dict) and isinstance(r.get("urgency"), str)
                }
                if urg:
                    out.setdefault(source, {})[cve] = {"releases": urg}
    return out


def _osv_ids(
    queries: list[core.OsvQuery], policy: CvePolicy, cache: _Cache, result: CveLookup
) -> dict[str, list[str]]:
    """Advisory ids per query key (cached answers younger than refresh_h reused)."""
    out: dict[str, list[str]] = {}
    todo = []
    for q in queries:
        hit = cache.get("osv", q.key, policy.refresh_h * 3600)
        if hit is not None:
            out[q.key] = list(hit.get("ids", []))
        else:
            todo.append(q)
    if not todo:
        return out
    with HttpClient("osv", policy.osv_url, retry=policy.retry) as client:
        for i in range(0, len(todo), policy.osv_batch):
            chunk = todo[i : i + policy.osv_batch]
            body = {"queries": [q.body() for q in chunk]}
            result.osv_calls += 1
            answer = client.request("POST", "/v1/querybatch", json=body).json()
            for q, ids in zip(chunk, core.batch_ids(answer, len(chunk)), strict=True):
                out[q.key] = ids
                cache.put("osv", q.key, ids=ids)
    return out


def _advisories(
    ids: set[str], policy: CvePolicy, cache: _Cache, result: CveLookup
) -> dict[str, core.Advisory]:
    out: dict[str, core.Advisory] = {}
    todo = []
    for vid in sorted(ids):
        hit = cache.get("vulns", vid, None)  # an advisory's CVEs do not change
        if hit is not None:
            out[vid] = core.Advisory.model_validate(hit["advisory"])
        else:
            todo.append(vid)
    if not todo:
        return out
    with HttpClient("osv", policy.osv_url, retry=policy.retry) as client:
        for vid in todo:
            result.osv_calls += 1
            adv = core.parse_advisory(client.request("GET", f"/v1/vulns/{vid}").json())
            cache.put("vulns", vid, advisory=adv.model_dump())
            out[vid] = adv
    return out


def lookup(policy: CvePolicy, state_dir: Path, hosts: list[HostPackages]) -> CveLookup:
    """The CVEs each host's pending updates fix, and how every source answered."""
    result = CveLookup()
    cache = _Cache(state_dir)
    kev_data, kev_state = _feed("kev", policy.kev_url, policy, cache, _kev_reduce, _kev_released)
    result.feeds.append(kev_state)
    tracker: Any = None
    if policy.tracker_url and any(h.os_id == "debian" for h in hosts):
        tracker, state = _feed(
            "debian-tracker", policy.tracker_url, policy, cache, _tracker_reduce, lambda _: None
        )
        result.feeds.append(state)
    kev = set(kev_data["cves"]) if kev_data else set()
    # two queries per package: at the installed and at the offered version
    plans: dict[str, list[tuple[str, str, core.OsvQuery, core.OsvQuery]]] = {}
    queries: dict[str, core.OsvQuery] = {}
    unchecked: dict[str, str] = {}
    for h in hosts:
        eco = core.ecosystem(h.os_id, h.version_id)
        if eco is None:
            unchecked[h.host] = f"no OSV ecosystem for {h.os_id} {h.version_id or '?'}"
            continue
        rows = []
        for name, before, after in h.packages:
            src = core.source_name(name)
            q1 = core.OsvQuery(ecosystem=eco, name=src, version=before)
            q2 = core.OsvQuery(ecosystem=eco, name=src, version=after)
            queries[q1.key], queries[q2.key] = q1, q2
            rows.append((name, after, q1, q2))
        plans[h.host] = rows
    result.queries = len(queries)
    osv_error = ""
    ids: dict[str, list[str]] = {}
    advisories: dict[str, core.Advisory] = {}
    started = time.monotonic()
    try:
        ids = _osv_ids(list(queries.values()), policy, cache, result)
        advisories = _advisories({i for v in ids.values() for i in v}, policy, cache, result)
    except Exception as exc:
        osv_error = f"{type(exc).__name__}: {exc}"[:200]
    took = time.monotonic() - started
    result.feeds.insert(
        0,
        core.FeedState(
            name="osv",
            url=policy.osv_url,
            health="unreachable" if osv_error else "fresh",
            detail=osv_error or f"{result.queries} queries, {result.osv_calls} calls, {took:.2f} s",
        ),
    )
    cache.save()
    for h in hosts:
        if h.host in unchecked:
            result.hosts.append(HostCves(host=h.host, could_not_check=unchecked[h.host]))
            continue
        if osv_error:
            result.hosts.append(HostCves(host=h.host, could_not_check=f"osv: {osv_error}"))
            continue
        if kev_data is None:
            reason = f"kev unreachable: {kev_state.detail}"
            result.hosts.append(HostCves(host=h.host, could_not_check=reason))
            continue
        rows_out = []
        for name, after, q1, q2 in plans[h.host]:
            for vid in core.fixed_by(ids.get(q1.key, []), ids.get(q2.key, [])):
                adv = advisories[vid]
                src = core.source_name(name)
                urgency = {c: core.tracker_urgency(tracker, src, c, h.codename) for c in adv.cves}
                for cve, sev, score, sev_from, in_kev in core.rate(adv, kev, urgency):
                    rows_out.append(
                        core.PackageCve(
                            package=name,
                            to_version=after,
                            cve=cve,
                            advisory=vid,
                            severity=sev,
                            score=score,
                            severity_from=sev_from,
                            kev=in_kev,
                        )
                    )
        result.hosts.append(HostCves(host=h.host, cves=_dedupe(rows_out)))
    return result


def _dedupe(rows: list[core.PackageCve]) -> list[core.PackageCve]:
    """One row per (package, CVE): an advisory and its alias name the same CVE."""
    seen: dict[tuple[str, str], core.PackageCve] = {}
    for r in rows:
        key = (r.package, r.cve)
        old = seen.get(key)
        if old is None or core.rank_key(r.kev, r.severity, False) > core.rank_key(
            old.kev, old.severity, False
        ):
            seen[key] = r
    return list(seen.values())


@task(name="cve-lookup")
def cve_lookup(policy: CvePolicy, state_dir: Path, hosts: list[HostPackages]) -> CveLookup:
    """CVEs of the pending updates (OSV, Debian tracker, KEV; cached). Reads only."""
    return lookup(policy, state_dir, hosts)
