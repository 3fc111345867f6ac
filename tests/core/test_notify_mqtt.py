"""MqttNotifier against the machine's Mosquitto, received by a real subscriber."""

from __future__ import annotations

import time

from labops.notify.mqtt import MqttNotifier, topic_for
from labops.reports import Notification, Severity
from tests.fixtures.mqtt import MqttBroker
from tests.fixtures.sshd import free_port


def test_notification_is_published_as_json(mqtt: MqttBroker) -> None:
    sub = mqtt.subscribe()
    note = Notification(
        title="Backups: 2 failed",
        severity=Severity.CRITICAL,
        body="guest 101 (dns): job errors",
        topic="backups/report",
        payload={"failed": 2, "guests": [101, 102]},
        link="http://127.0.0.1:4200/runs/flow-run/1",
    )
    delivery = MqttNotifier(mqtt.settings()).send(note)
    assert delivery.ok, delivery.detail
    (msg,) = sub.wait_for(1)
    assert msg.topic == f"{mqtt.prefix}/backups/report"
    assert msg.qos == 1  # QoS 1 from the settings' default
    assert msg.json() == {
        "failed": 2,
        "guests": [101, 102],
        "title": "Backups: 2 failed",
        "severity": "critical",
        "body": "guest 101 (dns): job errors",
        "link": "http://127.0.0.1:4200/runs/flow-run/1",
    }


def test_retained_message_reaches_a_late_subscriber(mqtt: MqttBroker) -> None:
    notifier = MqttNotifier(mqtt.settings(qos=0), retain=True)
    assert notifier.send(Notification(title="heartbeat", topic="state")).ok
    sub = mqtt.subscribe(f"{mqtt.prefix}/state")
    (msg,) = sub.wait_for(1)
    assert msg.retain and msg.json()["title"] == "heartbeat"
    # Clear the retained message so the broker does not keep it.
    notifier.publish(f"{mqtt.prefix}/state", "", retain=True)


def test_broker_down_is_a_failed_delivery_quickly(mqtt: MqttBroker) -> None:
    settings = mqtt.settings(port=free_port())
    started = time.monotonic()
    delivery = MqttNotifier(settings, timeout_s=2).send(Notification(title="x"))
    assert not delivery.ok
    assert f"127.0.0.1:{settings.port}" in delivery.detail
    assert time.monotonic() - started < 1


def test_silent_broker_times_out(mqtt: MqttBroker) -> None:
    import socket

    with socket.socket() as listener:  # accepts TCP, never answers CONNECT
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        settings = mqtt.settings(port=listener.getsockname()[1])
        started = time.monotonic()
        delivery = MqttNotifier(settings, timeout_s=0.5).send(Notification(title="x"))
    assert not delivery.ok
    assert "no answer" in delivery.detail
    assert time.monotonic() - started < 2


def test_topic_join() -> None:
    assert topic_for("labops/", "/backups/report/") == "labops/backups/report"
    assert topic_for("labops", "") == "labops/notifications"
