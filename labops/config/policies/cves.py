"""Policy of the CVE lookup of a patch check (``patching.cves``): where the advisories come from
(configurable URLs: a local mirror for an air-gapped lab), how old cached data may be, and what
counts as exposed. Absent: no CVE lookup (the report says so)."""

from __future__ import annotations

from pydantic import Field

from labops.config.systems import Strict
from labops.http_settings import HttpRetry


class CvePolicy(Strict):
    """The CVE sources and their freshness limits."""

    osv_url: str = Field("https://api.osv.dev", description="OSV API base (/v1/querybatch).")
    tracker_url: str | None = Field(
        "https://security-tracker.debian.org/tracker/data/json",
        description="Debian security tracker JSON (urgency of Debian CVEs); None: not used.",
    )
    kev_url: str = Field(
        "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
        description="CISA Known Exploited Vulnerabilities catalog (JSON feed).",
    )
    max_age_h: float = Field(
        72.0,
        gt=0,
        description="A feed (KEV, tracker) older than this is named stale in the report; the "
        "KEV catalog's age is its dateReleased, the tracker's the time it was fetched.",
    )
    refresh_h: float = Field(
        12.0, ge=0, description="Cached feeds and OSV answers younger than this are not fetched."
    )
    osv_batch: int = Field(1000, ge=1, le=1000, description="Queries per /v1/querybatch call.")
    retry: HttpRetry = Field(
        # the tracker's JSON is tens of MB (all of Debian's CVEs): room above the 64 MB default
        default_factory=lambda: HttpRetry(
            attempts=2, timeout_s=30.0, max_response_bytes=256 * 1024**2
        ),
        description="Timeouts, retries and the largest answer read, for every CVE source.",
    )
