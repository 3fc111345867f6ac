"""The dead-man's switch outside the lab: pings to Healthchecks and Uptime Kuma.

The heartbeat metric and its vmalert rules (``deployments/alerts.py``) watch the flows from
inside the lab; if the lab itself goes dark (power, the Prefect host, VictoriaMetrics), nothing
there alerts. These pings go to a service elsewhere that alerts when they stop:

- Healthchecks: ``/start`` when a run starts, the bare URL when it did its job, ``/fail`` when
  it failed; the run's one-line summary is the body (Healthchecks shows it in the log);
- Uptime Kuma push monitors: ``?status=up|down&msg=...&ping=<run time in ms>`` when it ends.

The decisions (which URL, which phase, which body) are pure; :func:`send_pings` sends them, never
raising: each ping that did not arrive is one problem line, its URL's secrets masked.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, SecretStr

from labops.config.model import LabopsConfig
from labops.config.policies.platform import ExternalHeartbeat
from labops.outcome import Outcome, RunResult
from labops.secret_urls import resolve_url, shown_url

SUMMARY_LIMIT = 10_000
"""Healthchecks keeps the first 10 kB (by default 10,000 bytes) of a ping's body."""
DEFAULT_GRACE_MINUTES = 60
"""The grace of a flow without an ``external_heartbeat`` entry (the entry's own default)."""
KUMA_MSG_LIMIT = 250
"""Uptime Kuma shows the message in a one-line list: keep it short."""


class Phase(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAIL = "fail"


class Ping(BaseModel):
    """One HTTP request to a monitoring service."""

    service: str
    """healthchecks or uptime-kuma (and where, secrets masked): how a failure names it."""
    method: str
    url: SecretStr
    body: str = ""


def phase_of(result: RunResult) -> Phase:
    """Success when the run did its job (clean or findings: the lab's problems are the
    notifications' business), fail when it could not."""
    return Phase.FAIL if result.outcome is Outcome.FAILED else Phase.SUCCESS


def summary(flow: str, result: RunResult) -> str:
    """The body of a ping: the flow, its outcome and the one-line detail."""
    return f"{flow}: {result.outcome.value} ({result.detail})"


def healthchecks_url(base: str, phase: Phase) -> str:
    base = base.rstrip("/")
    return {Phase.START: f"{base}/start", Phase.SUCCESS: base, Phase.FAIL: f"{base}/fail"}[phase]


def kuma_url(base: str, up: bool, msg: str, ping_ms: int | None) -> str:
    query = {"status": "up" if up else "down", "msg": msg[:KUMA_MSG_LIMIT]}
    query["ping"] = "" if ping_ms is None else str(max(ping_ms, 0))
    return f"{base.split('?', 1)[0]}?{urlencode(query)}"


def pings_for(
    flow: str,
    heartbeat: ExternalHeartbeat,
    phase: Phase,
    text: str = "",
    run_ms: int | None = None,
) -> list[Ping]:
    """The pings of one phase of a run of ``flow``, URLs resolved now (secrets registered for
    redaction). Uptime Kuma has no start: it is told at the end only."""
    where = f"platform.external_heartbeat.{flow}"
    pings: list[Ping] = []
    if heartbeat.healthchecks is not None:
        base = resolve_url(heartbeat.healthchecks, f"{where}.healthchecks").get_secret_value()
        pings.append(
            Ping(
                service=f"healthchecks {shown_url(heartbeat.healthchecks)}",
                method="POST",
                url=SecretStr(healthchecks_url(base, phase)),
                body=text[:SUMMARY_LIMIT],
            )
        )
    if heartbeat.uptime_kuma is not None and phase is not Phase.START:
        base = resolve_url(heartbeat.uptime_kuma, f"{where}.uptime_kuma").get_secret_value()
        pings.append(
            Ping(
                service=f"uptime-kuma {shown_url(heartbeat.uptime_kuma)}",
                method="GET",
                url=SecretStr(kuma_url(base, phase is Phase.SUCCESS, text, run_ms)),
            )
        )
    return pings


def send_pings(pings: list[Ping], timeout_s: float = 10.0) -> list[str]:
    """Send each ping (a couple of quick tries: a ping is idempotent); one masked problem line
    per ping that did not arrive."""
    from labops.http import HttpClient
    from labops.http_settings import HttpRetry
    from labops.redact import redact

    retry = HttpRetry(attempts=2, timeout_s=timeout_s, deadline_s=timeout_s)
    problems: list[str] = []
    for ping in pings:
        split = urlsplit(ping.url.get_secret_value())
        origin = f"{split.scheme}://{split.netloc}"
        path = split.path or "/"
        if split.query:
            path = f"{path}?{split.query}"
        try:
            with HttpClient(ping.service.split()[0], origin, retry=retry) as client:
                client.request(ping.method, path, content=ping.body or None, ok=(200, 201, 202))
        except Exception as exc:  # a ping never stops the run; its failure is named
            problems.append(redact(f"{ping.service}: {exc}"))
    return problems


class HealthcheckSpec(BaseModel):
    """One check as Healthchecks' Management API creates it (``POST /api/v3/checks/``):
    a cron schedule in a time zone, and a grace time in seconds."""

    name: str
    slug: str
    schedule: str
    tz: str
    grace: int
    tags: str
    desc: str
    pinged: bool = False
    """Whether the config already gives this flow a Healthchecks URL."""

    def api_body(self) -> dict[str, object]:
        """The fields Healthchecks' API takes (``unique`` on the name: creating twice updates
        nothing new)."""
        body = self.model_dump(exclude={"pinged"})
        return {**body, "unique": ["name"]}


def healthchecks_specs(config: LabopsConfig) -> list[HealthcheckSpec]:
    """A check per scheduled flow of the lab, from its schedule and the lab's time zone; the
    grace time from ``platform.external_heartbeat`` (default 60 minutes). Flows whose schedule
    is disabled run by hand only: nothing to expect, no check."""
    from labops.scope import lab_slug

    lab = config.lab.name
    slug = lab_slug(lab)
    specs = []
    for flow, schedule in sorted(config.platform.schedules.items()):
        if not schedule.enabled:
            continue
        heartbeat = config.platform.external_heartbeat.get(flow)  # type: ignore[call-overload]
        grace = heartbeat.grace_minutes if heartbeat is not None else DEFAULT_GRACE_MINUTES
        specs.append(
            HealthcheckSpec(
                name=f"labops {lab} {flow}",
                slug=f"labops-{slug}-{flow}",
                schedule=schedule.cron,
                tz=config.lab.timezone,
                grace=grace * 60,
                tags=f"labops lab:{slug}",
                desc=f"labops {flow} on {lab}: pinged at start, success and failure.",
                pinged=heartbeat is not None and heartbeat.healthchecks is not None,
            )
        )
    return specs
