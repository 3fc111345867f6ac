"""Technitium DNS tasks: the records of the internal zone. Reads only.

Technitium answers errors with HTTP 200 and ``"status": "error"`` (or ``"invalid-token"``), so the
envelope's ``status`` is checked, not the HTTP code.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks.edge import TechnitiumDns
from labops.certificates.sources import DnsRecord
from labops.errors import ApiError, AuthFailed


def _response(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("technitium", f"{path}: unexpected answer")
    status = body.get("status")
    if status == "invalid-token":
        raise AuthFailed("technitium", f"{path}: {body.get('errorMessage', 'invalid token')}")
    if status != "ok":
        raise ApiError("technitium", f"{path}: {body.get('errorMessage', status)}")
    response = body.get("response")
    return response if isinstance(response, dict) else {}


@task(name="technitium-zone-records", retries=1)
def zone_records(block: TechnitiumDns) -> list[DnsRecord]:
    """A, AAAA and CNAME records of the internal zone (``zones/records/get?listZone=true``)."""
    path = "/api/zones/records/get"
    with block.get_client() as client:
        body = client.get_json(
            path,
            params={"domain": block.settings.zone, "zone": block.settings.zone, "listZone": "true"},
        )
    out = []
    for r in _response(body, path).get("records", []):
        data = r.get("rData") or {}
        value = data.get("ipAddress") or data.get("cname") or ""
        if r.get("type") in ("A", "AAAA", "CNAME") and value:
            out.append(
                DnsRecord(
                    name=str(r["name"]).lower().rstrip("."),
                    type=r["type"],
                    value=str(value),
                    disabled=bool(r.get("disabled")),
                )
            )
    return out
