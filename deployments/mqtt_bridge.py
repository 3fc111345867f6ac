"""The MQTT bridge: the lab's bus starts flows, hears every state change, and gets alerts.

- ``<run topic>/<flow>`` (e.g. ``labops/run/backups``) with a JSON object of parameters starts
  the lab's deployment of that flow (``backups/<lab>``) when ``platform.triggers`` allows it
  (:mod:`labops.triggers`); anything else is refused with one escaped warning line. Retained
  messages are ignored (a reconnect must not start runs again) and a ``request_id`` starts at
  most one run. The lab's bridges share one subscription (:func:`run_subscription`): with two
  of them on one broker each request still reaches only one.
- every state change of a flow run of the lab (Prefect events; a run is the lab's when it
  carries the tag ``lab:<lab>``) is published as JSON on ``<events topic>/<flow>/<state>``.
- a Failed, Crashed or TimedOut run of the lab notifies Telegram and MQTT once, with a link to
  the run; a run of the lab that stays Late or Pending past ``platform.late_after_minutes`` is
  reported once too. Runs of other labs sharing the Prefect server are theirs to report.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, Field

from blocks.context import LabContext
from deployments.catalog import FLOWS, load_flow
from labops.config.secrets import resolve_secret
from labops.reports import Notification, Severity
from labops.scope import deployment_name, lab_slug, lab_tag, labs_of_tags
from labops.triggers import Refused, RunRequest, parse_run_request, shown

log = logging.getLogger("labops.bridge")

ALERT_STATES = {"Failed", "Crashed", "TimedOut"}


BadRequest = Refused
"""A message on the run topic that starts nothing (logged once, never raised further)."""

SEEN_IDS = 4096
"""Request ids remembered in memory (Prefect's idempotency key covers a restarted bridge)."""


class StateEvent(BaseModel):
    """A flow-run state change, as published on MQTT."""

    flow_run_id: str
    flow_run_name: str | None = None
    flow: str | None = None
    deployment: str | None = None
    state: str
    message: str | None = None
    occurred: datetime
    url: str | None = None


def event_tags(event: Any) -> set[str]:
    """The tags of an event's flow run (and its deployment and flow), from its related
    resources (``prefect.tag.<tag>`` in the role ``tag``)."""
    return {
        str(r.get("prefect.resource.id", "")).removeprefix("prefect.tag.")
        for r in getattr(event, "related", [])
        if r.get("prefect.resource.role") == "tag"
    }


def state_event(event: Any, ui_url: str | None) -> StateEvent | None:
    """Map a Prefect ``prefect.flow-run.<State>`` event onto the bus message."""
    name = getattr(event, "event", "")
    if not name.startswith("prefect.flow-run.") or name.endswith(".heartbeat"):
        return None
    run_id = str(event.resource.get("prefect.resource.id", "")).removeprefix("prefect.flow-run.")
    related = {r.get("prefect.resource.role"): r for r in getattr(event, "related", [])}
    flow = related.get("flow")
    deployment = related.get("deployment")
    payload = getattr(event, "payload", {}) or {}
    validated = payload.get("validated_state") or {}
    return StateEvent(
        flow_run_id=run_id,
        flow_run_name=event.resource.get("prefect.resource.name"),
        flow=flow.get("prefect.resource.name") if flow else None,
        deployment=deployment.get("prefect.resource.name") if deployment else None,
        state=name.removeprefix("prefect.flow-run."),
        message=validated.get("message") or event.resource.get("prefect.state-message") or None,
        occurred=event.occurred,
        url=f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}" if ui_url else None,
    )


class Seen(BaseModel):
    keys: list[str] = Field(default_factory=list)


class AlertBook:
    """Remembers which runs were alerted, so each failure notifies exactly once.

    The memory is ``bridge-alerts.json`` in ``lab.state_dir``. A file that cannot be read (cut
    short, not JSON, the wrong shape) is reported once (a warning line and a notification), kept
    beside as ``.corrupt`` and rebuilt: an alert may then be sent twice, never not at all.
    """

    KEY = "bridge-alerts"

    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()

    @property
    def path(self) -> Path:
        return Path(self.ctx.state.directory) / f"{self.KEY}.json"

    def _load(self) -> Seen:
        try:
            return self.ctx.state.load(self.KEY, Seen) or Seen()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON, wrong shape
            self._rebuild(exc)
            return Seen()

    def _rebuild(self, exc: Exception) -> None:
        why = shown(f"{type(exc).__name__}: {exc}".splitlines()[0], 120)
        kept = self.path.with_name(self.path.name + ".corrupt")
        try:
            self.path.replace(kept)
        except OSError:
            kept = self.path
        log.warning(
            "bridge state %s unreadable (%s): rebuilt empty, kept as %s; "
            "alerts already sent may be sent again",
            self.path,
            why,
            kept.name,
        )
        note = Notification(
            title=f"{self.ctx.config.lab.name}: bridge state rebuilt",
            severity=Severity.WARNING,
            body=f"The MQTT bridge could not read {self.path} ({why}). It started a new one "
            f"(the old one is kept as {kept.name}); an alert already sent may come again.",
            topic="alerts/bridge-state",
            payload={"file": str(self.path), "kept_as": str(kept), "error": why},
        )
        try:
            self.ctx.notifier().send(note)
        except Exception as send_exc:  # the warning line above already names the problem
            log.warning("could not notify about the bridge state: %s", shown(str(send_exc)))

    def first_time(self, key: str) -> bool:
        with self.lock:
            seen = self._load()
            if key in seen.keys:
                return False
            seen.keys = [*seen.keys[-4999:], key]
            try:
                self.ctx.state.save(self.KEY, seen)
            except OSError as exc:  # alert anyway: a repeated alert beats a lost one
                log.warning("could not save the bridge state %s: %s", self.path, exc)
            return True


def run_subscription(run_topic: str, lab: str) -> str:
    """The bridge's topic filter: ``<run_topic>/+`` as an MQTT shared subscription of the group
    ``labops-bridge-<lab>`` (``$share/<group>/<filter>``, MQTT 5 and Mosquitto's 3.1.1 too), so
    the broker delivers each run request to exactly one of the lab's bridges (a retained one
    may still be replayed on subscribing: it is refused as before)."""
    return f"$share/labops-bridge-{lab_slug(lab)}/{run_topic.rstrip('/')}/+"


class Bridge:
    """Runs until stopped: MQTT in, Prefect events out, alerts once."""

    def __init__(self, ctx: LabContext) -> None:
        if ctx.config.systems.mqtt is None:
            from labops.errors import ConfigError

            raise ConfigError("systems.mqtt: the MQTT bridge needs an MQTT broker")
        self.ctx = ctx
        self.policy = ctx.config.platform
        self.alerts = AlertBook(ctx)
        self.stopping = threading.Event()
        self.started: list[str] = []
        self.seen_ids: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Prefect's event subscriber replays the minute before it connects; state changes from
        # before the bridge started were published by its predecessor (or are stale): skip them.
        self.since = datetime.now(UTC)
        # Prefect's settings live in context variables, which threads (paho's network loop, the
        # event stream) do not inherit: every callback runs in a copy of the creator's context.
        self._context = contextvars.copy_context()
        # Two bridges of one lab on one broker (a second host, a restart overlapping the old
        # process) must not both take a request: a shared subscription hands each message to
        # one member of the group, whatever the request carries (a request_id or not).
        self.subscription = run_subscription(self.policy.mqtt_run_topic, ctx.config.lab.name)
        self.subscribed = threading.Event()
        self.client = self._mqtt_client()
        # Import every flow now: payloads are then checked without importing on the MQTT thread,
        # and Prefect's one-time logging setup happens before the bridge logs anything.
        for name in FLOWS:
            try:
                load_flow(name)
            except (ImportError, AttributeError) as exc:
                log.warning("flow %s unavailable: %s", name, exc)

    def _in_context(self, fn: Any, *args: Any) -> Any:
        return self._context.copy().run(fn, *args)

    # -- MQTT ------------------------------------------------------------------------------

    def _mqtt_client(self) -> mqtt.Client:
        s = self.ctx.config.systems.mqtt
        assert s is not None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"labops-bridge-{uuid.uuid4().hex[:8]}"
        )
        if s.username:
            pw = resolve_secret(s.password, "systems.mqtt.password") if s.password else None
            client.username_pw_set(s.username, pw.get_secret_value() if pw else None)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_bundle) if s.ca_bundle else None, cert_reqs=ssl.CERT_REQUIRED
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker refused the bridge: %s", reason)
            return
        # Subscriptions do not survive a reconnect: renew them every time.
        client.subscribe(self.subscription, qos=1)
        log.info(
            "bridge connected; listening on %s/+ (shared by the lab's bridges: each request "
            "reaches one of them)",
            self.policy.mqtt_run_topic,
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: Any, reasons: Any, props: Any
    ) -> None:
        if any(getattr(r, "is_failure", False) for r in reasons):
            log.warning("MQTT broker refused the subscription %s: %s", self.subscription, reasons)
            return
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._in_context(self._handle_message, msg)

    def _handle_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            # A retained message is an old one the broker replays on every (re)subscribe.
            log.warning(
                "refused MQTT message on %s: retained (run requests are never)", shown(msg.topic)
            )
            return
        try:
            request = parse_run_request(
                self.policy.mqtt_run_topic,
                msg.topic,
                bytes(msg.payload),
                self.policy.triggers,
            )
        except Refused as exc:
            log.warning("refused MQTT message: %s", exc)
            return
        if request.request_id is not None:
            earlier = self.seen_ids.get((request.flow, request.request_id))
            if earlier is not None:
                log.warning(
                    "refused MQTT message: %s request_id %s already started flow run %s",
                    request.flow,
                    request.request_id,
                    earlier,
                )
                return
        try:
            run_id = self.start(request)
        except Exception as exc:
            log.error("could not start %s: %s", request.flow, shown(str(exc), 200))
            return
        if request.request_id is not None:
            self.seen_ids[(request.flow, request.request_id)] = run_id
            while len(self.seen_ids) > SEEN_IDS:
                self.seen_ids.popitem(last=False)
        if run_id in self.started:
            return  # Prefect's idempotency key found the run of an earlier delivery
        self.started.append(run_id)
        self.publish(
            "bridge/started",
            {
                "flow": request.flow,
                "flow_run_id": run_id,
                "parameters": request.parameters,
                "request_id": request.request_id,
            },
        )

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        full = f"{self.policy.mqtt_events_topic.rstrip('/')}/{topic}"
        self.client.publish(full, json.dumps(payload, default=str), qos=1, retain=retain)

    # -- Prefect ---------------------------------------------------------------------------

    def start(self, request: RunRequest) -> str:
        """Create a flow run of the lab's deployment of the flow (``<flow>/<lab>``)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        name = f"{request.flow}/{deployment_name(self.ctx.config.lab.name)}"
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise LookupError(f"no deployment {name}: run `labops deploy`") from None
            key = None
            if request.request_id is not None:
                # the same id returns the same run, also after a restart of the bridge
                key = f"mqtt:{self.ctx.config.lab.name}:{request.flow}:{request.request_id}"
            # the server adds the deployment's tags (lab:<lab>) to the run's
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters=request.parameters, tags=["mqtt"], idempotency_key=key
            )
        log.info("started %s as flow run %s", request.flow, run.id)
        return str(run.id)

    def is_mine(self, tags: set[str] | list[str]) -> bool:
        """Whether a run with these tags is one of this lab's (tag ``lab:<lab>``)."""
        return lab_slug(self.ctx.config.lab.name) in labs_of_tags(tags)

    def handle_event(self, event: Any) -> None:
        change = state_event(event, self.ctx.ui_url())
        if change is None or change.occurred < self.since or not self.is_mine(event_tags(event)):
            return
        flow = change.flow or "unknown"
        self.publish(f"{flow}/{change.state.lower()}", change.model_dump(mode="json"))
        if change.state in ALERT_STATES and self.alerts.first_time(f"{change.flow_run_id}"):
            self.alert(change)

    def alert(self, change: StateEvent) -> None:
        note = Notification(
            title=f"{self.ctx.config.lab.name}: {change.flow} {change.state.lower()}",
            severity=Severity.CRITICAL,
            body=f"Flow run {change.flow_run_name or change.flow_run_id} ended "
            f"{change.state}: {change.message or 'no message'}",
            topic="alerts/flow-run",
            payload=change.model_dump(mode="json"),
            link=change.url,
        )
        delivery = self.ctx.notifier(change.flow, note.severity).send(note)
        log.warning("alert for %s: %s", change.flow_run_id, delivery.detail)

    async def _events(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]))
        while not self.stopping.is_set():
            try:
                async with get_events_subscriber(filter=event_filter) as events:
                    async for event in events:
                        self.handle_event(event)
                        if self.stopping.is_set():
                            return
            except Exception as exc:  # server restarts: reconnect
                log.warning("event stream lost (%s); reconnecting", exc)
                await asyncio.sleep(2)

    def check_late_runs(self) -> list[str]:
        """Alert once for runs Late or Pending past the limit; return their ids."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterTags,
        )

        limit = timedelta(minutes=self.policy.late_after_minutes)
        now = datetime.now(UTC)
        late: list[str] = []
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late", "Pending"])),
                    tags=FlowRunFilterTags(all_=[lab_tag(self.ctx.config.lab.name)]),
                ),
                limit=200,
            )
        for run in runs:
            since = run.expected_start_time or run.created
            if since is None or now - since < limit:
                continue
            late.append(str(run.id))
            minutes = (now - since).total_seconds() // 60
            if self.alerts.first_time(f"late:{run.id}"):
                state = run.state.name if run.state else "Late"
                self.alert(
                    StateEvent(
                        flow_run_id=str(run.id),
                        flow_run_name=run.name,
                        state=state,
                        message=f"still {state} after {minutes:.0f} min",
                        occurred=now,
                        url=self.ctx.flow_run_url(run.id),
                    )
                )
        return late

    def run(self, late_check_every_s: float = 60.0) -> None:
        """Serve until ``stop()``; reconnects to MQTT and to the event stream by itself."""
        s = self.ctx.config.systems.mqtt
        assert s is not None
        self.client.connect_async(s.host, s.port, keepalive=30)
        self.client.loop_start()
        thread = threading.Thread(
            target=lambda: self._in_context(asyncio.run, self._events()),
            daemon=True,
            name="labops-bridge-events",
        )
        thread.start()
        next_check = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() >= next_check:
                    try:
                        self.check_late_runs()
                    except Exception as exc:
                        log.warning("late-run check failed: %s", exc)
                    next_check = time.monotonic() + late_check_every_s
                self.stopping.wait(0.5)
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def stop(self) -> None:
        self.stopping.set()


def main(config: str | None = None) -> None:
    """Entry point of ``labops bridge`` and of the systemd unit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call drowns the log
    Bridge(LabContext.load(config)).run()


__all__ = ["Bridge", "RunRequest", "StateEvent", "main", "parse_run_request", "state_event"]
