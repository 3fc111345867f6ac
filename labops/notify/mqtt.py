"""MQTT notifier: one JSON message per notification under ``<topic_prefix>/<topic>``.

Connects per notification (flows send a handful), waits for the broker's acknowledgement at the
configured QoS, and gives up after ``timeout_s``: a broker that is down yields a failed Delivery,
never an exception or a hang.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from labops.notify.base import Delivery, Notifier
from labops.notify.settings import MqttSettings
from labops.redact import redact
from labops.reports import Notification
from labops.scope import lab_slug


def topic_for(prefix: str, topic: str, lab: str | None = None) -> str:
    """``<prefix>/<lab>/<topic>`` (the lab slugged as one topic level; no lab: ``<prefix>/
    <topic>``) without doubled or dangling slashes (empty topic: notifications)."""
    scope = f"{lab_slug(lab)}/" if lab is not None else ""
    return f"{prefix.strip('/')}/{scope}{topic.strip('/') or 'notifications'}"


def message_payload(notification: Notification) -> dict[str, Any]:
    """The notification's JSON payload plus its title, severity, body and link."""
    return {
        **notification.payload,
        "title": notification.title,
        "severity": notification.severity.value,
        "body": notification.body,
        "link": notification.link,
    }


class MqttNotifier(Notifier):
    """Publishes notifications to the lab's MQTT broker (Home Assistant, Node-RED listen there)."""

    channel = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        password: SecretStr | None = None,
        *,
        retain: bool = False,
        timeout_s: float = 5.0,
        lab: str | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self.retain = retain
        self.timeout_s = timeout_s
        self.lab = lab

    def topic(self, suffix: str) -> str:
        """The full topic of ``suffix``: under the prefix, and under the lab when one is set."""
        return topic_for(self.settings.topic_prefix, suffix, self.lab)

    def deliver(self, notification: Notification) -> Delivery:
        topic = self.topic(notification.topic)
        body = json.dumps(message_payload(notification), default=str)
        try:
            self.publish(topic, body)
        except Exception as exc:  # never raise from a notifier
            where = f"{self.settings.host}:{self.settings.port}"
            return Delivery(channel=self.channel, ok=False, detail=redact(f"{where}: {exc}"))
        return Delivery(channel=self.channel, ok=True, detail=topic)

    def publish(self, topic: str, payload: str, retain: bool | None = None) -> None:
        """Publish one message and wait for the broker to take it; raise on any problem."""
        s = self.settings
        deadline = time.monotonic() + self.timeout_s
        state: dict[str, Any] = {"connected": False, "refused": None}

        def on_connect(
            client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
        ) -> None:
            if reason.is_failure:
                state["refused"] = str(reason)
            else:
                state["connected"] = True

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"labops-{uuid.uuid4().hex[:12]}",
            reconnect_on_failure=False,
        )
        client.on_connect = on_connect
        client.connect_timeout = self.timeout_s
        if s.username:
            pw = self._password.get_secret_value() if self._password else None
            client.username_pw_set(s.username, pw)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_bundle) if s.ca_bundle else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        try:
            client.connect(s.host, s.port, keepalive=max(int(self.timeout_s) * 2, 10))
            self._loop_until(client, deadline, lambda: state["connected"] or state["refused"])
            if state["refused"]:
                raise ConnectionError(f"broker refused the connection: {state['refused']}")
            if not state["connected"]:
                raise TimeoutError(f"no answer from the broker within {self.timeout_s:g}s")
            info = client.publish(
                topic, payload, qos=s.qos, retain=self.retain if retain is None else retain
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
            self._loop_until(client, deadline, info.is_published)
            if not info.is_published():
                raise TimeoutError(f"broker did not acknowledge within {self.timeout_s:g}s")
        finally:
            try:
                client.disconnect()
                client.loop(timeout=0.01)
            except Exception:  # already gone
                pass

    @staticmethod
    def _loop_until(client: mqtt.Client, deadline: float, done: Any) -> None:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            rc = client.loop(timeout=min(remaining, 0.2))
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"connection lost: {mqtt.error_string(rc)}")
