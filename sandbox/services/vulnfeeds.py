"""Vulnerability sources a homelab reaches: the OSV API, the Debian security tracker JSON and the
CISA Known Exploited Vulnerabilities feed, each on its own port with its own faults (systems
``osv``, ``debian-tracker``, ``kev``).

Wire formats as the real services answer:
- OSV ``POST /v1/querybatch`` ``{"queries": [{"package": {"name", "ecosystem"}, "version"}]}`` ->
  ``{"results": [{"vulns": [{"id", "modified"}]}, {}]}`` (ids only, one result per query, an
  empty object when nothing matches); ``GET /v1/vulns/{id}`` -> the OSV record (``id``,
  ``modified``, ``published``, ``aliases``, ``upstream``, ``summary``, ``severity``,
  ``affected[].package``/``ranges``/``ecosystem_specific``); an ecosystem OSV does not know
  answers 400 ``{"code": 3, "message": ...}``.
- Tracker ``GET /tracker/data/json``: ``{source: {CVE: {"description", "scope", "releases":
  {codename: {"status", "repositories", "fixed_version", "urgency"}}}}}``.
- KEV ``GET /feeds/known_exploited_vulnerabilities.json``: ``{"title", "catalogVersion",
  "dateReleased", "count", "vulnerabilities": [{"cveID", "vendorProject", "product",
  "vulnerabilityName", "dateAdded", "shortDescription", "requiredAction", "dueDate",
  "knownRansomwareCampaignUse", "notes", "cwes"}]}``.

The advisories are a few real ones for the packages the sandbox's releases offer updates for
(data/advisories in :data:`ADVISORIES`). A version is affected when it is not the fixed one: the
sandbox's catalogue has exactly two versions of each package (installed, offered), so no version
ordering is needed here.

Controls: ``kev_add {"cves": [...]}`` (mark CVEs known-exploited), ``kev_age {"days": N}``
(dateReleased N days ago: a stale mirror), ``stats`` (requests served, for tests and bench).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.web import fault_middleware, serve

V3 = "CVSS:3.1/"
# (id, ecosystem, source package, fixed version, CVEs, CVSS v3 vector or None, ubuntu priority)
ADVISORIES: list[tuple[str, str, str, str, list[str], str | None, str | None]] = [
    (
        "DSA-6015-1",
        "Debian:12",
        "openssl",
        "3.0.17-1~deb12u3",
        ["CVE-2025-9230", "CVE-2025-9232"],
        V3 + "AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H",
        None,
    ),
    (
        "DEBIAN-CVE-2025-61984",
        "Debian:12",
        "openssh",
        "1:9.2p1-2+deb12u7",
        ["CVE-2025-61984"],
        None,
        None,
    ),
    (
        "DEBIAN-CVE-2025-9086",
        "Debian:12",
        "curl",
        "7.88.1-10+deb12u14",
        ["CVE-2025-9086"],
        V3 + "AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L",
        None,
    ),
    (
        "DSA-5954-1",
        "Debian:12",
        "sudo",
        "1.9.13p3-1+deb12u2",
        ["CVE-2025-32462"],
        V3 + "AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H",
        None,
    ),
    (
        "DEBIAN-CVE-2024-8176",
        "Debian:12",
        "expat",
        "2.5.0-1+deb12u2",
        ["CVE-2024-8176"],
        V3 + "AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
        None,
    ),
    (
        "DEBIAN-CVE-2025-23419",
        "Debian:12",
        "nginx",
        "1.22.1-9+deb12u3",
        ["CVE-2025-23419"],
        V3 + "AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N",
        None,
    ),
    (
        "DSA-6014-1",
        "Debian:13",
        "openssl",
        "3.5.4-1~deb13u1",
        ["CVE-2025-9230", "CVE-2025-9231", "CVE-2025-9232"],
        V3 + "AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H",
        None,
    ),
    (
        "UBUNTU-CVE-2025-9230",
        "Ubuntu:24.04:LTS",
        "openssl",
        "3.0.13-0ubuntu3.6",
        ["CVE-2025-9230"],
        None,
        "medium",
    ),
    (
        "UBUNTU-CVE-2025-4802",
        "Ubuntu:24.04:LTS",
        "glibc",
        "2.39-0ubuntu8.6",
        ["CVE-2025-4802"],
        None,
        "medium",
    ),
    (
        "ALPINE-CVE-2024-12797",
        "Alpine:v3.20",
        "openssl",
        "3.3.3-r0",
        ["CVE-2024-12797"],
        V3 + "AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N",
        None,
    ),
    (
        "ALPINE-CVE-2025-0665",
        "Alpine:v3.20",
        "curl",
        "8.12.1-r0",
        ["CVE-2025-0665", "CVE-2025-0725"],
        None,
        None,
    ),
    (
        "ALPINE-CVE-2025-26465",
        "Alpine:v3.20",
        "openssh",
        "9.7_p1-r5",
        ["CVE-2025-26465"],
        V3 + "AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:H/A:N",
        None,
    ),
]
ECOSYSTEMS = {
    "Debian:11",
    "Debian:12",
    "Debian:13",
    "Ubuntu:22.04:LTS",
    "Ubuntu:24.04:LTS",
    "Alpine:v3.19",
    "Alpine:v3.20",
    "Alpine:v3.21",
}
CODENAMES = {"Debian:12": "bookworm", "Debian:13": "trixie", "Debian:11": "bullseye"}
# Debian's own urgencies for the Debian CVEs (the tracker's word where OSV has no score)
URGENCY = {"CVE-2025-61984": "low", "CVE-2025-32462": "not yet assigned"}
# A real KEV entry (sudo chroot, added 2025-09-29): none of the sandbox's updates fixes it.
KEV_BASE = [
    {
        "cveID": "CVE-2025-32463",
        "vendorProject": "Sudo",
        "product": "Sudo",
        "vulnerabilityName": "Sudo Inclusion of Functionality from Untrusted Control Sphere "
        "Vulnerability",
        "dateAdded": "2025-09-29",
        "shortDescription": "Sudo contains an inclusion of functionality from untrusted control "
        "sphere vulnerability (chroot option).",
        "requiredAction": "Apply mitigations per vendor instructions.",
        "dueDate": "2025-10-20",
        "knownRansomwareCampaignUse": "Unknown",
        "notes": "https://www.sudo.ws/security/advisories/chroot_bug/",
        "cwes": ["CWE-829"],
    }
]


def _record(adv: tuple[str, str, str, str, list[str], str | None, str | None]) -> dict[str, Any]:
    vid, eco, pkg, fixed, cves, vector, priority = adv
    record: dict[str, Any] = {
        "schema_version": "1.6.0",
        "id": vid,
        "modified": "2025-10-01T12:00:00Z",
        "published": "2025-09-30T00:00:00Z",
        "summary": f"{pkg} security update",
        "affected": [
            {
                "package": {"name": pkg, "ecosystem": eco, "purl": f"pkg:deb/{pkg}"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
            }
        ],
    }
    # DSA/DLA records name their CVEs in "upstream"; DEBIAN-/UBUNTU-/ALPINE-CVE-* ones too
    record["upstream"] = cves
    if vector:
        record["severity"] = [{"type": "CVSS_V3", "score": vector}]
    if priority:
        record["severity"] = [{"type": "Ubuntu", "score": priority}]
    return record


class VulnFeedsService(Service):
    name = "vulnfeeds"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.records = {a[0]: _record(a) for a in ADVISORIES}
        self.kev_extra: list[str] = []
        self.kev_age_days = 0.0
        self.stats = {"querybatch": 0, "queries": 0, "vulns": 0, "kev": 0, "tracker": 0}
        self.ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        sites = {
            "osv": [
                ("POST", "/v1/querybatch", self.querybatch),
                ("GET", "/v1/vulns/{id}", self.vuln),
            ],
            "debian-tracker": [("GET", "/tracker/data/json", self.tracker)],
            "kev": [("GET", "/feeds/known_exploited_vulnerabilities.json", self.kev)],
        }
        for system, routes in sites.items():
            app = web.Application(middlewares=[fault_middleware(self.ctx, system)])
            for method, path, handler in routes:
                app.router.add_route(method, path, handler)
            port = self.ctx.port()
            self.ports[system] = port
            self._runners.append(await serve(self.ctx, app, port))

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def url(self, system: str) -> str:
        return f"http://{self.ctx.host}:{self.ports[system]}"

    def config_fragment(self) -> dict[str, Any]:
        return {
            "patching": {
                "cves": {
                    "osv_url": self.url("osv"),
                    "tracker_url": self.url("debian-tracker") + "/tracker/data/json",
                    "kev_url": self.url("kev") + "/feeds/known_exploited_vulnerabilities.json",
                }
            }
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "kev_add":
            self.kev_extra += [str(c) for c in payload.get("cves", [])]
            return {"kev": self.kev_extra}
        if action == "kev_age":
            self.kev_age_days = float(payload.get("days", 0))
            return {"days": self.kev_age_days}
        if action == "reset":
            self.kev_extra, self.kev_age_days = [], 0.0
            return {}
        if action == "stats":
            return dict(self.stats)
        raise KeyError(action)

    # -- OSV --------------------------------------------------------------------------------------

    def _matches(self, eco: str, name: str, version: str) -> list[dict[str, Any]]:
        out = []
        for record in self.records.values():
            for aff in record["affected"]:
                pkg = aff["package"]
                fixed = aff["ranges"][0]["events"][-1]["fixed"]
                if pkg["ecosystem"] == eco and pkg["name"] == name and version != fixed:
                    out.append({"id": record["id"], "modified": record["modified"]})
        return out

    async def querybatch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            queries = body["queries"]
            assert isinstance(queries, list)
        except (ValueError, KeyError, AssertionError):
            return web.json_response({"code": 3, "message": "Invalid query."}, status=400)
        if len(queries) > 1000:
            return web.json_response(
                {"code": 3, "message": "Too many queries (max 1000)."}, status=400
            )
        self.stats["querybatch"] += 1
        self.stats["queries"] += len(queries)
        results = []
        for q in queries:
            pkg = q.get("package") or {}
            eco = str(pkg.get("ecosystem", ""))
            if eco not in ECOSYSTEMS:
                return web.json_response(
                    {"code": 3, "message": f"Invalid ecosystem: {eco}"}, status=400
                )
            vulns = self._matches(eco, str(pkg.get("name", "")), str(q.get("version", "")))
            results.append({"vulns": vulns} if vulns else {})
        return web.json_response({"results": results})

    async def vuln(self, request: web.Request) -> web.Response:
        self.stats["vulns"] += 1
        record = self.records.get(request.match_info["id"])
        if record is None:
            return web.json_response({"code": 5, "message": "Bug not found."}, status=404)
        return web.json_response(record)

    # -- Debian tracker and KEV -------------------------------------------------------------------

    async def tracker(self, request: web.Request) -> web.Response:
        self.stats["tracker"] += 1
        out: dict[str, Any] = {}
        for vid, eco, pkg, fixed, cves, _vector, _prio in ADVISORIES:
            code = CODENAMES.get(eco)
            if code is None:
                continue
            for cve in cves:
                entry = out.setdefault(pkg, {}).setdefault(
                    cve, {"description": f"{pkg}: see {vid}", "scope": "remote", "releases": {}}
                )
                entry["releases"][code] = {
                    "status": "resolved",
                    "repositories": {code: fixed, f"{code}-security": fixed},
                    "fixed_version": fixed,
                    "urgency": URGENCY.get(cve, "not yet assigned"),
                }
        return web.json_response(out)

    async def kev(self, request: web.Request) -> web.Response:
        self.stats["kev"] += 1
        released = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.kev_age_days)
        vulns = list(KEV_BASE)
        for cve in self.kev_extra:
            vulns.append(
                {
                    **KEV_BASE[0],
                    "cveID": cve,
                    "vendorProject": "Sandbox",
                    "product": "sandbox",
                    "dateAdded": released.date().isoformat(),
                    "shortDescription": "marked known-exploited by a test",
                }
            )
        return web.json_response(
            {
                "title": "CISA Catalog of Known Exploited Vulnerabilities",
                "catalogVersion": released.strftime("%Y.%m.%d"),
                "dateReleased": released.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "count": len(vulns),
                "vulnerabilities": vulns,
            }
        )


SERVICE = VulnFeedsService
