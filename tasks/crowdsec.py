"""CrowdSec LAPI tasks: alerts through the machine login, active decisions through the bouncer."""

from __future__ import annotations

from prefect import task

from blocks.security import CrowdsecLapi
from labops.digest.findings import Collected
from labops.digest.sources import active_bans, crowdsec_findings


def since_param(hours: int) -> str:
    """LAPI's ``since`` is a Go duration (``d`` accepted); hours always parse."""
    return f"{hours}h"


@task(name="crowdsec-activity")
def crowdsec_activity(
    lapi: CrowdsecLapi,
    window_hours: int,
    max_alerts: int,
    include_capi: bool,
    repeat_alerts: int,
) -> Collected:
    """Alerts of the window (scenario, source IP, AS, country, events) and the active bans.

    Reads only: ``POST /v1/watchers/login``, ``GET /v1/alerts?since=``, ``GET /v1/decisions``
    (whose body is ``null`` when nothing is banned).
    """
    with lapi.get_client("bouncer") as bouncer:
        decisions = bouncer.get_json("/v1/decisions")
    banned = active_bans(decisions if isinstance(decisions, list) else None)
    params: dict[str, str | int] = {"since": since_param(window_hours), "limit": max_alerts}
    if include_capi:
        params["include_capi"] = "true"
    with lapi.get_client("watcher") as watcher:
        alerts = watcher.get_json("/v1/alerts", params=params)
    alerts = alerts if isinstance(alerts, list) else []
    note = f"read the first {max_alerts} CrowdSec alerts" if len(alerts) >= max_alerts else ""
    return Collected(
        findings=crowdsec_findings(alerts, banned, repeat_alerts), banned_ips=banned, note=note
    )
